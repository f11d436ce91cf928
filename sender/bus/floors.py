"""The consumer floors: how far each Webhook's consumer got (its ack floor), kept in the key-value
bucket `hookline-consumer-floors`, so that a lost consumer is recreated from there
(layout.ensure_consumer) instead of from "new"."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from hookline.sender.bus.buckets import using as using_bucket
from hookline.sender.bus.connection import BusUnavailable
from hookline.sender.bus.replicas import DEFAULT_REPLICAS, check_replicas, ensure_direct, ensure_replicas

# Floors of the Webhooks' consumers (see ensure_consumer): where to start a lost consumer again.
FLOORS_BUCKET = "hookline-consumer-floors"


def floor_of(info: api.ConsumerInfo) -> int:
    """The stream sequence below which the consumer acked everything (pure)."""
    floor = info.ack_floor
    return int(floor.stream_seq or 0) if floor is not None else 0


def _floors(js: JetStreamContext, *, create: bool) -> contextlib.AbstractAsyncContextManager[KeyValue | None]:
    """The floors bucket for one use, its handle kept per connection (buckets.py); None: no bucket
    (only without `create`)."""
    return using_bucket(js, FLOORS_BUCKET, lambda: _open_floors(js, create=create))


async def _open_floors(
    js: JetStreamContext, *, create: bool, replicas: int = DEFAULT_REPLICAS
) -> KeyValue | None:
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
                direct=True,  # per-key reads (replicas.ensure_direct)
            )
        )


async def ensure_floors_bucket(js: JetStreamContext, replicas: int = DEFAULT_REPLICAS) -> None:
    """Create the floors bucket with `replicas`, or move an existing one to them (ingest, at start)."""
    await _open_floors(js, create=True, replicas=replicas)
    await ensure_replicas(js, f"KV_{FLOORS_BUCKET}", replicas)
    await ensure_direct(js, f"KV_{FLOORS_BUCKET}")


async def record_floor(js: JetStreamContext, consumer: str, floor: int) -> None:
    """Remember how far a consumer got, so that a lost consumer can be recreated from there."""
    async with _floors(js, create=True) as kv:
        assert kv is not None
        await kv.put(consumer, str(int(floor)).encode())


async def read_floor(js: JetStreamContext, consumer: str) -> int | None:
    """The recorded floor of a consumer; None when there is none (a new Webhook).

    When NATS cannot say (a timeout under load), this raises BusUnavailable instead of answering
    None: a lost consumer made again from "new" would silently skip every event the stream holds
    for it, so the caller must try again later rather than guess.
    """
    try:
        async with _floors(js, create=False) as kv:
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
    async with _floors(js, create=False) as kv:
        if kv is not None:
            with contextlib.suppress(KeyNotFoundError):
                await kv.purge(consumer)


# A lost consumer recreated under interest retention owes its Webhook the events between its last
# floor and its recreation (replay.py puts them back from the recovery stream). The debt is written
# before the consumer is made again and removed only once paid, so a crash in between repeats the
# replay (duplicates, never a loss). Kept beside the floor: it must outlive the consumer.
DEBT_PREFIX = "recovery."


@dataclass(frozen=True)
class RecoveryDebt:
    """Stream sequences `first`..`last` (both included) a recreated consumer did not get; `last` is None
    while the consumer is being made again (its start is then not known yet)."""

    first: int
    last: int | None = None

    def to_bytes(self) -> bytes:
        return f"{self.first} {'' if self.last is None else self.last}".strip().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RecoveryDebt | None:
        parts = data.decode(errors="replace").split()
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            return None
        if len(numbers) == 1:
            return cls(numbers[0])
        if len(numbers) == 2:
            return cls(numbers[0], numbers[1])
        return None

    def merged(self, first: int) -> RecoveryDebt:
        """The debt after another loss from `first` on: the older unpaid part is kept."""
        return RecoveryDebt(min(self.first, first))


async def read_debt(js: JetStreamContext, consumer: str) -> RecoveryDebt | None:
    """What a recreated consumer is still owed; None when nothing (raises BusUnavailable when NATS
    cannot say: a debt taken for paid would be a silent loss)."""
    try:
        async with _floors(js, create=False) as kv:
            if kv is None:
                return None
            entry = await kv.get(DEBT_PREFIX + consumer)
    except KeyNotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusUnavailable(
            f"consumer {consumer}: its recovery record cannot be read ({str(exc) or type(exc).__name__})"
        ) from exc
    return RecoveryDebt.from_bytes(entry.value or b"")


async def write_debt(js: JetStreamContext, consumer: str, debt: RecoveryDebt) -> None:
    async with _floors(js, create=True) as kv:
        assert kv is not None
        await kv.put(DEBT_PREFIX + consumer, debt.to_bytes())


async def forget_debt(js: JetStreamContext, consumer: str) -> None:
    async with _floors(js, create=False) as kv:
        if kv is not None:
            with contextlib.suppress(KeyNotFoundError):
                await kv.purge(DEBT_PREFIX + consumer)
