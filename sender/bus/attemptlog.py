"""The attempt log and the health bucket: where senders put delivery health, and how it is read back.

- the attempt log, stream ``HOOKLINE_ATTEMPTS`` on ``hookline.attempts.<ns>.<name>``: the
  `AttemptRecord`s of sender/model/deliveryhealth.py. Bounded by age and bytes (chart values);
  `hookline attempts` reads it (`read_attempts`).
- the health report, one key per Webhook in the KV bucket ``HOOKLINE_HEALTH``. A sender writes it only
  when something changed (at most every watch interval, nothing while idle); the operator watches the
  bucket and mirrors it into ``status.delivery`` at a bounded rate. The sender never calls the
  Kubernetes API.
"""

from __future__ import annotations

import contextlib
from collections import deque
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from hookline.sender.bus.buckets import using as using_bucket
from hookline.sender.bus.outbox import outbox_of
from hookline.sender.bus.replicas import check_replicas, ensure_direct, ensure_replicas
from hookline.sender.model.deliveryhealth import AttemptRecord, HealthReport
from hookline.sender.model.subjects import encode_token

ATTEMPTS_STREAM = "HOOKLINE_ATTEMPTS"
ATTEMPTS_SUBJECT_PREFIX = "hookline.attempts"
HEALTH_BUCKET = "HOOKLINE_HEALTH"
DEFAULT_ATTEMPTS_MAX_AGE_SECONDS = 72 * 3600.0
DEFAULT_ATTEMPTS_MAX_BYTES = 1024**3


def attempts_subject(namespace: str, name: str) -> str:
    return f"{ATTEMPTS_SUBJECT_PREFIX}.{encode_token(namespace)}.{encode_token(name)}"


def health_key(namespace: str, name: str) -> str:
    """The Webhook's key in the health bucket."""
    return f"{encode_token(namespace)}.{encode_token(name)}"


def attempts_stream_config(max_age_seconds: float, max_bytes: int, replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        name=ATTEMPTS_STREAM,
        subjects=[f"{ATTEMPTS_SUBJECT_PREFIX}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,  # the newest attempts matter most: the oldest make room
        max_age=float(max_age_seconds),
        max_bytes=int(max_bytes),
        num_replicas=replicas,
    )


class AttemptLog:
    """Publishes a Webhook's attempt records and health reports; recording never blocks delivery."""

    def __init__(self, nc: NATS, js: JetStreamContext, namespace: str, name: str) -> None:
        self.nc = nc
        self.js = js
        self.subject = attempts_subject(namespace, name)
        self.key = health_key(namespace, name)

    async def ensure(
        self,
        max_age_seconds: float = DEFAULT_ATTEMPTS_MAX_AGE_SECONDS,
        max_bytes: int = DEFAULT_ATTEMPTS_MAX_BYTES,
    ) -> None:
        """Create the stream and the bucket when absent (the operator's settings win when present)."""
        await ensure_attempt_log(self.js, max_age_seconds, max_bytes)

    def _bucket(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The health bucket for one use, its handle kept per connection (buckets.py)."""
        return using_bucket(self.js, HEALTH_BUCKET, lambda: health_bucket(self.js))

    async def previous(self) -> HealthReport | None:
        """The last report of this Webhook (an earlier sender process, another replica)."""
        try:
            async with self._bucket() as kv:
                entry = await kv.get(self.key)
        except Exception:  # no report yet (KeyNotFoundError), or NATS away: start afresh
            return None
        try:
            return HealthReport.from_bytes(entry.value) if entry.value else None
        except (ValueError, TypeError):
            return None

    async def record(self, record: AttemptRecord) -> None:
        """A core publish into the stream's subject, through the connection's outbox: no round trip
        and no write of its own per attempt (a lost record is a lost log line, never a lost event)."""
        await outbox_of(self.nc).publish(self.subject, record.to_bytes())

    async def report(self, report: HealthReport) -> None:
        async with self._bucket() as kv:
            await kv.put(self.key, report.to_bytes())


async def ensure_attempt_log(
    js: JetStreamContext,
    max_age_seconds: float = DEFAULT_ATTEMPTS_MAX_AGE_SECONDS,
    max_bytes: int = DEFAULT_ATTEMPTS_MAX_BYTES,
) -> Any:
    """The attempt log stream and the health bucket, created when absent (a sender host, once);
    returns the bucket."""
    await _attempt_stream(js, max_age_seconds, max_bytes)
    return await health_bucket(js)


async def health_bucket(js: JetStreamContext, replicas: int = 1) -> Any:
    try:
        return await js.key_value(HEALTH_BUCKET)
    except Exception:  # nats-py raises BucketNotFoundError or NotFoundError by version
        return await js.create_key_value(
            api.KeyValueConfig(
                bucket=HEALTH_BUCKET, history=1, ttl=7 * 24 * 3600.0, replicas=replicas, direct=True
            )
        )


async def _attempt_stream(
    js: JetStreamContext, max_age_seconds: float, max_bytes: int, replicas: int = 1
) -> api.StreamInfo:
    """The attempt log stream, created with these settings when absent (left as it is when present)."""
    try:
        return await js.stream_info(ATTEMPTS_STREAM)
    except NotFoundError:
        return await js.add_stream(attempts_stream_config(max_age_seconds, max_bytes, replicas))


async def ensure_attempt_limits(js: JetStreamContext, max_age_seconds: float, max_bytes: int) -> None:
    """The attempt log's age and size limits (chart values, applied by the operator): created with
    them when absent, changed when they differ. Replicas are ingest's (ensure_attempt_store)."""
    info = await _attempt_stream(js, max_age_seconds, max_bytes)
    have = info.config
    if have.max_age != float(max_age_seconds) or have.max_bytes != int(max_bytes):
        await js.update_stream(have.evolve(max_age=float(max_age_seconds), max_bytes=int(max_bytes)))


async def ensure_attempt_store(
    js: JetStreamContext,
    replicas: int = 1,
    max_age_seconds: float = DEFAULT_ATTEMPTS_MAX_AGE_SECONDS,
    max_bytes: int = DEFAULT_ATTEMPTS_MAX_BYTES,
) -> None:
    """The attempt log and the health bucket with `replicas` (ingest, at start): created when absent,
    moved to `replicas` when present with another number (other settings are left as they are)."""
    await _attempt_stream(js, max_age_seconds, max_bytes, check_replicas(replicas))
    await ensure_replicas(js, ATTEMPTS_STREAM, replicas)
    await health_bucket(js, replicas)
    await ensure_replicas(js, f"KV_{HEALTH_BUCKET}", replicas)
    await ensure_direct(js, f"KV_{HEALTH_BUCKET}")


async def read_attempts(
    js: JetStreamContext,
    namespace: str,
    name: str,
    *,
    since: datetime | None = None,
    failed_only: bool = False,
    limit: int = 1000,
) -> list[AttemptRecord]:
    """The newest ``limit`` records of one Webhook, oldest first, from an ephemeral ordered read."""
    subject = attempts_subject(namespace, name)
    try:
        info = await js.stream_info(ATTEMPTS_STREAM, subjects_filter=subject)
    except NotFoundError:
        return []
    total = (info.state.subjects or {}).get(subject, 0)
    if not total:
        return []
    config: dict[str, Any] = {"inactive_threshold": 30.0}
    if since is not None:
        config["deliver_policy"] = api.DeliverPolicy.BY_START_TIME
        config["opt_start_time"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sub = await js.subscribe(subject, ordered_consumer=True, config=api.ConsumerConfig(**config))
    records: deque[AttemptRecord] = deque(maxlen=limit)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:  # nats-py's TimeoutError: nothing more to read
                break
            record = AttemptRecord.from_bytes(msg.data)
            if not (failed_only and record.ok):
                records.append(record)
            pending = msg.metadata.num_pending if msg.metadata else 0
            if pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return list(records)
