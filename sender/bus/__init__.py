"""The NATS JetStream adapter: the stream, one durable pull consumer per Webhook, publishing.

Events live in the stream `HOOKLINE_EVENTS` on `hookline.events.<type>.<database>.<collection>`.
Each is published with `Nats-Msg-Id: <event id>`, so the stream's duplicate window collapses a
repeat of the same id (a producer retrying after a 503, or two ingest replicas). Each Webhook reads
through its own durable pull consumer filtered on its event types and scope; the operator and the
sender both call `ensure_consumer`, which is idempotent and updates the filters when the spec changes.

Retention is interest-based: an event stays in the stream while some consumer has not acked it, so a
delivered event holds no space, and a byte limit (`max_bytes`, discard "new": a full stream refuses
new events instead of dropping undelivered ones) bounds the store. A new consumer starts at events
published after its creation (deliver policy "new"). Senders record how far their consumer got (its
ack floor, in the key-value bucket `hookline-consumer-floors`); a consumer that was lost is
recreated from there (`ensure_consumer`), so events the stream still holds are delivered.

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
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from hookline.sender.model.events import Event, encode_token, filter_subjects, subject_for
from hookline.sender.model.outcomes import GoneState

if TYPE_CHECKING:
    from hookline.sender.model.config import SenderConfig

log = logging.getLogger(__name__)

STREAM = "HOOKLINE_EVENTS"
REDRIVE_STREAM_SUBJECT = "hookline.redrive.>"
STREAM_SUBJECTS = ("hookline.events.>", REDRIVE_STREAM_SUBJECT)
DEAD_LETTER_STREAM = "HOOKLINE_DEAD_LETTERS"
DEAD_LETTER_SUBJECTS = ("hookline.dead.>",)
DEFAULT_RETENTION_SECONDS = 72 * 3600
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120
# The events stream's consumer limit: one consumer per verified Webhook. Set explicitly because
# nats-server >= 2.15 caps a stream without one at 1,000 consumers (err_code 10026 for the 1,001st).
# Sized for 10,000 Webhooks with room to double; each consumer costs ~50 KiB of server memory
# (bench/nats_consumers.py), so the limit is a guard, not a reservation.
DEFAULT_MAX_CONSUMERS = 20_000
# What the server applies to a stream whose max_consumers is unset (-1 or 0), measured on 2.15.1.
SERVER_DEFAULT_MAX_CONSUMERS = 1_000
# Stream, bucket and consumer replicas: 1 for a single server (the embedded one refuses more),
# 3 recommended on a NATS cluster (a stream survives the loss of one node of three).
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 5
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
GONE_CAUSE_KEY = "hookline.io/stop-cause"  # absent: a 410 Gone; "disabled": the circuit breaker
GONE_KEYS = (GONE_SINCE_KEY, GONE_EVENT_KEY, GONE_URL_KEY, GONE_CAUSE_KEY)
PAUSED_FOREVER = "9999-12-31T23:59:59Z"
# How long a stopping feed waits for the server to confirm it sent its last messages.
DRAIN_TIMEOUT_SECONDS = 5.0
# How much longer than one request's timeout the server waits for an ack before redelivering.
ACK_WAIT_MARGIN_SECONDS = 30.0


# Room kept in every NATS message for what travels beside an event: the Nats-Msg-Id header when it is
# published, and the dead-letter record around it (reason, times, subject, capped last error).
EVENT_HEADROOM_BYTES = 8 * 1024
# Floors of the Webhooks' consumers (see ensure_consumer): where to start a lost consumer again.
FLOORS_BUCKET = "hookline-consumer-floors"


class BusUnavailable(Exception):
    """NATS is not reachable or did not confirm in time; the caller should retry later."""


class StoreRefused(BusUnavailable):
    """JetStream answered a publish with an error (stream full, storage exhausted, ...)."""

    def __init__(self, description: str, err_code: int | None = None) -> None:
        super().__init__(description)
        self.err_code = err_code


def max_event_bytes(max_payload: int) -> int:
    """The largest encoded event that fits through the bus and, later, into its dead letter."""
    return max(1024, int(max_payload) - EVENT_HEADROOM_BYTES)


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
    on_closed: Callable[[], object] | None = None,
    connect_timeout: float = 5.0,
    initial_attempts: int = 5,
) -> NATS:
    """Connect (a few tries, then BusUnavailable), then keep reconnecting forever after any loss.

    A NATS restart must not kill a running sender, but a wrong URL at startup should fail visibly.
    Some losses nats-py does not reconnect from (the server closing the connection over a protocol
    error such as "maximum payload exceeded"): `on_closed` is called then, and the service exits
    so that its pod is restarted, rather than answering "not connected" for good.
    """

    async def _log_error(exc: Exception) -> None:
        log.warning("NATS connection problem: %s", exc)

    async def _notify() -> None:
        if on_state_change is not None:
            await on_state_change()

    async def _closed() -> None:
        if on_closed is not None:
            on_closed()

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
            closed_cb=_closed,
        )
    except Exception as exc:  # nats raises a variety of errors (NoServersError, OSError, TimeoutError)
        raise BusUnavailable(
            f"cannot connect to NATS at {url}: {exc or type(exc).__name__}; "
            "check that nats-server runs and the URL is right"
        ) from exc
    nc.options["max_reconnect_attempts"] = -1  # read by nats-py on every reconnect
    return nc


async def close_quietly(nc: NATS, within: float = DRAIN_TIMEOUT_SECONDS) -> None:
    """Drain when connected, else just close: a stop with NATS away (or the connection closed by the
    server) is a clean exit, not a traceback."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            async with asyncio.timeout(within):
                await nc.drain()
            return
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("NATS drain did not finish (%s); closing", exc or type(exc).__name__)
    with contextlib.suppress(Exception):
        await nc.close()


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"NATS replicas must be 1 to {MAX_REPLICAS} (1 on a single server, 3 on a cluster)")
    return int(replicas)


STREAM_RETENTIONS = {"interest": api.RetentionPolicy.INTEREST, "limits": api.RetentionPolicy.LIMITS}
DEFAULT_STREAM_RETENTION = "interest"


def stream_config(
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
    max_bytes: int = -1,
    *,
    max_consumers: int = DEFAULT_MAX_CONSUMERS,
    replicas: int = DEFAULT_REPLICAS,
    retention: str = DEFAULT_STREAM_RETENTION,
) -> api.StreamConfig:
    """Interest-based retention on disk: an event stays until every consumer that wants it acked it
    (or max_age passed); at `max_bytes` (-1: no limit but the server's) new events are refused.
    `retention="limits"` keeps delivered events until max_age too (the byte limit then also counts
    them): the choice for NATS servers whose interest streams misbehave on leader failover.
    `max_consumers` is always explicit (see DEFAULT_MAX_CONSUMERS); `replicas` copies on a cluster."""
    if max_consumers < 1:
        raise ValueError("stream max consumers must be at least 1 (one consumer per verified Webhook)")
    check_replicas(replicas)
    if retention_seconds <= 0:
        raise ValueError("stream retention must be a positive number of seconds")
    if not 0 < duplicate_window <= retention_seconds:
        raise ValueError("duplicate window must be positive and not longer than the retention")
    if max_bytes != -1 and max_bytes < 1024 * 1024:
        raise ValueError("stream max bytes must be -1 (no limit) or at least 1 MiB")
    if retention not in STREAM_RETENTIONS:
        raise ValueError(f"stream retention policy must be one of {', '.join(STREAM_RETENTIONS)}")
    return api.StreamConfig(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        retention=STREAM_RETENTIONS[retention],
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        max_age=float(retention_seconds),
        max_bytes=int(max_bytes),
        duplicate_window=float(duplicate_window),
        max_consumers=int(max_consumers),
        num_replicas=int(replicas),
    )


async def ensure_stream(
    js: JetStreamContext,
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
    *,
    max_bytes: int = -1,
    max_consumers: int = DEFAULT_MAX_CONSUMERS,
    replicas: int = DEFAULT_REPLICAS,
    retention: str = DEFAULT_STREAM_RETENTION,
    update_existing: bool = True,
) -> api.StreamInfo:
    """Create the events stream if absent; bring retention, limits and duplicate window up to date if not.

    Senders pass `update_existing=False`: they only need the stream to exist and must not undo the
    limits ingest was configured with (its subjects are still completed). A stream made by an older
    hookline (limits retention, no byte limit) is moved to interest retention and discard "new".
    Ingest raises a lower consumer limit (an unset one counts as the server's 1,000) but never lowers
    one set higher by hand, and moves the stream to `replicas` (the server re-replicates it).
    """
    wanted = stream_config(
        retention_seconds,
        duplicate_window,
        max_bytes,
        max_consumers=max_consumers,
        replicas=replicas,
        retention=retention,
    )
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return await js.add_stream(wanted)
    have = info.config
    changes = stream_changes(have, wanted, update_existing=update_existing)
    if not changes:
        return info
    return await js.update_stream(have.evolve(**changes))


def stream_changes(
    have: api.StreamConfig, wanted: api.StreamConfig, *, update_existing: bool = True
) -> dict[str, object]:
    """The fields of the existing stream to change (pure; empty when it is as wanted)."""
    changes: dict[str, object] = {}
    subjects = sorted({*(have.subjects or []), *STREAM_SUBJECTS})
    if subjects != sorted(have.subjects or []):
        changes["subjects"] = subjects
    # Ingest owns the retention policy (a sender must not undo `--stream-retention limits`).
    fixed = ("discard",)
    tunable = (
        ("retention", "max_age", "duplicate_window", "max_bytes", "num_replicas") if update_existing else ()
    )
    for name in (*fixed, *tunable):
        value, current = getattr(wanted, name), getattr(have, name)
        if name == "num_replicas":
            current = current or 1  # unset is one replica
        if current != value:
            changes[name] = value
    if update_existing and effective_max_consumers(have) < int(wanted.max_consumers or 0):
        changes["max_consumers"] = wanted.max_consumers
    return changes


def effective_max_consumers(config: api.StreamConfig) -> int:
    """How many consumers the server lets the stream have (pure): unset means its default of 1,000."""
    limit = int(config.max_consumers or -1)
    return SERVER_DEFAULT_MAX_CONSUMERS if limit <= 0 else limit


async def ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> bool:
    """Move an existing stream (or a key-value bucket's stream, `KV_<bucket>`) to `replicas`;
    False when it already has them. On a single server anything above 1 is refused (err_code 10074)."""
    check_replicas(replicas)
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) == replicas:
        return False
    await js.update_stream(info.config.evolve(num_replicas=replicas))
    return True


async def ensure_dead_letter_stream(
    js: JetStreamContext,
    retention_seconds: float = 14 * 24 * 3600,
    *,
    replicas: int = DEFAULT_REPLICAS,
    update_existing: bool = False,
) -> api.StreamInfo:
    """Dead letters are kept longer than events so someone can look at them and redrive.
    Ingest passes `update_existing=True` to move an existing stream to `replicas`."""
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        return await js.add_stream(
            api.StreamConfig(
                name=DEAD_LETTER_STREAM,
                subjects=list(DEAD_LETTER_SUBJECTS),
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=float(retention_seconds),
                num_replicas=check_replicas(replicas),
            )
        )
    if update_existing and await ensure_replicas(js, DEAD_LETTER_STREAM, replicas):
        return await js.stream_info(DEAD_LETTER_STREAM)
    return info


@dataclass(frozen=True)
class ConsumerSpec:
    """What the consumer of one Webhook must look like; built from the sender config."""

    name: str
    filter_subjects: tuple[str, ...]
    max_ack_pending: int
    ack_wait_seconds: float
    stream: str = STREAM
    replicas: int = 0  # 0: as many as the stream (the server's default for a consumer)


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
        replicas=cfg.nats.replicas,
    )


def consumer_config(spec: ConsumerSpec, start_after: int | None = None) -> api.ConsumerConfig:
    """A durable pull consumer with explicit acks that starts at events published after its creation,
    or, recreating a lost consumer, after stream sequence `start_after` (its last ack floor)."""
    filters = list(spec.filter_subjects)
    return api.ConsumerConfig(
        name=spec.name,
        durable_name=spec.name,
        description="hookline Webhook consumer",
        deliver_policy=api.DeliverPolicy.NEW if start_after is None else api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=None if start_after is None else start_after + 1,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=spec.max_ack_pending,
        # One filter goes in filter_subject: servers reject a single-element filter_subjects on update
        # from a consumer created with filter_subject, and the reverse.
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        replay_policy=api.ReplayPolicy.INSTANT,
        num_replicas=spec.replicas,
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
        or bool(want.num_replicas and (have.num_replicas or 0) != want.num_replicas)
    )


async def ensure_consumer(
    js: JetStreamContext, cfg: SenderConfig | ConsumerSpec, *, start_after: int | None = None
) -> api.ConsumerInfo:
    """Create the Webhook's consumer, or update its filters and limits; a no-op when they match.

    A consumer that existed before (its floor is recorded, see `record_floor`) and is missing now was
    lost: it is created again from its last ack floor (or `start_after`, when the caller knows a
    later one), not from "new", so the events the stream still holds for it are delivered.
    """
    spec = cfg if isinstance(cfg, ConsumerSpec) else consumer_spec(cfg)
    try:
        info = await js.consumer_info(spec.stream, spec.name)
    except NotFoundError:
        recorded = await read_floor(js, spec.name)
        floors = [f for f in (recorded, start_after) if f is not None]
        floor = max(floors) if floors else None
        if floor is not None:
            log.warning("consumer %s is missing; recreating it from stream sequence %d", spec.name, floor + 1)
        return await js.add_consumer(spec.stream, consumer_config(spec, floor))
    want = consumer_config(spec)
    if not consumer_needs_update(info.config, want):
        return info
    # Keep the existing deliver policy (the server refuses to change it) and a 410 Gone stop.
    return await js.add_consumer(
        spec.stream,
        want.evolve(
            deliver_policy=info.config.deliver_policy,
            opt_start_seq=info.config.opt_start_seq,
            metadata=_own_metadata(info.config) or None,
        ),
    )


async def delete_consumer(js: JetStreamContext, name: str, *, stream: str = STREAM) -> bool:
    """Remove a Webhook's consumer (and its recorded floor: a Webhook made again later starts anew);
    False if it was already gone."""
    with contextlib.suppress(Exception):  # no bucket yet, or NATS away: the floor is only a hint
        await forget_floor(js, name)
    try:
        return await js.delete_consumer(stream, name)
    except NotFoundError:
        return False


def floor_of(info: api.ConsumerInfo) -> int:
    """The stream sequence below which the consumer acked everything (pure)."""
    floor = info.ack_floor
    return int(floor.stream_seq or 0) if floor is not None else 0


async def _floors(js: JetStreamContext, *, create: bool, replicas: int = DEFAULT_REPLICAS) -> KeyValue | None:
    try:
        return await js.key_value(FLOORS_BUCKET)
    except BucketNotFoundError:
        if not create:
            return None
        return await js.create_key_value(
            api.KeyValueConfig(
                bucket=FLOORS_BUCKET,
                history=1,
                storage=api.StorageType.FILE,
                replicas=check_replicas(replicas),
            )
        )


async def ensure_floors_bucket(js: JetStreamContext, replicas: int = DEFAULT_REPLICAS) -> None:
    """Create the floors bucket with `replicas`, or move an existing one to them (ingest, at start)."""
    await _floors(js, create=True, replicas=replicas)
    await ensure_replicas(js, f"KV_{FLOORS_BUCKET}", replicas)


async def record_floor(js: JetStreamContext, consumer: str, floor: int) -> None:
    """Remember how far a consumer got, so that a lost consumer can be recreated from there."""
    kv = await _floors(js, create=True)
    assert kv is not None
    await kv.put(consumer, str(int(floor)).encode())


async def read_floor(js: JetStreamContext, consumer: str) -> int | None:
    """The recorded floor of a consumer; None when there is none (a new Webhook).

    When NATS cannot say (a timeout under load), this raises BusUnavailable instead of answering
    None: a lost consumer made again from "new" would silently skip every event the stream holds
    for it, so the caller must try again later rather than guess.
    """
    try:
        kv = await _floors(js, create=False)
        if kv is None:
            return None
        entry = await kv.get(consumer)
    except KeyNotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusUnavailable(
            f"consumer {consumer}: its recorded floor cannot be read ({str(exc) or type(exc).__name__}); "
            "it is not recreated until it can"
        ) from exc
    try:
        return int((entry.value or b"").decode())
    except ValueError:
        return None


async def forget_floor(js: JetStreamContext, consumer: str) -> None:
    kv = await _floors(js, create=False)
    if kv is not None:
        with contextlib.suppress(KeyNotFoundError):
            await kv.purge(consumer)


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
        cause=metadata.get(GONE_CAUSE_KEY) or "gone",
    )


def gone_metadata(state: GoneState) -> dict[str, str]:
    since = datetime.fromtimestamp(state.since if state.since is not None else time.time(), UTC)
    return {
        GONE_SINCE_KEY: since.isoformat(timespec="seconds").replace("+00:00", "Z"),
        GONE_EVENT_KEY: state.event_id or "",
        GONE_URL_KEY: state.url_sha256 or "",
        GONE_CAUSE_KEY: state.cause,
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
        self._on_error = on_error  # (status, description) of an error reply, e.g. 409 Consumer Deleted
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
        if self._on_error is not None:
            self._on_error(status, description)
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
