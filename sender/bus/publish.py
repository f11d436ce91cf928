"""Publishing events into the stream, each publish settled by the server's own answer, and a report of
what became of every event: stored, stored before (a duplicate id), refused, never sent, or unknown (handed
to the connection but not confirmed in time: it may or may not be stored)."""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hookline.sender.bus.connection import BusUnavailable, PerConnection, StoreRefused
from hookline.sender.bus.layout import STREAM
from hookline.sender.model.events import Event
from hookline.sender.model.subjects import subject_for

MSG_ID_HEADER = "Nats-Msg-Id"


# Room kept in every NATS message for what travels beside an event: the Nats-Msg-Id header when it is
# published, and the dead-letter record around it (reason, times, subject, capped last error).
EVENT_HEADROOM_BYTES = 8 * 1024

# nats-py raises these before a message enters its outgoing buffer: the message was never sent.
_RAISED_BEFORE_BUFFERING = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
)


def max_event_bytes(max_payload: int) -> int:
    """The largest encoded event that fits through the bus and, later, into its dead letter."""
    return max(1024, int(max_payload) - EVENT_HEADROOM_BYTES)


class NotStored(BusUnavailable):
    """The server answered, and the answer says the event is not in the events stream (no stream took
    the subject, or another stream did)."""


class Fate(enum.Enum):
    """What became of one published event, as far as the server said within the timeout."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # its id was stored before, within the stream's duplicate window
    REFUSED = "refused"  # the server answered with an error (stream full, ...): not stored
    NOT_SENT = "not_sent"  # never handed to the connection: not stored
    UNKNOWN = "unknown"  # handed to the connection, no answer in time: it may be stored, now or later

    @property
    def stored(self) -> bool | None:
        """True when the stream holds it, False when it does not, None when nobody can tell."""
        if self in (Fate.STORED, Fate.DUPLICATE):
            return True
        return None if self is Fate.UNKNOWN else False


@dataclass(frozen=True)
class PublishReport:
    """Each event's fate, in the order published, and why not all were stored (None when all were)."""

    fates: tuple[Fate, ...]
    problem: BusUnavailable | None

    @property
    def all_stored(self) -> bool:
        return all(fate.stored for fate in self.fates)


class Publisher:
    """Asynchronous JetStream publishes on one connection, each settled by the server's answer.

    nats-py's `publish_async` leaves the future pending when the server answers with an error (a
    full stream answers 503 "maximum bytes exceeded"), so a producer would wait the whole timeout.
    Here every reply, success or error, settles its future: a refused publish is known at once.
    """

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[dict[str, object]]] = {}
        self._streams: dict[str, str] = {}  # the stream a publish goes to, when not the events stream
        self._next = 0
        self._ready = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe to the replies (once per connection), before anything is handed over."""
        async with self._ready:
            if not self._prefix:
                prefix = self.nc.new_inbox()
                await self.nc.subscribe(f"{prefix}.*", cb=self._on_reply)
                self._prefix = prefix

    async def publish(
        self,
        subject: str,
        data: bytes,
        msg_id: str | None,
        headers: dict[str, str] | None = None,
        stream: str = STREAM,
    ) -> asyncio.Future[dict[str, object]]:
        """Hand one publish to the connection; the future settles with the server's answer. `msg_id`
        None: no Nats-Msg-Id (nothing for the stream's duplicate window to remember)."""
        if not self._prefix:
            await self.start()
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        if stream != STREAM:  # only then a second entry to drop (the events' publishes stay as they were)
            self._streams[token] = stream
            future.add_done_callback(lambda _: self._streams.pop(token, None))
        try:
            await self.nc.publish(
                subject,
                data,
                reply=f"{self._prefix}.{token}",
                headers=_headers(msg_id, headers),
            )
        except BaseException:
            future.cancel()
            raise
        return future

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        future = self._futures.get(token)
        if future is None or future.done():
            return
        status = msg.headers.get("Status") if msg.headers else None
        future_result = publish_reply(msg.data, status, self._streams.get(token, STREAM))
        if isinstance(future_result, BusUnavailable):
            future.set_exception(future_result)
        else:
            future.set_result(future_result)


def _headers(msg_id: str | None, more: dict[str, str] | None) -> dict[str, str] | None:
    if msg_id is None:
        return more
    return {MSG_ID_HEADER: msg_id, **more} if more else {MSG_ID_HEADER: msg_id}


def publish_reply(
    data: bytes, status: str | None, stream: str = STREAM
) -> dict[str, object] | BusUnavailable:
    """What the server's answer to a publish into `stream` says (pure): the ack, or the error to raise."""
    if status == "503":
        return NotStored(
            f"no JetStream stream answered (is JetStream enabled and the stream {stream} there?)"
        )
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
    if reply.get("stream") != stream:
        return NotStored(f"events were stored in stream {reply.get('stream')!r}, expected {stream}")
    return reply


def fate_of(future: asyncio.Future[dict[str, object]] | None) -> tuple[Fate, BusUnavailable | None]:
    """One event's fate from its publish future (None: never handed over), and the error it carries."""
    if future is None:
        return Fate.NOT_SENT, None
    if not future.done() or future.cancelled():
        return Fate.UNKNOWN, None
    error = future.exception()
    if error is None:
        return (Fate.DUPLICATE if future.result().get("duplicate") else Fate.STORED), None
    if isinstance(error, StoreRefused | NotStored):
        return Fate.REFUSED, error
    if isinstance(error, BusUnavailable):
        return Fate.UNKNOWN, error  # an answer nobody could read: the event may be stored
    return Fate.UNKNOWN, BusUnavailable(f"publishing to NATS failed: {error or type(error).__name__}")


# The one publisher of a connection (made on first use).
publisher_for = PerConnection(Publisher)


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
    come back in time, StoreRefused if the stream refused an event. Some events may then be stored and
    others not (`publish_reporting` says which); the caller retries the whole batch and the stream's
    duplicate window (keyed on the event id) turns the repeats into no-ops.
    """
    del js  # the publishes go through the connection's Publisher (see its docstring)
    payloads = list(encoded) if encoded is not None else [event.to_bytes() for event in events]
    items = [(subject_for(e), e.id, data) for e, data in zip(events, payloads, strict=True)]
    return await publish_encoded(nc, items, ack_timeout=ack_timeout)


async def publish_encoded(
    nc: NATS, items: Sequence[tuple[str, str, bytes]], *, ack_timeout: float = 5.0
) -> list[bool]:
    """`publish_events` for events already encoded: (subject, event id, bytes) each."""
    report = await publish_reporting(nc, items, ack_timeout=ack_timeout)
    if report.problem is not None:
        raise report.problem
    return [fate is Fate.DUPLICATE for fate in report.fates]


async def publish_reporting(
    nc: NATS,
    items: Sequence[tuple[str, str, bytes]],
    *,
    ack_timeout: float = 5.0,
    headers: Sequence[dict[str, str] | None] | None = None,
) -> PublishReport:
    """Publish encoded events, (subject, event id, bytes) each, and say what became of every one.
    `headers`: more headers per item (a bundle's, ingest/bundled.py), beside its Nats-Msg-Id.

    Never raises BusUnavailable: it waits (at most `ack_timeout` in all) for the server's answer to
    every event it handed to the connection, so that a refusal of one event (a stream filling up
    part-way) does not leave the others' fate untold. Nothing is handed over while the connection is
    down (nats-py would buffer it and publish it after we answered); an event handed over that got no
    answer in time is UNKNOWN: it may be stored (an answer lost with the connection, or the buffered
    message sent after a reconnect).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ack_timeout
    publisher = publisher_for(nc)
    futures: list[asyncio.Future[dict[str, object]] | None] = [None] * len(items)
    interrupted: int | None = None  # the event being handed over when that was cut short
    problem: BusUnavailable | None = None
    try:
        async with asyncio.timeout_at(deadline):
            if nc.is_connected:
                await publisher.start()
            for index, (subject, msg_id, data) in enumerate(items):
                if not nc.is_connected:
                    # Refuse rather than queue into the reconnect buffer, which would publish after we
                    # answered. (No await between this check and nats-py buffering the message.)
                    problem = BusUnavailable("not connected to NATS")
                    break
                interrupted = index
                futures[index] = await publisher.publish(subject, data, msg_id, headers and headers[index])
                interrupted = None
            waiting = [future for future in futures if future is not None]
            if waiting:
                await asyncio.wait(waiting)
    except TimeoutError:
        problem = BusUnavailable(f"NATS did not confirm the events within {ack_timeout:g}s")
    except _RAISED_BEFORE_BUFFERING as exc:
        interrupted = None  # the failing publish never entered the buffer
        problem = BusUnavailable(f"publishing to NATS failed: {exc or type(exc).__name__}")
    except nats.errors.Error as exc:
        problem = BusUnavailable(f"publishing to NATS failed: {exc or type(exc).__name__}")
    fates: list[Fate] = []
    first_error: BusUnavailable | None = None
    for index, future in enumerate(futures):
        fate, error = fate_of(future)
        if index == interrupted:
            fate = Fate.UNKNOWN  # cut short while nats-py was buffering it: it may go out later
        fates.append(fate)
        if first_error is None and error is not None:
            first_error = error
        if future is not None and not future.done():
            future.cancel()  # a late answer is not waited for (the event stays UNKNOWN)
    if first_error is not None:
        problem = first_error  # a refusal says more than the timeout that may follow it
    if problem is None and not all(fate.stored for fate in fates):
        problem = BusUnavailable("NATS did not confirm every event")
    return PublishReport(tuple(fates), problem)
