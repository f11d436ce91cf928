"""Publishing events into the stream: each batch settled by the server's answers, a refused publish
failing at once (StoreRefused), a missing confirmation as BusUnavailable."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Sequence

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hookline.sender.bus.connection import BusUnavailable, StoreRefused
from hookline.sender.bus.layout import STREAM
from hookline.sender.model.events import Event
from hookline.sender.model.subjects import subject_for

MSG_ID_HEADER = "Nats-Msg-Id"


# Room kept in every NATS message for what travels beside an event: the Nats-Msg-Id header when it is
# published, and the dead-letter record around it (reason, times, subject, capped last error).
EVENT_HEADROOM_BYTES = 8 * 1024


def max_event_bytes(max_payload: int) -> int:
    """The largest encoded event that fits through the bus and, later, into its dead letter."""
    return max(1024, int(max_payload) - EVENT_HEADROOM_BYTES)


class Publisher:
    """Asynchronous JetStream publishes on one connection, each settled by the server's answer.

    nats-py's `publish_async` leaves the future pending when the server answers with an error (a
    full stream answers 503 "maximum bytes exceeded"), so a producer would wait the whole timeout.
    Here every reply, success or error, settles its future: a refused publish fails at once.
    """

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[dict[str, object]]] = {}
        self._next = 0
        self._ready = asyncio.Lock()

    async def _start(self) -> None:
        async with self._ready:
            if not self._prefix:
                prefix = self.nc.new_inbox()
                await self.nc.subscribe(f"{prefix}.*", cb=self._on_reply)
                self._prefix = prefix

    async def publish(self, subject: str, data: bytes, msg_id: str) -> asyncio.Future[dict[str, object]]:
        if not self._prefix:
            await self._start()
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        await self.nc.publish(subject, data, reply=f"{self._prefix}.{token}", headers={MSG_ID_HEADER: msg_id})
        return future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        future_result = publish_reply(msg.data, msg.headers.get("Status") if msg.headers else None)
        if isinstance(future_result, BusUnavailable):
            future.set_exception(future_result)
        else:
            future.set_result(future_result)


def publish_reply(data: bytes, status: str | None) -> dict[str, object] | BusUnavailable:
    """What the server's answer to a publish says (pure): the ack, or the error to raise."""
    if status == "503":
        return BusUnavailable("no JetStream stream answered (is JetStream enabled and the stream there?)")
    try:
        reply = json.loads(data)
    except ValueError:
        return BusUnavailable("unreadable answer from JetStream")
    if not isinstance(reply, dict):
        return BusUnavailable("unreadable answer from JetStream")
    error = reply.get("error")
    if isinstance(error, dict):
        code = error.get("err_code")
        return StoreRefused(
            f"JetStream refused the events: {error.get('description') or error}",
            code if isinstance(code, int) else None,
        )
    return reply


_publishers: weakref.WeakKeyDictionary[NATS, Publisher] = weakref.WeakKeyDictionary()


def publisher_for(nc: NATS) -> Publisher:
    publisher = _publishers.get(nc)
    if publisher is None:
        publisher = _publishers[nc] = Publisher(nc)
    return publisher


async def publish_events(
    nc: NATS,
    js: JetStreamContext,
    events: Sequence[Event],
    *,
    ack_timeout: float = 5.0,
    encoded: Sequence[bytes] | None = None,
) -> list[bool]:
    """Publish a batch concurrently and wait for every ack; returns, per event, whether it was a duplicate.

    `encoded` (the events' `to_bytes()`, in order) lets the caller encode and check the whole batch
    before anything is published. Raises BusUnavailable if NATS is disconnected or any ack does not
    come back in time, StoreRefused (at once) if the stream refused an event. Some events may then
    be stored and others not; the caller retries the whole batch and the stream's duplicate window
    (keyed on the event id) turns the repeats into no-ops.
    """
    del js  # the publishes go through the connection's Publisher (see its docstring)
    payloads = list(encoded) if encoded is not None else [event.to_bytes() for event in events]
    items = [(subject_for(e), e.id, data) for e, data in zip(events, payloads, strict=True)]
    return await publish_encoded(nc, items, ack_timeout=ack_timeout)


async def publish_encoded(
    nc: NATS, items: Sequence[tuple[str, str, bytes]], *, ack_timeout: float = 5.0
) -> list[bool]:
    """`publish_events` for events already encoded: (subject, event id, bytes) each."""
    if not nc.is_connected:
        # Refuse rather than queue into the reconnect buffer, which would publish after we said 503.
        raise BusUnavailable("not connected to NATS")
    publisher = publisher_for(nc)
    futures: list[asyncio.Future[dict[str, object]]] = []
    try:
        for subject, msg_id, data in items:
            futures.append(await publisher.publish(subject, data, msg_id))
        async with asyncio.timeout(ack_timeout):
            acks = await asyncio.gather(*futures)
    except TimeoutError as exc:
        raise BusUnavailable(f"NATS did not confirm the events within {ack_timeout:g}s") from exc
    except nats.errors.Error as exc:
        raise BusUnavailable(f"publishing to NATS failed: {exc or type(exc).__name__}") from exc
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: one failure must not log "never retrieved" for others
    for ack in acks:
        if ack.get("stream") != STREAM:
            raise BusUnavailable(f"events were stored in stream {ack.get('stream')!r}, expected {STREAM}")
    return [bool(ack.get("duplicate")) for ack in acks]
