"""The NATS JetStream adapter: the stream, one durable pull consumer per Webhook, publishing.

Events live in the stream `HOOKLINE_EVENTS` on `hookline.events.<type>.<database>.<collection>`.
Each is published with `Nats-Msg-Id: <event id>`, so the stream's duplicate window collapses a
repeat of the same id (a producer retrying after a 503, or two ingest replicas). Each Webhook reads
through its own durable pull consumer filtered on its event types and scope; the operator and the
sender both call `ensure_consumer`, which is idempotent and updates the filters when the spec changes.
The consumer only sees events published after it was created (deliver policy "new").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from hookline.sender.config import SenderConfig
    from hookline.sender.events import Event

log = logging.getLogger(__name__)

STREAM = "HOOKLINE_EVENTS"
STREAM_SUBJECTS = ("hookline.events.>",)
DEAD_LETTER_STREAM = "HOOKLINE_DEAD_LETTERS"
DEAD_LETTER_SUBJECTS = ("hookline.dead.>",)
DEFAULT_RETENTION_SECONDS = 72 * 3600
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120
MSG_ID_HEADER = "Nats-Msg-Id"
# How much longer than one request's timeout the server waits for an ack before redelivering.
ACK_WAIT_MARGIN_SECONDS = 30.0


class BusUnavailable(Exception):
    """NATS is not reachable or did not confirm in time; the caller should retry later."""


def dead_letter_subject(namespace: str, name: str) -> str:
    return f"hookline.dead.{namespace}.{name}"


async def connect(
    url: str,
    *,
    name: str = "hookline",
    on_state_change: Callable[[], Awaitable[None]] | None = None,
    connect_timeout: float = 5.0,
) -> NATS:
    """Connect and keep reconnecting forever (a NATS restart must not kill a sender)."""

    async def _log_error(exc: Exception) -> None:
        log.warning("NATS connection problem: %s", exc)

    async def _notify() -> None:
        if on_state_change is not None:
            await on_state_change()

    try:
        return await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1,
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
) -> api.StreamInfo:
    """Create the events stream if absent; bring max_age and duplicate window up to date if not."""
    wanted = stream_config(retention_seconds, duplicate_window)
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return await js.add_stream(wanted)
    have = info.config
    if have.max_age != wanted.max_age or have.duplicate_window != wanted.duplicate_window:
        updated = have.evolve(max_age=wanted.max_age, duplicate_window=wanted.duplicate_window)
        return await js.update_stream(updated)
    return info


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


def consumer_spec(cfg: SenderConfig) -> ConsumerSpec:
    """The consumer for a sender config: its filters, maxInFlight as max_ack_pending, ack_wait."""
    from hookline.sender.events import filter_subjects

    spec = cfg.spec
    return ConsumerSpec(
        name=cfg.nats.consumer,
        filter_subjects=tuple(filter_subjects(spec.events, spec.database, spec.collection)),
        max_ack_pending=spec.delivery.max_in_flight,
        ack_wait_seconds=float(spec.delivery.timeout_seconds) + ACK_WAIT_MARGIN_SECONDS,
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


def _filters_of(config: api.ConsumerConfig) -> tuple[str, ...]:
    if config.filter_subjects:
        return tuple(config.filter_subjects)
    return (config.filter_subject,) if config.filter_subject else ()


def consumer_needs_update(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    return (
        sorted(_filters_of(have)) != sorted(_filters_of(want))
        or have.max_ack_pending != want.max_ack_pending
        or have.ack_wait != want.ack_wait
    )


async def ensure_consumer(js: JetStreamContext, cfg: SenderConfig | ConsumerSpec) -> api.ConsumerInfo:
    """Create the Webhook's consumer, or update its filters and limits; a no-op when they match."""
    spec = cfg if isinstance(cfg, ConsumerSpec) else consumer_spec(cfg)
    want = consumer_config(spec)
    try:
        info = await js.consumer_info(STREAM, spec.name)
    except NotFoundError:
        return await js.add_consumer(STREAM, want)
    if not consumer_needs_update(info.config, want):
        return info
    # Keep the existing deliver policy: the server refuses to change it on update.
    return await js.add_consumer(STREAM, want.evolve(deliver_policy=info.config.deliver_policy))


async def delete_consumer(js: JetStreamContext, name: str) -> bool:
    """Remove a Webhook's consumer; False if it was already gone."""
    try:
        return await js.delete_consumer(STREAM, name)
    except NotFoundError:
        return False


async def pull_subscription(js: JetStreamContext, consumer: str) -> JetStreamContext.PullSubscription:
    return await js.pull_subscribe_bind(consumer, stream=STREAM)


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
    from hookline.sender.events import subject_for

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
