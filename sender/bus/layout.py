"""The stream layout: the events and dead-letter streams, and one durable pull consumer per Webhook.

Events live in the stream `HOOKLINE_EVENTS` on `hookline.events.<type>.<database>.<collection>`.
Each is published with `Nats-Msg-Id: <event id>`, so the stream's duplicate window collapses a
repeat of the same id (a producer retrying after a 503, or two ingest replicas). Each Webhook reads
through its own durable pull consumer filtered on its event types and scope; the operator and the
sender both call `ensure_consumer`, which is idempotent and updates the filters when the spec changes.

Retention is interest-based: an event stays in the stream while some consumer has not acked it, so a
delivered event holds no space, and a byte limit (`max_bytes`, discard "new": a full stream refuses
new events instead of dropping undelivered ones) bounds the store. A new consumer starts at events
published after its creation (deliver policy "new"). A consumer that was lost is made again: under
interest retention at the stream's end, owing its Webhook the events from its recorded ack floor
(floors.py) to there, which replay.py puts back from the recovery stream (recovery.py); under limits
retention (every event kept) from its floor in this stream.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from hookline.sender.bus.floors import (
    RecoveryDebt,
    forget_debt,
    forget_floor,
    read_debt,
    read_floor,
    write_debt,
)
from hookline.sender.bus.recovery import (
    DEFAULT_RECOVERY_MAX_BYTES,
    DEFAULT_RECOVERY_WINDOW_SECONDS,
    RECOVERY_STREAM,
    ensure_recovery_stream,
    remove_recovery_stream,
)
from hookline.sender.bus.replicas import DEFAULT_REPLICAS, check_replicas, ensure_replicas
from hookline.sender.model.config import EVENTS_STREAM
from hookline.sender.model.subjects import encode_token, filter_subjects

if TYPE_CHECKING:
    from hookline.sender.model.config import SenderConfig

log = logging.getLogger(__name__)

STREAM = EVENTS_STREAM
REDRIVE_STREAM_SUBJECT = "hookline.redrive.>"
STREAM_SUBJECTS = ("hookline.events.>", REDRIVE_STREAM_SUBJECT)
DEAD_LETTER_STREAM = "HOOKLINE_DEAD_LETTERS"
DEAD_LETTER_SUBJECTS = ("hookline.dead.>",)
DEFAULT_RETENTION_SECONDS = 72 * 3600
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120
# The events stream's consumer limit: one consumer per verified Webhook. Set explicitly because
# nats-server >= 2.15 caps a stream without one at 1,000 consumers (err_code 10026 for the 1,001st).
# Sized for 10,000 Webhooks with room to double (the recovery stream's reader takes one more); each
# consumer costs ~50 KiB of server memory (bench/nats_consumers.py), so the limit is a guard, not a
# reservation.
DEFAULT_MAX_CONSUMERS = 20_000
# What the server applies to a stream whose max_consumers is unset (-1 or 0), measured on 2.15.1.
SERVER_DEFAULT_MAX_CONSUMERS = 1_000
# Events waiting for a delayed retry (NAKed with a delay) count as ack-pending, so max_ack_pending
# cannot be maxInFlight: ten failing events would stall every other event of the Webhook. The
# senders' workers enforce maxInFlight; this only bounds how many retries wait at once (beyond it,
# new events stay in the stream until some retries have settled).
MAX_ACK_PENDING = 20_000
# How much longer than one request's timeout the server waits for an ack before redelivering.
ACK_WAIT_MARGIN_SECONDS = 30.0


def dead_letter_subject(namespace: str, name: str) -> str:
    return f"hookline.dead.{namespace}.{name}"


def redrive_subject(namespace: str, name: str) -> str:
    """Where `hookline redrive` puts a Webhook's dead letters back; only that Webhook's consumer reads it."""
    return f"hookline.redrive.{encode_token(namespace)}.{encode_token(name)}"


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
    recovery_window_seconds: float = DEFAULT_RECOVERY_WINDOW_SECONDS,
    recovery_max_bytes: int = DEFAULT_RECOVERY_MAX_BYTES,
) -> api.StreamInfo:
    """Create the events stream if absent; bring retention, limits and duplicate window up to date if not.
    Under interest retention its recovery stream (recovery.py) is made too (`update_existing`: brought to
    `recovery_window_seconds` and `recovery_max_bytes`); ingest moving it to limits retention removes it.

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
        info = await js.add_stream(wanted)
    else:
        changes = stream_changes(info.config, wanted, update_existing=update_existing)
        if changes:
            info = await js.update_stream(info.config.evolve(**changes))
    if info.config.retention == api.RetentionPolicy.INTEREST:
        try:
            await ensure_recovery_stream(
                js,
                recovery_window_seconds,
                recovery_max_bytes,
                replicas=replicas,
                update_existing=update_existing,
            )
        except APIError as exc:
            if update_existing:  # ingest: its settings are refused, it says so and stops
                raise
            # A sender or the operator only makes it when missing: deliveries go on without it (a
            # deleted consumer's events it would have held are then counted lost, no_recovery_stream).
            log.warning("the recovery stream %s could not be made: %s", RECOVERY_STREAM, exc)
    elif update_existing:
        await remove_recovery_stream(js)
    return info


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
                # A byte or message limit set on it later refuses new records, never drops stored ones.
                discard=api.DiscardPolicy.NEW,
                max_age=float(retention_seconds),
                num_replicas=check_replicas(replicas),
            )
        )
    if update_existing and info.config.discard != api.DiscardPolicy.NEW:
        # Made by an older hookline (discard old): a limit set on it would drop stored dead letters.
        info = await js.update_stream(info.config.evolve(discard=api.DiscardPolicy.NEW))
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
        if floor is not None and spec.stream == STREAM and await _interest_retention(js):
            return await _recreate_owing(js, spec, floor)
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
            metadata=own_metadata(info.config) or None,
        ),
    )


async def _interest_retention(js: JetStreamContext) -> bool:
    """Whether the events stream drops what no consumer wants (a lost consumer is then owed a replay)."""
    return (await js.stream_info(STREAM)).config.retention == api.RetentionPolicy.INTEREST


async def _recreate_owing(js: JetStreamContext, spec: ConsumerSpec, floor: int) -> api.ConsumerInfo:
    """Make a lost consumer again at the stream's end, owing its Webhook the events after `floor`.

    Under interest retention the stream dropped the events only this consumer wanted when it was
    deleted, and stored none of the later ones for it; the recovery stream holds them all (replay.py
    puts them back, or counts them lost when it does not hold them any more). The debt is
    written first (a crash leaves a debt, never a silent gap), the consumer is made with deliver policy
    "new" (the server fixes its start and no event falls between), then the debt gets its end.
    """
    owed = await read_debt(js, spec.name)
    debt = owed.merged(floor + 1) if owed is not None else RecoveryDebt(floor + 1)
    await write_debt(js, spec.name, debt)
    info = await js.add_consumer(spec.stream, consumer_config(spec))
    start = int(info.delivered.stream_seq or 0) if info.delivered is not None else 0
    await write_debt(js, spec.name, RecoveryDebt(debt.first, start))
    log.warning(
        "consumer %s is missing; recreated after stream sequence %d, its events %d..%d are put back "
        "from the recovery stream",
        spec.name,
        start,
        debt.first,
        start,
    )
    return info


async def delete_consumer(js: JetStreamContext, name: str, *, stream: str = STREAM) -> bool:
    """Remove a Webhook's consumer (and its recorded floor and recovery debt: a Webhook made again later
    starts anew); False if it was already gone."""
    with contextlib.suppress(Exception):  # no bucket yet, or NATS away: the floor is only a hint
        await forget_floor(js, name)
        await forget_debt(js, name)
    try:
        return await js.delete_consumer(stream, name)
    except NotFoundError:
        return False


def own_metadata(config: api.ConsumerConfig) -> dict[str, str]:
    """Metadata hookline wrote (the server adds `_nats.*` keys of its own on every update)."""
    return {k: v for k, v in (config.metadata or {}).items() if not k.startswith("_nats.")}


def pending_of(info: api.ConsumerInfo) -> int:
    """Events not yet delivered plus those delivered but not acknowledged (in flight or retrying)."""
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
