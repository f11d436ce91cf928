"""The recovery stream: a bounded copy of the events stream, so that a Webhook whose consumer was deleted
behind hookline's back gets the events it had not acknowledged (replay.py puts them back).

Under interest retention the events stream drops an event as soon as no consumer wants it: delete a
Webhook's consumer and the events only it still wanted are gone, and events published before it is
made again are not stored for it at all. `HOOKLINE_EVENTS_RECOVERY` mirrors the events stream with
limits retention for a bounded window (`max_age`, at most `max_bytes`, the oldest dropped first). A
mirror keeps the origin's stream sequences, which the recorded floors use.

The mirror reads through a durable push consumer of its own on the events stream (`hookline_recovery`,
ack policy "flow_control": NATS ADR-60, nats-server >= 2.14), the way NATS supports mirroring an
interest stream: that consumer counts as interest while an event is stored, so every event published
is kept here whoever wants it, and it is acknowledged as the mirror stores. Without it (a plain mirror
with the server's own sourcing consumer) nats-server 2.15.1 purged every undelivered event of the
events stream on a graceful restart (measured: 490 of 600 lost, tests/faults/test_process_faults.py).
If the mirror goes away the consumer expires after `SOURCING_INACTIVE_SECONDS`, so it never holds the
events stream for a mirror that no longer reads. Cost: one more copy of every event for the window
(README, "Retention").

With `--stream-retention limits` the events stream itself keeps every event for the whole retention,
so ingest removes the recovery stream and a lost consumer is made again from its floor there.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError, ServiceUnavailableError

from hookline.sender.bus.replicas import DEFAULT_REPLICAS, check_replicas, ensure_replicas
from hookline.sender.model.config import EVENTS_STREAM

RECOVERY_STREAM = f"{EVENTS_STREAM}_RECOVERY"
# The mirror's durable consumer on the events stream and the subject it delivers on (outside every
# hookline stream's subjects).
SOURCING_CONSUMER = "hookline_recovery"
SOURCING_SUBJECT = "_hookline.recovery.deliver"
SOURCING_HEARTBEAT_SECONDS = 1.0
# A sourcing consumer nobody reads (its mirror deleted by hand) is removed by the server after this long.
SOURCING_INACTIVE_SECONDS = 3600.0
SOURCING_CREATE_TRIES = 40
SOURCING_CREATE_PAUSE_SECONDS = 0.25
# Stream metadata: the first events stream sequence the recovery stream was made in time to copy.
COVERS_FROM_KEY = "hookline.io/covers-from"
DEFAULT_RECOVERY_WINDOW_SECONDS = 3600
DEFAULT_RECOVERY_MAX_BYTES = 1024**3
# The shortest window JetStream handles well (its expiry runs about once a second) and tests use.
MIN_RECOVERY_WINDOW_SECONDS = 1.0


def recovery_stream_config(
    window_seconds: float = DEFAULT_RECOVERY_WINDOW_SECONDS,
    max_bytes: int = DEFAULT_RECOVERY_MAX_BYTES,
    *,
    replicas: int = DEFAULT_REPLICAS,
    covers_from: int = 0,
) -> api.StreamConfig:
    """A mirror of the events stream keeping the last `window_seconds` (at most `max_bytes`, -1: no byte
    limit but the server's; the oldest go first); `covers_from`: the first events stream sequence it
    is sure to get (its consumer was made before it was published)."""
    if window_seconds < MIN_RECOVERY_WINDOW_SECONDS:
        raise ValueError(f"the recovery window must be at least {MIN_RECOVERY_WINDOW_SECONDS:g} s")
    if max_bytes != -1 and max_bytes < 1024 * 1024:
        raise ValueError("the recovery stream's max bytes must be -1 (no limit) or at least 1 MiB")
    return api.StreamConfig(
        name=RECOVERY_STREAM,
        description="hookline: the last events, for Webhooks whose consumer was deleted",
        mirror=api.StreamSource(
            name=EVENTS_STREAM,
            consumer=api.StreamConsumerSource(name=SOURCING_CONSUMER, deliver_subject=SOURCING_SUBJECT),
        ),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_age=float(window_seconds),
        max_bytes=int(max_bytes),
        # A mirror takes no publishes; its duplicate window only has to fit inside max_age.
        duplicate_window=min(float(window_seconds), 120.0),
        num_replicas=check_replicas(replicas),
        metadata={COVERS_FROM_KEY: str(int(covers_from))},
    )


def sourcing_consumer_config() -> api.ConsumerConfig:
    """The mirror's durable push consumer on the events stream: every event, acknowledged by flow
    control; as many replicas as the events stream (made while ingest moves it, a fixed count is
    refused: insufficient resources)."""
    return api.ConsumerConfig(
        name=SOURCING_CONSUMER,
        durable_name=SOURCING_CONSUMER,
        description="hookline: feeds HOOKLINE_EVENTS_RECOVERY",
        deliver_subject=SOURCING_SUBJECT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.FLOW_CONTROL,
        idle_heartbeat=SOURCING_HEARTBEAT_SECONDS,
        inactive_threshold=SOURCING_INACTIVE_SECONDS,
    )


async def ensure_recovery_stream(
    js: JetStreamContext,
    window_seconds: float = DEFAULT_RECOVERY_WINDOW_SECONDS,
    max_bytes: int = DEFAULT_RECOVERY_MAX_BYTES,
    *,
    replicas: int = DEFAULT_REPLICAS,
    update_existing: bool = True,
) -> api.StreamInfo:
    """Create the recovery stream (and its consumer on the events stream, first) if absent; with
    `update_existing` (ingest) bring its window, byte limit and replicas up to date."""
    try:
        await js.consumer_info(EVENTS_STREAM, SOURCING_CONSUMER)
    except NotFoundError:
        await _add_sourcing_consumer(js)

    async def create() -> api.StreamInfo:
        # Its consumer exists now: it gets what the events stream holds and everything published from
        # here on (what the events stream no longer held had been acknowledged by every consumer).
        state = (await js.stream_info(EVENTS_STREAM)).state
        first = int(state.first_seq or 0) if state.messages else int(state.last_seq or 0) + 1
        return await js.add_stream(
            recovery_stream_config(window_seconds, max_bytes, replicas=replicas, covers_from=first)
        )

    try:
        info = await js.stream_info(RECOVERY_STREAM)
    except NotFoundError:
        return await create()
    if not update_existing:
        return info
    wanted = recovery_stream_config(window_seconds, max_bytes, replicas=replicas)
    have = info.config
    if have.mirror is None or have.mirror.consumer != wanted.mirror.consumer:  # type: ignore[union-attr]
        # A mirror's source cannot be changed: one reading another way is made again (copies lost).
        await js.delete_stream(RECOVERY_STREAM)
        return await create()
    if (have.max_age, have.max_bytes, have.duplicate_window) != (
        wanted.max_age,
        wanted.max_bytes,
        wanted.duplicate_window,
    ):
        info = await js.update_stream(
            have.evolve(
                max_age=wanted.max_age, max_bytes=wanted.max_bytes, duplicate_window=wanted.duplicate_window
            )
        )
    if await ensure_replicas(js, RECOVERY_STREAM, replicas):
        info = await js.stream_info(RECOVERY_STREAM)
    return info


async def remove_recovery_stream(js: JetStreamContext) -> bool:
    """Drop the recovery stream and its consumer (limits retention keeps every event in the events
    stream itself); False if there was none."""
    removed = False
    with contextlib.suppress(NotFoundError):
        removed = await js.delete_stream(RECOVERY_STREAM)
    try:
        await js.delete_consumer(EVENTS_STREAM, SOURCING_CONSUMER)
    except NotFoundError:
        return removed
    return True


async def _add_sourcing_consumer(js: JetStreamContext) -> None:
    """Right after ingest moved the events stream to more replicas the server refuses new consumers for
    a moment (503 "insufficient resources", measured ~0.3 s on a 3-node cluster): tried again a while."""
    for _ in range(SOURCING_CREATE_TRIES - 1):
        try:
            await js.add_consumer(EVENTS_STREAM, sourcing_consumer_config())
        except ServiceUnavailableError:
            await asyncio.sleep(SOURCING_CREATE_PAUSE_SECONDS)
        else:
            return
    await js.add_consumer(EVENTS_STREAM, sourcing_consumer_config())


def covers_from(config: api.StreamConfig) -> int:
    """The first stream sequence the recovery stream was made in time for (pure): events before it
    were never copied (its metadata says; 0 when it does not)."""
    try:
        return int((config.metadata or {}).get(COVERS_FROM_KEY, "0"))
    except ValueError:
        return 0
