"""The pull feed: messages of one Webhook's durable consumer, handed to its workers as they arrive."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hookline.sender.bus.bundles import BundleBook, BundleMember
from hookline.sender.bus.connection import DRAIN_TIMEOUT_SECONDS, BusUnavailable
from hookline.sender.bus.layout import STREAM
from hookline.sender.bus.replymeta import ReplyMetadata, message_stored_at
from hookline.sender.model.bundles import BUNDLE_HEADER, BundleError, bundle_size

log = logging.getLogger(__name__)


def stored_at(msg: Msg | BundleMember) -> float:
    """When the stream stored `msg` (a bundle's member: its bundle's message), in Unix seconds."""
    return msg.bundle.stored_at if type(msg) is BundleMember else message_stored_at(msg)


class ArrivalQueue(asyncio.Queue["Msg | None"]):
    """The feed's queue (first in, first out) that also knows since when each message waits in it, so
    that messages read ahead of the workers can be reported in progress before JetStream's ack_wait.
    asyncio.Queue's storage hooks (`_init`, `_put`, `_get`) are the ones its own variants override."""

    def _init(self, maxsize: int) -> None:
        self._queue: collections.deque[list] = collections.deque()  # [since, message or None]

    def _put(self, item: Msg | None) -> None:
        self._queue.append([time.monotonic(), item])

    def _get(self) -> Msg | None:
        return self._queue.popleft()[1]

    def waiting(self, longer_than: float) -> list[Msg]:
        """Messages waiting longer than `longer_than` seconds (since they came or were last returned
        here); their clocks restart now."""
        now = time.monotonic()
        due = []
        for entry in self._queue:
            if entry[1] is not None and now - entry[0] > longer_than:
                entry[0] = now
                due.append(entry[1])
        return due


class _HandOff(asyncio.Queue[Msg]):
    """Put in place of the inbox subscription's pending queue in nats-py, so that its reader hands each
    message straight to the feed, instead of queueing it for a callback task that would then put it on
    the feed's queue: one task step, one coroutine and one queue less per message (issue 22, the
    per-message cost of a batched sender). It stays empty, so nats-py's drain finds nothing pending;
    any other Queue method nats-py calls on it works as on an empty queue. It never raises: this runs in
    nats-py's reader, whose loop ends on an unexpected error (the connection would stop reading)."""

    def __init__(self, arrived: Callable[[Msg], None]) -> None:
        super().__init__()
        self._arrived = arrived

    def put_nowait(self, item: Msg) -> None:
        try:
            self._arrived(item)
        except Exception:  # as nats-py does for a callback that raises: logged, the reader goes on
            log.exception("a message for a pull inbox could not be taken (%s)", item.subject)


class MessageFeed:
    """A continuous pull from one durable consumer: messages are handed over as they arrive.

    nats-py's `fetch(batch)` waits for a whole batch once it has to linger, which stalls deliveries
    at low rates. This keeps pull requests outstanding for up to `capacity` messages (the Webhook's
    maxInFlight), puts each message on `queue` the moment it arrives, and asks for more once
    half of the capacity is free again (`release` after each message). Status replies tell it when
    requests expire; a reconnect or missing heartbeats make it forget its requests and ask again
    (a message sent to a forgotten request is redelivered by JetStream after ack_wait, never lost).
    """

    def __init__(
        self,
        nc: NATS,
        consumer: str,
        capacity: int,
        *,
        stream: str = STREAM,
        expires: float = 30.0,
        heartbeat: float = 5.0,
        on_error: Callable[[str, str], None] | None = None,
        keep_after: float = 10.0,
        bundles: BundleBook | None = None,
        retry_later: float = 5.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.nc = nc
        self.consumer = consumer
        self.capacity = capacity
        self.queue = ArrivalQueue()  # None: a stop marker for workers
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires = expires
        self._heartbeat = heartbeat
        self._threshold = max(1, capacity // 2)
        self._requested = 0  # messages asked for, not yet received
        self._per_message = 1.0  # events per message lately (bundles carry several), to size requests
        # Until a message came, it is not known how many events one carries: a request asks for one.
        # Asking for `capacity` messages fetched up to a megabyte of bundles per Webhook at once (a
        # replica restarting with 1,000 backlogged Webhooks: ~1 GiB; test_bundles.py).
        self._sized = False
        self._event_bytes = 1024.0  # bytes per event lately: a request's max_bytes (see _run_pump)
        self._in_hand = 0  # received, not yet released
        self._paused = False
        self._stopping = False
        self._last_seen = time.monotonic()
        self._reconnects = 0
        self._hold_until = 0.0  # after an error reply, wait a moment before asking again
        self._first = True
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._on_error = on_error  # (status, description) of an error reply, e.g. 409 Consumer Deleted
        self._keep_after = keep_after  # seconds a message waits in the queue before it is reported
        self._bundles = bundles or BundleBook(nc, None, label=consumer)
        self._retry_later = retry_later  # NAK delay of a bundle whose progress NATS cannot tell now
        self._unpacking: set[asyncio.Task[None]] = set()  # bundles delivered again, their progress read
        self.last_error: str | None = None

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        # No slow-consumer limit: what can arrive is bounded by what the feed asks for.
        sub = self._sub = await self.nc.subscribe(self._inbox, cb=self._on_message, pending_bytes_limit=0)
        if isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue):
            sub._pending_queue = _HandOff(self._arrived)  # the callback task then waits for nothing
        self._reconnects = self.nc.stats["reconnects"]
        self._pump = asyncio.create_task(self._run_pump(), name=f"pull {self.consumer}")
        self._wake.set()

    async def stop(self) -> list[Msg]:
        """Stop asking for messages; returns those received but not taken off the queue yet."""
        self._stopping = True
        self._wake.set()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        if self._sub is not None:
            await self._drain_subscription(self._sub)
            self._sub = None
        for task in list(self._unpacking):
            task.cancel()
        await asyncio.gather(*self._unpacking, return_exceptions=True)
        left = []
        while not self.queue.empty():
            msg = self.queue.get_nowait()
            if msg is not None:
                left.append(msg)
        return left

    async def _drain_subscription(self, sub: Subscription) -> None:
        """Drop interest in the inbox (the server then drops our outstanding pull requests), but take
        the messages it sent before that: unsubscribing outright would discard them unacknowledged,
        and JetStream would hand them out again only after ack_wait."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_SECONDS):
                await sub.drain()
        except (TimeoutError, nats.errors.Error) as exc:  # NATS away: those messages come back later
            log.info("consumer %s: inbox not drained (%s)", self.consumer, exc or type(exc).__name__)
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def keep_waiting(self) -> int:
        """Tell JetStream that messages waiting in the queue for a worker longer than `keep_after`
        seconds (a third of ack_wait for an engine) are in progress: a slow receiver or a Retry-After
        pause does not get them handed out again. Returns how many."""
        waiting = self.queue.waiting(self._keep_after)
        for msg in waiting:
            with contextlib.suppress(Exception):  # not kept: JetStream hands it out again, nothing lost
                await msg.in_progress()
        return len(waiting)

    @property
    def in_hand(self) -> int:
        """Messages received and not yet released (acked or naked)."""
        return self._in_hand

    def release(self, count: int = 1) -> None:
        """`count` messages taken from the queue are finished (acked or naked)."""
        self._in_hand -= count
        if self._credit() >= self._threshold:
            self._wake.set()

    def pause(self, paused: bool) -> None:
        self._paused = paused
        self._wake.set()

    def _credit(self) -> int:
        """Events that may still be asked for (in hand and asked for count against the capacity). The
        capacity stretches by one message's events: with bundles larger than the capacity the next
        one is asked for while one is still in hand, so the workers do not wait for a pull each time."""
        room = self.capacity + int(self._per_message) - 1
        return room - int(self._requested * self._per_message) - self._in_hand

    def _forget_requests(self, why: str) -> None:
        if self._requested:
            log.info("consumer %s: re-requesting messages (%s)", self.consumer, why)
        self._requested = 0
        self._wake.set()

    async def _on_message(self, msg: Msg) -> None:
        """nats-py's callback: the path of a nats-py without the hand-off (`_HandOff`)."""
        self._arrived(msg)

    def _arrived(self, msg: Msg) -> None:
        """A message for the inbox: an event goes on the queue; a status reply is dealt with here."""
        self._last_seen = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if not status:
            self._requested = max(0, self._requested - 1)
            first = not self._sized
            if first:
                self._sized = True
                self._wake.set()  # the rest of the capacity, now sized by this message
            with contextlib.suppress(ValueError):
                # what nats-py would parse on first use, in its own form
                msg._metadata = ReplyMetadata(msg.reply)  # type: ignore[assignment]
            if headers and BUNDLE_HEADER in headers:
                self._take_bundle(msg, headers, first)
                return
            self._in_hand += 1
            self._event_bytes = 0.9 * self._event_bytes + 0.1 * len(msg.data)
            if self._per_message != 1.0:
                self._per_message = 0.9 * self._per_message + 0.1
            self.queue.put_nowait(msg)
            return
        if status == "100":  # idle heartbeat
            return
        pending = headers.get("Nats-Pending-Messages") if headers else None
        if pending is not None:
            # A request ended (expired, 404/408, or 409 with counts): that part will not come.
            self._requested = max(0, self._requested - int(pending))
            self._wake.set()
            return
        description = headers.get("Description", "") if headers else ""
        if status in ("404", "408"):
            return
        self.last_error = f"{status} {description}".strip()
        log.warning("consumer %s: pull request answered %s", self.consumer, self.last_error)
        if self._on_error is not None:
            self._on_error(status, description)
        self._hold_until = time.monotonic() + 1.0
        self._forget_requests(self.last_error)

    def _take_bundle(self, msg: Msg, headers: dict[str, str], first: bool = False) -> None:
        """Each event of a bundle goes on the queue as a member (counted in hand on its own); a bundle
        delivered again first has its progress read (bundles.BundleBook.again). The feed's first
        message sizes its requests outright, later ones move the running averages."""
        try:
            size = bundle_size(headers) or 1
            weight = 1.0 if first else 0.1  # a first message replaces the starting guesses
            self._per_message += weight * (size - self._per_message)
            self._event_bytes += weight * (len(msg.data) / size - self._event_bytes)
            if msg.metadata.num_delivered > 1:
                self._in_hand += size
                task = asyncio.create_task(self._take_again(msg, size), name=f"bundle {self.consumer}")
                self._unpacking.add(task)
                task.add_done_callback(self._unpacking.discard)
                return
            members = self._bundles.first(msg, size)
        except BundleError as exc:  # not something ingest wrote: nothing can ever deliver it
            log.error("consumer %s: dropping a malformed bundle on %s: %s", self.consumer, msg.subject, exc)
            dropping = asyncio.create_task(msg.term())
            self._unpacking.add(dropping)
            dropping.add_done_callback(self._unpacking.discard)
            return
        self._in_hand += size
        self._queue_members(members, size)

    async def _take_again(self, msg: Msg, size: int) -> None:
        try:
            members = await self._bundles.again(msg, size)
        except asyncio.CancelledError:  # the feed stops: the whole message goes back at once
            with contextlib.suppress(Exception):
                await msg.nak()
            self.release(size)
            raise
        except (BusUnavailable, BundleError) as exc:
            log.warning("consumer %s: bundle at %s handed back (%s)", self.consumer, msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._retry_later)
            self.release(size)
            return
        self._queue_members(members, size)

    def _queue_members(self, members: list[BundleMember], size: int) -> None:
        for member in members:
            self.queue.put_nowait(member)  # type: ignore[arg-type]
        if len(members) < size:  # done before, or not due yet: settled without a worker
            self.release(size - len(members))

    async def _run_pump(self) -> None:
        """Send pull requests whenever there is credit; watch reconnects and heartbeats."""
        tick = min(1.0, self._heartbeat / 2)
        while not self._stopping:
            # Not asyncio.wait_for: on Python 3.11 it can swallow the cancellation of stop() when
            # a wake-up lands at the same moment (hence also the `_stopping` flag).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            self._check_liveness()
            credit = self._credit()
            if self._paused or credit < self._threshold or not self.nc.is_connected:
                continue
            if time.monotonic() < self._hold_until:
                continue
            if not self._sized and self._requested:
                continue  # the one message asked for is awaited
            # The first request of a feed expires at a spread time: many feeds started together
            # (a pool replica's engines) then renew their idle requests at spread times too.
            expires = self._expires * (random.uniform(0.05, 1.0) if self._first else 1.0)
            self._first = False
            batch = max(1, int(credit / self._per_message)) if self._sized else 1
            request = {
                "batch": batch,
                # Bytes too: a first request, before bundles were seen, would otherwise ask for `credit`
                # whole bundles, more than nats-server lets a client fall behind by (it disconnects it as
                # a slow consumer); at least one message of the largest size always fits.
                "max_bytes": max(self.nc.max_payload, int(credit * self._event_bytes * 1.5)),
                "expires": int(max(expires, 2 * self._heartbeat + 1) * 1e9),
                "idle_heartbeat": int(self._heartbeat * 1e9),
            }
            try:
                await self.nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
            except nats.errors.Error as exc:
                self.last_error = str(exc) or type(exc).__name__
                continue
            self._requested += batch
            self._last_seen = time.monotonic()

    def _check_liveness(self) -> None:
        reconnects = self.nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._forget_requests("reconnected to NATS")
        elif self._requested and time.monotonic() - self._last_seen > 2 * self._heartbeat + 1:
            self._forget_requests("no heartbeat from NATS")
