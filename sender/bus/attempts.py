"""Delivery health: the attempt log and the per-Webhook health report. Pure records and tally here;
the two small NATS adapters at the end.

"Why did my webhook fail?" is answered from two places:
- the attempt log, stream ``HOOKLINE_ATTEMPTS`` on ``hookline.attempts.<ns>.<name>``: every failed
  attempt (time, event id and type, attempt number, status code or error kind, duration, the
  receiver's address, the first 1 KiB of its answer) and one sampled success per
  ``SUCCESS_SAMPLE_SECONDS`` that also counts the successes it stands for. Bounded by age and bytes
  (chart values); `hookline attempts` reads it.
- the health report, one key per Webhook in the KV bucket ``HOOKLINE_HEALTH``: counters over a recent
  window, last success and failure, pending events. A sender writes it only when something changed
  (at most every watch interval, nothing while idle); the operator watches the bucket and mirrors it
  into ``status.delivery`` at a bounded rate. The sender never calls the Kubernetes API.

Neither ever holds the Webhook's URL path or query (tokens live there), a header value or a key: the
receiver's address is its scheme, host and port.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from hookline.sender import bus
from hookline.sender.model.events import encode_token
from hookline.sender.model.outcomes import AttemptOutcome, GoneState

ATTEMPTS_STREAM = "HOOKLINE_ATTEMPTS"
ATTEMPTS_SUBJECT_PREFIX = "hookline.attempts"
HEALTH_BUCKET = "HOOKLINE_HEALTH"
DEFAULT_ATTEMPTS_MAX_AGE_SECONDS = 72 * 3600.0
DEFAULT_ATTEMPTS_MAX_BYTES = 1024**3
RESPONSE_EXCERPT_BYTES = 1024
LAST_FAILURE_EXCERPT = 120  # characters of the receiver's answer in status.delivery.lastFailure
SUCCESS_SAMPLE_SECONDS = 10.0
WINDOW_SECONDS = 300
BUCKET_SECONDS = 10
BACKLOG_TREND_SECONDS = 60.0


def attempts_subject(namespace: str, name: str) -> str:
    return f"{ATTEMPTS_SUBJECT_PREFIX}.{encode_token(namespace)}.{encode_token(name)}"


def health_key(namespace: str, name: str) -> str:
    """The Webhook's key in the health bucket."""
    return f"{encode_token(namespace)}.{encode_token(name)}"


def receiver_address(url: str) -> str:
    """``scheme://host[:port]`` of the receiver: enough to tell which server answered, and nothing
    from the path or query, where customers put tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (an ellipsis says it was cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as `hookline attempts` shows it."""

    at: float
    event_id: str
    event_type: str
    attempt: int
    ok: bool
    outcome: str  # "HTTP 500", "timeout", "connection error", ...
    status_code: int | None
    error_kind: str | None  # the AttemptKind when there was no HTTP answer
    duration_ms: int
    receiver: str
    response: str = ""  # the first 1 KiB of the receiver's answer
    successes: int = 1  # a sampled success stands for this many (itself included)
    # A batch (spec.delivery.batch): event_id is the batch id (its webhook-id), these are its events.
    events: int = 1
    event_ids: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> AttemptRecord:
        return cls(**json.loads(data))

    def to_json(self) -> dict[str, Any]:
        """camelCase, the time in RFC 3339: what `hookline attempts -o json` and dev mode show."""
        fields = {**asdict(self), "at": iso(self.at)}
        return {_camel(k): v for k, v in fields.items()}


def attempt_record(
    *,
    at: float,
    event_id: str,
    event_type: str,
    attempt: int,
    outcome: AttemptOutcome,
    duration: float,
    url: str,
    response: bytes = b"",
    successes: int = 1,
    event_ids: Sequence[str] = (),
) -> AttemptRecord:
    """One request's record; for a batch `event_id` is the batch id and `event_ids` its events."""
    summary = outcome.detail.split(" (", 1)[0] if outcome.status else outcome.kind.value.replace("_", " ")
    return AttemptRecord(
        at=at,
        event_id=event_id,
        event_type=event_type,
        attempt=attempt,
        ok=outcome.succeeded,
        outcome=summary,
        status_code=outcome.status,
        error_kind=None if outcome.status else outcome.kind.value,
        duration_ms=round(duration * 1000),
        receiver=receiver_address(url),
        response=response[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace"),
        successes=successes,
        events=len(event_ids) or 1,
        event_ids=list(event_ids),
    )


@dataclass(frozen=True)
class HealthReport:
    """What a sender tells the operator about one Webhook; camelCase keys of ``status.delivery``."""

    namespace: str
    name: str
    reported_at: float = field(compare=False)  # two reports that differ only in time are the same
    recent_attempts: int
    recent_failures: int
    window_seconds: int
    pending: int
    pending_growth_per_minute: int | None
    dead_letters: int
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure: str | None = None
    failing_since: float | None = None
    consumer_missing: bool = False
    # The 410 Gone / circuit-breaker stop as the sender's consumer records it (retry.GoneState), so
    # the operator needs no NATS call per Webhook to show it.
    gone: bool = False
    gone_since: float | None = None
    gone_event_id: str | None = None
    gone_url_sha256: str | None = None
    gone_cause: str = "gone"

    def gone_state(self) -> GoneState:
        return GoneState(
            gone=self.gone,
            since=self.gone_since,
            event_id=self.gone_event_id,
            url_sha256=self.gone_url_sha256,
            cause=self.gone_cause,
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HealthReport:
        return cls(**json.loads(data))

    def same_as(self, other: HealthReport | None) -> bool:
        """Equal but for the time of the report (``==`` leaves reported_at out): the operator asks
        this of every Webhook's report every second, so it builds nothing."""
        return other is not None and self == other

    def delivery_status(self) -> dict[str, Any]:
        """The ``status.delivery`` fields this report sets (hookline.api.DeliveryStatus names)."""

        def when(value: float | None) -> str | None:
            return None if value is None else iso(value)

        return {
            "lastSuccessAt": when(self.last_success_at),
            "lastFailureAt": when(self.last_failure_at),
            "lastFailure": self.last_failure,
            "failingSince": when(self.failing_since),
            "pending": self.pending,
            "pendingGrowthPerMinute": self.pending_growth_per_minute,
            "deadLetters": self.dead_letters,
            "recentAttempts": self.recent_attempts,
            "recentFailures": self.recent_failures,
            "windowSeconds": self.window_seconds,
            "consumerMissing": self.consumer_missing,
            "reportedAt": when(self.reported_at),
        }


@dataclass
class DeliveryTally:
    """Counts one Webhook's attempts in ``BUCKET_SECONDS`` buckets over ``WINDOW_SECONDS``. Pure:
    callers pass the time."""

    namespace: str
    name: str
    window: int = WINDOW_SECONDS
    bucket: int = BUCKET_SECONDS
    _buckets: deque[tuple[int, int, int]] = field(default_factory=deque)  # (bucket start, attempts, failures)
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure: str | None = None
    failing_since: float | None = None
    dead_letters: int = 0
    _pending: deque[tuple[float, int]] = field(default_factory=deque)
    _sampled_at: float = -math.inf
    _unsampled: int = 0

    def record(self, now: float, outcome: AttemptOutcome, response: bytes = b"") -> None:
        start = int(now // self.bucket) * self.bucket
        if self._buckets and self._buckets[-1][0] == start:
            _, attempts, failures = self._buckets.pop()
        else:
            attempts = failures = 0
        failed = not outcome.succeeded
        self._buckets.append((start, attempts + 1, failures + int(failed)))
        self._expire(now)
        if failed:
            self.last_failure_at = now
            excerpt = one_line(response.decode("utf-8", errors="replace"), LAST_FAILURE_EXCERPT)
            detail = outcome.detail.split(" (", 1)[0]
            self.last_failure = f"{detail}: {excerpt}" if excerpt else detail
            if self.failing_since is None:
                self.failing_since = now
        else:
            self.last_success_at = now
            self.failing_since = None

    def restore(self, report: HealthReport) -> None:
        """Carry over what a restart must not forget: since when it fails (the circuit breaker counts
        from there) and the last success and failure."""
        self.last_success_at = report.last_success_at
        self.last_failure_at = report.last_failure_at
        self.last_failure = report.last_failure
        self.failing_since = report.failing_since

    def sample_success(self, now: float) -> int:
        """0 when this success is not recorded; else how many successes its record stands for."""
        self._unsampled += 1
        if now - self._sampled_at < SUCCESS_SAMPLE_SECONDS:
            return 0
        self._sampled_at, count, self._unsampled = now, self._unsampled, 0
        return count

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.window:
            self._buckets.popleft()

    def observe_pending(self, now: float, pending: int) -> None:
        self._pending.append((now, pending))
        while len(self._pending) > 2 and self._pending[1][0] <= now - BACKLOG_TREND_SECONDS:
            self._pending.popleft()

    def report(
        self, now: float, *, consumer_missing: bool = False, gone: GoneState | None = None
    ) -> HealthReport:
        self._expire(now)
        attempts = sum(b[1] for b in self._buckets)
        failures = sum(b[2] for b in self._buckets)
        pending = self._pending[-1][1] if self._pending else 0
        growth = None
        if len(self._pending) >= 2:
            (t0, p0), (t1, p1) = self._pending[0], self._pending[-1]
            if t1 - t0 >= BACKLOG_TREND_SECONDS / 2:
                growth = round((p1 - p0) * 60.0 / (t1 - t0))
        return HealthReport(
            namespace=self.namespace,
            name=self.name,
            reported_at=now,
            recent_attempts=attempts,
            recent_failures=failures,
            window_seconds=self.window,
            pending=pending,
            pending_growth_per_minute=growth,
            dead_letters=self.dead_letters,
            last_success_at=self.last_success_at,
            last_failure_at=self.last_failure_at,
            last_failure=self.last_failure,
            failing_since=self.failing_since,
            consumer_missing=consumer_missing,
            gone=bool(gone and gone.gone),
            gone_since=gone.since if gone and gone.gone else None,
            gone_event_id=gone.event_id if gone and gone.gone else None,
            gone_url_sha256=gone.url_sha256 if gone and gone.gone else None,
            gone_cause=gone.cause if gone and gone.gone else "gone",
        )


# --- NATS adapters ----------------------------------------------------------------------------------------


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
        self._kv: Any = None

    async def ensure(
        self,
        max_age_seconds: float = DEFAULT_ATTEMPTS_MAX_AGE_SECONDS,
        max_bytes: int = DEFAULT_ATTEMPTS_MAX_BYTES,
    ) -> None:
        """Create the stream and the bucket when absent (the operator's settings win when present)."""
        self._kv = await ensure_attempt_log(self.js, max_age_seconds, max_bytes)

    async def previous(self) -> HealthReport | None:
        """The last report of this Webhook (an earlier sender process, another replica)."""
        if self._kv is None:
            self._kv = await health_bucket(self.js)
        try:
            entry = await self._kv.get(self.key)
        except Exception:  # no report yet (KeyNotFoundError), or NATS away: start afresh
            return None
        try:
            return HealthReport.from_bytes(entry.value) if entry.value else None
        except (ValueError, TypeError):
            return None

    async def record(self, record: AttemptRecord) -> None:
        """A core publish into the stream's subject: no round trip per attempt (a lost record is a
        lost log line, never a lost event)."""
        await self.nc.publish(self.subject, record.to_bytes())

    async def report(self, report: HealthReport) -> None:
        if self._kv is None:
            self._kv = await health_bucket(self.js)
        await self._kv.put(self.key, report.to_bytes())


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
            api.KeyValueConfig(bucket=HEALTH_BUCKET, history=1, ttl=7 * 24 * 3600.0, replicas=replicas)
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
    await _attempt_stream(js, max_age_seconds, max_bytes, bus.check_replicas(replicas))
    await bus.ensure_replicas(js, ATTEMPTS_STREAM, replicas)
    await health_bucket(js, replicas)
    await bus.ensure_replicas(js, f"KV_{HEALTH_BUCKET}", replicas)


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
