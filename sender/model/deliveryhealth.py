"""Delivery health, pure: one attempt's record, the per-Webhook tally and the health report it makes.

"Why did my webhook fail?" is answered from two places, both written by the sender through
bus/attemptlog.py:
- the attempt log: every failed attempt (time, event id and type, attempt number, status code or
  error kind, duration, the receiver's address, the first 1 KiB of its answer) and one sampled
  success per ``SUCCESS_SAMPLE_SECONDS`` that also counts the successes it stands for
  (`AttemptRecord`); `hookline attempts` reads it.
- the health report, one per Webhook: counters over a recent window, last success and failure,
  pending events (`HealthReport`, made by `DeliveryTally`). The operator mirrors it into
  ``status.delivery`` at a bounded rate.

Neither ever holds the Webhook's URL path or query (tokens live there), a header value or a key: the
receiver's address is its scheme, host and port.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from hookline.sender.model.outcomes import AttemptOutcome, GoneState
from hookline.timestamps import rfc3339

RESPONSE_EXCERPT_BYTES = 1024
LAST_FAILURE_EXCERPT = 120  # characters of the receiver's answer in status.delivery.lastFailure
SUCCESS_SAMPLE_SECONDS = 10.0
WINDOW_SECONDS = 300
BUCKET_SECONDS = 10
BACKLOG_TREND_SECONDS = 60.0
# How long after events were lost (a consumer deleted outside hookline, past the recovery window) the
# Delivering condition says so; status.delivery.eventsLost keeps the count after that.
LOSS_SHOWN_SECONDS = 24 * 3600


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
        fields = {**asdict(self), "at": rfc3339(self.at)}
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
    # The 410 Gone / circuit-breaker stop as the sender's consumer records it (outcomes.GoneState), so
    # the operator needs no NATS call per Webhook to show it.
    gone: bool = False
    gone_since: float | None = None
    gone_event_id: str | None = None
    gone_url_sha256: str | None = None
    gone_cause: str = "gone"
    # Events owed after a lost consumer that could not be put back (cumulative, carried over restarts),
    # and when the last were found lost; `loss_recent` while that is under LOSS_SHOWN_SECONDS ago (its
    # change makes a new report, so the Delivering condition stops saying it in time).
    events_lost: int = 0
    events_lost_at: float | None = None
    loss_recent: bool = False

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
        """A report; fields a newer sender added are left out (the operator may be older)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in known})

    def same_as(self, other: HealthReport | None) -> bool:
        """Equal but for the time of the report (``==`` leaves reported_at out): the operator asks
        this of every Webhook's report every second, so it builds nothing."""
        return other is not None and self == other

    def delivery_status(self) -> dict[str, Any]:
        """The ``status.delivery`` fields this report sets (hookline.api.DeliveryStatus names)."""

        def when(value: float | None) -> str | None:
            return None if value is None else rfc3339(value)

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
            "eventsLost": self.events_lost or None,
            "eventsLostAt": when(self.events_lost_at),
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
    # How far back the pending trend (pendingGrowthPerMinute) looks; tests pass a shorter one.
    backlog_trend_seconds: float = BACKLOG_TREND_SECONDS
    _buckets: deque[tuple[int, int, int]] = field(default_factory=deque)  # (bucket start, attempts, failures)
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure: str | None = None
    failing_since: float | None = None
    dead_letters: int = 0
    _pending: deque[tuple[float, int]] = field(default_factory=deque)
    _sampled_at: float = -math.inf
    _unsampled: int = 0
    events_lost: int = 0
    events_lost_at: float | None = None

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
        self.events_lost = report.events_lost
        self.events_lost_at = report.events_lost_at

    def lost(self, now: float, count: int) -> None:
        """Events the Webhook was owed that cannot be delivered any more (a lost consumer's debt)."""
        if count > 0:
            self.events_lost += count
            self.events_lost_at = now

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
        while len(self._pending) > 2 and self._pending[1][0] <= now - self.backlog_trend_seconds:
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
            if t1 - t0 >= self.backlog_trend_seconds / 2:
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
            events_lost=self.events_lost,
            events_lost_at=self.events_lost_at,
            loss_recent=self.events_lost_at is not None and now - self.events_lost_at < LOSS_SHOWN_SECONDS,
        )
