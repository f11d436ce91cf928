"""Delivery decisions: what the engine does with an event after one HTTP attempt.

Pure functions only (no clock, no I/O): the engine passes the attempt number, the times and a random
source, so every branch is testable. The schedule follows the Standard Webhooks recommendation
(immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, ...) with +-20 % jitter so that a receiver
coming back is not hit by every retry at the same instant. Every non-2xx answer is retried, as that
specification asks; 410 Gone stops the Webhook, and a destination refused by the SSRF policy is
dead-lettered at once because retrying cannot change the answer. What to do with the events of
one request after its outcome is `settlement.settle` (one event or a batch alike).
"""

from __future__ import annotations

import email.utils
import functools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hookline.sender.model.config import DEFAULT_MAX_AGE_SECONDS
from hookline.sender.model.outcomes import AttemptKind, AttemptOutcome, DeadLetterReason
from hookline.sender.transport.errors import BlockedDestination, InvalidURL, RequestTimeout, SafeHTTPError

__all__ = [
    "DEFAULT_MAX_AGE_SECONDS",
    "RETRY_AFTER_CAP_SECONDS",
    "SCHEDULE_SECONDS",
    "Decision",
    "DecisionKind",
    "RetryPolicy",
    "classify",
    "parse_retry_after",
    "retry_delay",
]

# Delay before attempt n+1 after attempt n failed (index n); the last entry repeats.
SCHEDULE_SECONDS: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
# A receiver may ask for a long pause; longer than this is treated as this (it still gets retried).
RETRY_AFTER_CAP_SECONDS = 3600.0
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_JITTER = 0.2

_THROTTLE_STATUSES = frozenset({429, 503})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class DecisionKind(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    GONE = "gone"


@dataclass(frozen=True)
class Decision:
    """What the engine does next with the message.

    ack: acknowledge. retry: NAK with `delay` seconds. dead_letter: publish a dead letter with `reason`,
    then ack. gone: dead-letter with reason `gone`, ack, stop pulling, set hookline_webhook_gone=1.
    `backoff_all`, when set, pauses every worker of this sender for that many seconds (Retry-After).
    """

    kind: DecisionKind
    delay: float = 0.0
    reason: DeadLetterReason | None = None
    backoff_all: float | None = None

    @classmethod
    def ack(cls) -> Decision:
        return cls(DecisionKind.ACK)

    @classmethod
    def retry(cls, delay: float, backoff_all: float | None = None) -> Decision:
        return cls(DecisionKind.RETRY, delay=delay, backoff_all=backoff_all)

    @classmethod
    def dead_letter(cls, reason: DeadLetterReason) -> Decision:
        return cls(DecisionKind.DEAD_LETTER, reason=reason)

    @classmethod
    def gone(cls) -> Decision:
        return cls(DecisionKind.GONE, reason=DeadLetterReason.GONE)


def _spec_field(delivery: Any, snake: str, camel: str) -> Any:
    """Read a field from a pydantic model (snake_case attribute) or a CRD-shaped dict (camelCase key)."""
    if delivery is None:
        return None
    if isinstance(delivery, Mapping):
        return delivery.get(camel, delivery.get(snake))
    return getattr(delivery, snake, getattr(delivery, camel, None))


@dataclass(frozen=True)
class RetryPolicy:
    """The bounds of one Webhook's retries. `random` returns a float in [0, 1) (injectable for tests)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    schedule: tuple[float, ...] = SCHEDULE_SECONDS
    jitter: float = DEFAULT_JITTER
    retry_after_cap_seconds: float = RETRY_AFTER_CAP_SECONDS
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"spec.delivery.maxAttempts must be at least 1, got {self.max_attempts}")
        if self.max_age_seconds <= 0:
            raise ValueError(f"the maximum event age must be positive, got {self.max_age_seconds}")
        if not self.schedule or any(s < 0 for s in self.schedule):
            raise ValueError("the retry schedule needs at least one delay and no negative delays")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"retry jitter must be in [0, 1), got {self.jitter}")

    @classmethod
    def from_spec(cls, delivery: Any, **overrides: Any) -> RetryPolicy:
        """From `spec.delivery` (WebhookSpec model or dict); `maxAgeSeconds` is honoured when present.

        Pass `max_age_seconds` below the event stream's retention: an event NAKed past it is gone.
        """
        values: dict[str, Any] = {}
        max_attempts = _spec_field(delivery, "max_attempts", "maxAttempts")
        if max_attempts is not None:
            values["max_attempts"] = int(max_attempts)
        max_age = _spec_field(delivery, "max_age_seconds", "maxAgeSeconds")
        if max_age is not None:
            values["max_age_seconds"] = float(max_age)
        values.update(overrides)
        return cls(**values)


def retry_delay(attempt: int, policy: RetryPolicy) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), jittered by +-policy.jitter."""
    base = policy.schedule[min(max(attempt, 1), len(policy.schedule) - 1)]
    if base <= 0:
        return 0.0
    factor = 1.0 + policy.jitter * (2.0 * policy.random() - 1.0)
    return base * factor


def parse_retry_after(value: str | float | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3).

    `now` is Unix time (for the date form). Past dates give 0; anything unparseable gives None.
    """
    if value is None:
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value)) if math.isfinite(value) else None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _describe_error(error: BaseException) -> str:
    if isinstance(error, SafeHTTPError):
        return error.reason  # short, and without the host
    text = str(error).strip()
    name = type(error).__name__
    return f"{name}: {text}" if text else name


@functools.lru_cache(maxsize=100)
def _success(status: int) -> AttemptOutcome:
    """The outcome of a 2xx, made once per status (outcomes are frozen): every delivery has one."""
    return AttemptOutcome(AttemptKind.SUCCESS, status=status, detail=f"HTTP {status}")


def classify(status: int | None, error: BaseException | None = None) -> AttemptOutcome:
    """Classify an attempt from the response status, or from the exception when there was no response.

    Errors of the SSRF-safe client: BlockedDestination and InvalidURL cannot succeed on a retry
    (blocked); RequestTimeout is a timeout; any other (refused, reset, TLS, redirect) a connection error.
    """
    if error is not None:
        if isinstance(error, BlockedDestination | InvalidURL):
            return AttemptOutcome(AttemptKind.BLOCKED, detail=f"blocked: {error}")
        if isinstance(error, RequestTimeout | TimeoutError):
            return AttemptOutcome(AttemptKind.TIMEOUT, detail="timeout: no response within the timeout")
        return AttemptOutcome(
            AttemptKind.CONNECTION_ERROR, detail=f"connection error: {_describe_error(error)}"
        )
    if status is None:
        raise ValueError("classify needs a status code or an error")
    if 200 <= status < 300:
        return _success(status)
    if status == 410:
        return AttemptOutcome(
            AttemptKind.HTTP_ERROR,
            status=status,
            detail="HTTP 410 Gone: the receiver asked to stop",
            gone=True,
        )
    throttled = status in _THROTTLE_STATUSES
    client_error = 400 <= status < 500 and status not in _TRANSIENT_STATUSES
    detail = f"HTTP {status}"
    if client_error:
        detail += " (client error: check the URL and the receiver; retried as Standard Webhooks asks)"
    return AttemptOutcome(
        AttemptKind.HTTP_ERROR, status=status, detail=detail, throttled=throttled, client_error=client_error
    )
