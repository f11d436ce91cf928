"""The outbox of one NATS connection: acks and attempt records, which nobody waits for, gathered for a
moment and written to the socket together.

nats-py writes whatever is pending each time its flusher is woken, and every publish wakes it: one
delivery (its ack, its attempt record) cost a socket write in the sender (a fifth of its samples in
bench/profile_sender.py) and a read in nats-server (a third of its CPU per delivery: 33 -> 23 us).
The outbox holds these writes for `OUTBOX_LINGER_SECONDS` after the first one, then hands them to the
connection as one command and wakes the flusher once; everything a caller waits for (pull requests,
JetStream API calls, publishes settled by the server) still goes out at once.

The cost is that a 2xx's ack reaches the server up to one linger later. A crash in that moment leaves
the event unacknowledged and JetStream hands it out again after ack_wait: the receiver gets it twice,
with the same id, as it would after a crash just before the ack (at-least-once, README). An engine
that stops writes what is held (`flush`) before its process closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.protocol.command import pub_cmd

from hookline.sender.bus.connection import PerConnection

log = logging.getLogger(__name__)

__all__ = ["OUTBOX_LINGER_SECONDS", "Outbox", "outbox_of"]

# How long the first write waits for others: at 10,000 deliveries/s about ten go out together.
OUTBOX_LINGER_SECONDS = 0.001

# A JetStream ack subject as the server sends it (no spaces or line breaks: safe to write as it is).
_PLAIN_ACK = re.compile(r"\$JS\.ACK\.[!-~]+")
_ACK_SUFFIX = b" 0\r\n\r\n"
# A subject hookline publishes records to (same rule: printable, no spaces).
_PLAIN_SUBJECT = re.compile(r"[!-~]+")


def _internals_present(nc: NATS) -> bool:
    """Whether nats-py still has what the outbox writes through (its pending buffer and flusher); a
    version without them gets plain `ack()` and `publish()` calls instead."""
    return all(hasattr(nc, name) for name in ("_send_command", "_flush_pending", "_flush_queue", "stats"))


class Outbox:
    """Acks and fire-and-forget publishes of one connection, written together (see the module)."""

    def __init__(self, nc: NATS, linger: float = OUTBOX_LINGER_SECONDS) -> None:
        self.nc = nc
        self.linger = linger
        self._held: list[bytes] = []
        self._count = 0  # messages in `_held`
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._direct = not _internals_present(nc)

    @property
    def held(self) -> int:
        """Acks and records waiting to be written."""
        return self._count

    async def ack(self, msgs: Sequence[Msg]) -> None:
        """Acknowledge JetStream messages of this connection (each exactly as `ack()` would: an empty
        PUB to its reply subject). A message already acked is left alone; one with a reply that is
        not a plain JetStream ack subject is acked the usual way. Raises what `ack()` raises when
        the connection is closed."""
        nc = self.nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        for msg in msgs:
            if type(msg) is not Msg:  # an event of a bundle (bundles.py): its bundle acks once all are
                await msg.ack()
                continue
            if msg._ackd:
                continue
            if self._direct or msg._client is not nc or not _PLAIN_ACK.fullmatch(msg.reply or ""):
                await msg.ack()
                continue
            self._held.append(b"PUB " + msg.reply.encode() + _ACK_SUFFIX)
            msg._ackd = True
            self._count += 1
        self._arm()

    async def publish(self, subject: str, payload: bytes) -> None:
        """A core publish nobody waits for (an attempt record)."""
        nc = self.nc
        if self._direct or not _PLAIN_SUBJECT.fullmatch(subject) or len(payload) > nc.max_payload:
            await nc.publish(subject, payload)  # nats-py's own checks and errors
            return
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        self._held.append(pub_cmd(subject, "", payload))
        self._count += 1
        self._arm()

    async def flush(self) -> None:
        """Hand what is held to the connection now and wake its flusher."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, count = self._held, self._count
        if not held:
            return
        self._held, self._count = [], 0
        nc = self.nc
        if nc.is_closed:  # JetStream hands the events out again after ack_wait: nothing is lost
            log.info("NATS connection closed with %d acks or records not written", count)
            return
        await nc._send_command(b"".join(held))
        nc.stats["out_msgs"] += count
        await nc._flush_pending()

    def _arm(self) -> None:
        if self._held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write())
        else:  # the previous write still waits (a full buffer): look again after another linger
            self._arm()

    async def _write(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # what is not written is handed out again after ack_wait
            log.warning("NATS acks or records not written: %s", exc or type(exc).__name__)


# The one outbox of a connection (made on first use).
outbox_of = PerConnection(Outbox)
