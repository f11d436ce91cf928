"""What one delivery attempt came to, and whether a Webhook is stopped: the outcome types.

Pure values shared by the delivery engine (which makes them), the bus (which records a stop on the
consumer and outcomes in dead letters and the attempt log) and the operator (which shows a stop).
The decisions taken from them are `delivery.retry` and `delivery.settlement`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class AttemptKind(StrEnum):
    """How one HTTP attempt ended; the values are the `outcome` label of hookline_delivery_attempts_total."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    BLOCKED = "blocked"


class DeadLetterReason(StrEnum):
    """Why an event left the retry loop; the `reason` label of hookline_dead_letters_total."""

    MAX_ATTEMPTS = "max_attempts"
    MAX_AGE = "max_age"
    GONE = "gone"
    BLOCKED = "blocked"
    # Moved aside by the operator: the Webhook was stuck while the shared stream filled, or over its
    # backlog cap (operator/rules/backlog.py); no delivery was attempted for it then.
    BACKLOG_LIMIT = "backlog_limit"


@dataclass(frozen=True)
class AttemptOutcome:
    """One attempt, classified. `detail` is what a dead letter and a log line show (no URL, no secret)."""

    kind: AttemptKind
    status: int | None = None
    detail: str = ""
    gone: bool = False  # 410: the receiver asks us to stop for good
    throttled: bool = False  # 429/503: a Retry-After header applies to the whole sender
    client_error: bool = False  # other 4xx: retried as Standard Webhooks asks, but likely a receiver bug

    @property
    def succeeded(self) -> bool:
        return self.kind is AttemptKind.SUCCESS


GONE_CAUSE = "gone"
DISABLED_CAUSE = "disabled"


def url_digest(url: str) -> str:
    """A stable fingerprint of a Webhook URL, stored instead of the URL (which may carry a token)."""
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class GoneState:
    """Whether the receiver answered 410 Gone, and at which URL. Once gone, nothing is delivered
    until someone resumes the Webhook; the state is kept on its JetStream consumer (bus/stoprecord.py).

    The engine sets hookline_webhook_gone to `metric_value`; the operator shows it as the Delivering
    condition (operator/rules/delivery.py).
    Events not yet attempted stay in the consumer (not lost).
    """

    gone: bool = False
    since: float | None = None
    event_id: str | None = None
    url_sha256: str | None = None  # url_digest of the URL that answered 410
    cause: str = "gone"  # GONE_CAUSE: the receiver said 410; DISABLED_CAUSE: spec.delivery.disableAfter

    def mark(
        self, now: float, event_id: str | None = None, url: str | None = None, cause: str = "gone"
    ) -> GoneState:
        """The state after a 410 (or the circuit breaker); the first stop is the one reported."""
        if self.gone:
            return self
        digest = url_digest(url) if url is not None else None
        return GoneState(gone=True, since=now, event_id=event_id, url_sha256=digest, cause=cause)

    @property
    def disabled(self) -> bool:
        return self.gone and self.cause == DISABLED_CAUSE

    def answered_by(self, url: str) -> bool:
        """Whether the stop concerns `url` (a Webhook moved to another URL should resume)."""
        return self.gone and self.url_sha256 == url_digest(url)

    @property
    def metric_value(self) -> int:
        return 1 if self.gone else 0


class LossReason(StrEnum):
    """Why events a Webhook was owed could not be put back after its consumer was deleted outside
    hookline; the `reason` label of hookline_events_lost_total (sender/bus/replay.py)."""

    WINDOW_PASSED = "window_passed"  # the recovery window no longer held them
    NO_RECOVERY_STREAM = "no_recovery_stream"  # there was no recovery stream to put them back from
