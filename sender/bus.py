"""The NATS JetStream adapter: the stream, one durable pull consumer per Webhook, publishing.

Events live in the stream `HOOKLINE_EVENTS` on `hookline.events.<type>.<database>.<collection>`.
Each is published with `Nats-Msg-Id: <event id>`, so the stream's duplicate window collapses a
repeat of the same id (a producer retrying after a 503, or two ingest replicas). Each Webhook reads
through its own durable pull consumer filtered on its event types and scope; the operator and the
sender both call `ensure_consumer`, which is idempotent and updates the filters when the spec changes.
The consumer only sees events published after it was created (deliver policy "new").

A 410 Gone stops a Webhook durably: its consumer is paused (the server then hands no event to any
replica, also after a restart) and the consumer's metadata says when and at which URL (as a digest).
`read_gone` is how senders and the operator learn of it; `clear_gone` resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from hookline.sender.events import Event, encode_token, filter_subjects, subject_for
from hookline.sender.retry import GoneState

if TYPE_CHECKING:
    from hookline.sender.config import SenderConfig

log = logging.getLogger(__name__)

STREAM = "HOOKLINE_EVENTS"
REDRIVE_STREAM_SUBJECT = "hookline.redrive.>"
STREAM_SUBJECTS = ("hookline.events.>", REDRIVE_STREAM_SUBJECT)
DEAD_LETTER_STREAM = "HOOKLINE_DEAD_LETTERS"
DEAD_LETTER_SUBJECTS = ("hookline.dead.>",)
DEFAULT_RETENTION_SECONDS = 72 * 3600
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120
MSG_ID_HEADER = "Nats-Msg-Id"
# Events waiting for a delayed retry (NAKed with a delay) count as ack-pending, so max_ack_pending
# cannot be maxInFlight: ten failing events would stall every other event of the Webhook. The
# senders' workers enforce maxInFlight; this only bounds how many retries wait at once (beyond it,
# new events stay in the stream until some retries have settled).
MAX_ACK_PENDING = 20_000
# Consumer metadata of a Webhook stopped by a 410 Gone (see read_gone / mark_gone / clear_gone).
GONE_SINCE_KEY = "hookline.io/gone-since"
GONE_EVENT_KEY = "hookline.io/gone-event"
GONE_URL_KEY = "hookline.io/gone-url-sha256"
GONE_KEYS = (GONE_SINCE_KEY, GONE_EVENT_KEY, GONE_URL_KEY)
PAUSED_FOREVER = "9999-12-31T23:59:59Z"
# How long a stopping feed waits for the server to confirm it sent its last messages.
DRAIN_TIMEOUT_SECONDS = 5.0
# How much longer than one request's timeout the server waits for an ack before redelivering.
ACK_WAIT_MARGIN_SECONDS = 30.0


class BusUnavailable(Exception):
    """NATS is not reachable or did not confirm in time; the caller should retry later."""


def dead_letter_subject(namespace: str, name: str) -> str:
    return f"hookline.dead.{namespace}.{name}"


def redrive_subject(namespace: str, name: str) -> str:
    """Where `hookline redrive` puts a Webhook's dead letters back; only that Webhook's consumer reads it."""
    return f"hookline.redrive.{encode_token(namespace)}.{encode_token(name)}"


async def connect(
    url: str,
    *,
    name: str = "hookline",
    on_state_change: Callable[[], Awaitable[None]] | None = None,
    connect_timeout: float = 5.0,
    initial_attempts: int = 5,
) -> NATS:
    """Connect (a few tries, then BusUnavailable), then keep reconnecting forever after any loss.

    A NATS restart must not kill a running sender, but a wrong URL at startup should fail visibly.
    """

    async def _log_error(exc: Exception) -> None:
        log.warning("NATS connection problem: %s", exc)

    async def _notify() -> None:
        if on_state_change is not None:
            await on_state_change()

    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=initial_attempts,
            reconnect_time_wait=1,
            allow_reconnect=True,
            error_cb=_log_error,
            disconnected_cb=_notify,
            reconnected_cb=_notify,
        )
    except Exception as exc:  # nats raises a variety of errors (NoServersError, OSError, TimeoutError)
        raise BusUnavailable(
            f"cannot connect to NATS at {url}: {exc or type(exc).__name__}; "
            "check that nats-server runs and the URL is right"
        ) from exc
    nc.options["max_reconnect_attempts"] = -1  # read by nats-py on every reconnect
    return nc


def stream_config(
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
) -> api.StreamConfig:
    """Limits-based retention on disk: events stay until max_age whether delivered or not."""
    if retention_seconds <= 0:
        raise ValueError("stream retention must be a positive number of seconds")
    if not 0 < duplicate_window <= retention_seconds:
        raise ValueError("duplicate window must be positive and not longer than the retention")
    return api.StreamConfig(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_age=float(retention_seconds),
        duplicate_window=float(duplicate_window),
    )


async def ensure_stream(
    js: JetStreamContext,
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
    *,
    update_existing: bool = True,
) -> api.StreamInfo:
    """Create the events stream if absent; bring max_age and duplicate window up to date if not.

    Senders pass `update_existing=False`: they only need the stream to exist and must not undo the
    retention ingest was configured with (its subjects are still completed).
    """
    wanted = stream_config(retention_seconds, duplicate_window)
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return await js.add_stream(wanted)
    have = info.config
    max_age = wanted.max_age if update_existing else have.max_age
    window = wanted.duplicate_window if update_existing else have.duplicate_window
    subjects = sorted({*(have.subjects or []), *STREAM_SUBJECTS})
    if (max_age, window, subjects) == (have.max_age, have.duplicate_window, sorted(have.subjects or [])):
        return info
    return await js.update_stream(have.evolve(max_age=max_age, duplicate_window=window, subjects=subjects))


async def ensure_dead_letter_stream(
    js: JetStreamContext, retention_seconds: float = 14 * 24 * 3600
) -> api.StreamInfo:
    """Dead letters are kept longer than events so someone can look at them and redrive."""
    try:
        return await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        return await js.add_stream(
            api.StreamConfig(
                name=DEAD_LETTER_STREAM,
                subjects=list(DEAD_LETTER_SUBJECTS),
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=float(retention_seconds),
            )
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """What the consumer of one Webhook must look like; built from the sender config."""

    name: str
    filter_subjects: tuple[str, ...]
    max_ack_pending: int
    ack_wait_seconds: float
    stream: str = STREAM


def ack_wait_seconds(timeout_seconds: float) -> float:
    """How long the server waits for an ack before redelivering: one request's timeout plus a margin."""
    return float(timeout_seconds) + ACK_WAIT_MARGIN_SECONDS


def consumer_spec(cfg: SenderConfig) -> ConsumerSpec:
    """The consumer for a sender config: its filters (with its redrive subject) and ack_wait."""
    spec = cfg.spec
    filters = filter_subjects(spec.events, spec.database, spec.collection)
    filters.append(redrive_subject(cfg.webhook.namespace, cfg.webhook.name))
    return ConsumerSpec(
        name=cfg.nats.consumer,
        stream=cfg.nats.stream,
        filter_subjects=tuple(filters),
        max_ack_pending=MAX_ACK_PENDING,
        ack_wait_seconds=ack_wait_seconds(spec.delivery.timeout_seconds),
    )


def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    """A durable pull consumer with explicit acks that starts at events published after its creation."""
    filters = list(spec.filter_subjects)
    return api.ConsumerConfig(
        name=spec.name,
        durable_name=spec.name,
        description="hookline Webhook consumer",
        deliver_policy=api.DeliverPolicy.NEW,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=spec.max_ack_pending,
        # One filter goes in filter_subject: servers reject a single-element filter_subjects on update
        # from a consumer created with filter_subject, and the reverse.
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        replay_policy=api.ReplayPolicy.INSTANT,
    )


def filters_of(config: api.ConsumerConfig) -> tuple[str, ...]:
    """A consumer's filter subjects, whichever of filter_subject / filter_subjects holds them."""
    if config.filter_subjects:
        return tuple(config.filter_subjects)
    return (config.filter_subject,) if config.filter_subject else ()


def consumer_needs_update(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    return (
        sorted(filters_of(have)) != sorted(filters_of(want))
        or have.max_ack_pending != want.max_ack_pending
        or have.ack_wait != want.ack_wait
    )


async def ensure_consumer(js: JetStreamContext, cfg: SenderConfig | ConsumerSpec) -> api.ConsumerInfo:
    """Create the Webhook's consumer, or update its filters and limits; a no-op when they match."""
    spec = cfg if isinstance(cfg, ConsumerSpec) else consumer_spec(cfg)
    want = consumer_config(spec)
    try:
        info = await js.consumer_info(spec.stream, spec.name)
    except NotFoundError:
        return await js.add_consumer(spec.stream, want)
    if not consumer_needs_update(info.config, want):
        return info
    # Keep the existing deliver policy (the server refuses to change it) and a 410 Gone stop.
    return await js.add_consumer(
        spec.stream,
        want.evolve(deliver_policy=info.config.deliver_policy, metadata=_own_metadata(info.config) or None),
    )


async def delete_consumer(js: JetStreamContext, name: str, *, stream: str = STREAM) -> bool:
    """Remove a Webhook's consumer; False if it was already gone."""
    try:
        return await js.delete_consumer(stream, name)
    except NotFoundError:
        return False


def _own_metadata(config: api.ConsumerConfig) -> dict[str, str]:
    """Metadata hookline wrote (the server adds `_nats.*` keys of its own on every update)."""
    return {k: v for k, v in (config.metadata or {}).items() if not k.startswith("_nats.")}


def gone_of(info: api.ConsumerInfo) -> GoneState:
    """The 410 Gone stop recorded on a consumer (pure; not gone when there is none)."""
    metadata = info.config.metadata or {}
    since = metadata.get(GONE_SINCE_KEY)
    if since is None:
        return GoneState()
    try:
        when: float | None = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
    except ValueError:
        when = None
    return GoneState(
        gone=True,
        since=when,
        event_id=metadata.get(GONE_EVENT_KEY) or None,
        url_sha256=metadata.get(GONE_URL_KEY) or None,
    )


def gone_metadata(state: GoneState) -> dict[str, str]:
    since = datetime.fromtimestamp(state.since if state.since is not None else time.time(), UTC)
    return {
        GONE_SINCE_KEY: since.isoformat(timespec="seconds").replace("+00:00", "Z"),
        GONE_EVENT_KEY: state.event_id or "",
        GONE_URL_KEY: state.url_sha256 or "",
    }


async def read_gone(js: JetStreamContext, consumer: str, *, stream: str = STREAM) -> GoneState:
    """Whether a Webhook is stopped by a 410 Gone (NotFoundError if it has no consumer)."""
    return gone_of(await js.consumer_info(stream, consumer))


async def mark_gone(js: JetStreamContext, consumer: str, state: GoneState, *, stream: str = STREAM) -> None:
    """Record the stop on the consumer, then pause it so no replica gets another event.

    In this order: a crash in between leaves a recorded stop that senders honour on their own.
    """
    info = await js.consumer_info(stream, consumer)
    if not gone_of(info).gone:
        metadata = {**_own_metadata(info.config), **gone_metadata(state)}
        await js.add_consumer(stream, info.config.evolve(metadata=metadata))
    await js.pause_consumer(stream, consumer, PAUSED_FOREVER)


async def clear_gone(js: JetStreamContext, consumer: str, *, stream: str = STREAM) -> bool:
    """Resume a Webhook stopped by a 410 Gone; False if it was not stopped (nothing changes then).

    Unpause first, then drop the record: a crash in between still reads as stopped, never as a
    consumer that silently hands out nothing.
    """
    info = await js.consumer_info(stream, consumer)
    if not gone_of(info).gone:
        return False
    await js.resume_consumer(stream, consumer)
    metadata = {k: v for k, v in _own_metadata(info.config).items() if k not in GONE_KEYS}
    await js.add_consumer(stream, info.config.evolve(metadata=metadata))
    return True


def pending_of(info: api.ConsumerInfo) -> int:
    """Events not yet delivered plus those delivered but not acknowledged (in flight or retrying)."""
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def publish_events(
    nc: NATS, js: JetStreamContext, events: Sequence[Event], *, ack_timeout: float = 5.0
) -> list[bool]:
    """Publish a batch concurrently and wait for every ack; returns, per event, whether it was a duplicate.

    Raises BusUnavailable if NATS is disconnected or any ack does not come back in time. Some
    events may then be stored and others not; the caller retries the whole batch and the stream's
    duplicate window (keyed on the event id) turns the repeats into no-ops.
    """
    if not nc.is_connected:
        # Refuse rather than queue into the reconnect buffer, which would publish after we said 503.
        raise BusUnavailable("not connected to NATS")
    futures: list[asyncio.Future[api.PubAck]] = []
    try:
        for event in events:
            futures.append(
                await js.publish_async(
                    subject_for(event),
                    event.to_bytes(),
                    wait_stall=ack_timeout,
                    headers={MSG_ID_HEADER: event.id},
                )
            )
        acks = await asyncio.wait_for(asyncio.gather(*futures), ack_timeout)
    except TimeoutError as exc:
        raise BusUnavailable(f"NATS did not confirm the events within {ack_timeout:g}s") from exc
    except nats.errors.Error as exc:
        raise BusUnavailable(f"publishing to NATS failed: {exc or type(exc).__name__}") from exc
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
    for ack in acks:
        if ack.stream != STREAM:
            raise BusUnavailable(f"events were stored in stream {ack.stream!r}, expected {STREAM}")
    return [bool(ack.duplicate) for ack in acks]


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
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.nc = nc
        self.consumer = consumer
        self.capacity = capacity
        self.queue: asyncio.Queue[Msg | None] = asyncio.Queue()  # None: a stop marker for workers
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires = expires
        self._heartbeat = heartbeat
        self._threshold = max(1, capacity // 2)
        self._requested = 0  # asked for, not yet received
        self._in_hand = 0  # received, not yet released
        self._paused = False
        self._stopping = False
        self._last_seen = time.monotonic()
        self._reconnects = 0
        self._hold_until = 0.0  # after an error reply, wait a moment before asking again
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_message)
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

    def release(self, count: int = 1) -> None:
        """`count` messages taken from the queue are finished (acked or naked)."""
        self._in_hand -= count
        if self._credit() >= self._threshold:
            self._wake.set()

    def pause(self, paused: bool) -> None:
        self._paused = paused
        self._wake.set()

    def _credit(self) -> int:
        return self.capacity - self._requested - self._in_hand

    def _forget_requests(self, why: str) -> None:
        if self._requested:
            log.info("consumer %s: re-requesting messages (%s)", self.consumer, why)
        self._requested = 0
        self._wake.set()

    async def _on_message(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if not status:
            self._requested = max(0, self._requested - 1)
            self._in_hand += 1
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
        self._hold_until = time.monotonic() + 1.0
        self._forget_requests(self.last_error)

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
            request = {
                "batch": credit,
                "expires": int(self._expires * 1e9),
                "idle_heartbeat": int(self._heartbeat * 1e9),
            }
            try:
                await self.nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
            except nats.errors.Error as exc:
                self.last_error = str(exc) or type(exc).__name__
                continue
            self._requested += credit
            self._last_seen = time.monotonic()

    def _check_liveness(self) -> None:
        reconnects = self.nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._forget_requests("reconnected to NATS")
        elif self._requested and time.monotonic() - self._last_seen > 2 * self._heartbeat + 1:
            self._forget_requests("no heartbeat from NATS")
