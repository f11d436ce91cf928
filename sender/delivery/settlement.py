"""The settlement decision: what to do with the events one request carried, given how it ended.

Pure (no clock, no I/O, no NATS): the engine passes the outcome, each event's attempt number and
the time it entered the stream, the current time and the retry policy, and executes the answer. One
request carries one event (no batch) or a batch; either way the answer is one `Decision` per event
plus what concerns the whole sender:

- 2xx: ack every event.
- 410 Gone: dead-letter every event (reason `gone`) and stop the Webhook (`stop_cause` "gone").
- a destination the SSRF policy refuses: dead-letter every event (reason `blocked`).
- anything else: retry the events together after one delay (the Standard Webhooks schedule for the
  batch's highest attempt number, jittered once, or the Retry-After when longer), so a failed batch
  comes back as the same events; an event past `maxAttempts`, or that would be older than the maximum
  age at the retry, is dead-lettered on its own, with the request's answer.
- 429/503 with a Retry-After: also pause every request of this sender (`pause_all` seconds).
- any failure once only failures were seen for `spec.delivery.disableAfter` (the circuit breaker,
  counted from `failing_since`, this attempt included): also stop the Webhook (`stop_cause`
  "disabled"), which a 410 would have stopped as well; the breaker's cause is the one reported.

For a single event it is what tests/test_retry.py holds it to (the one-event retry policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hookline.sender.delivery.retry import Decision, DecisionKind, RetryPolicy, parse_retry_after, retry_delay
from hookline.sender.model.outcomes import (
    DISABLED_CAUSE,
    GONE_CAUSE,
    AttemptKind,
    AttemptOutcome,
    DeadLetterReason,
)

__all__ = ["Carried", "Settlement", "settle"]


@dataclass(slots=True)
class Carried:
    """One event a request carried: its attempt number (1-based: 1 + the attempts receivers failed
    before, ledger.py; never JetStream's delivery count) and when it entered the stream (Unix
    seconds; the age bound counts from there). Not frozen: one is made per event a request carried,
    and a frozen dataclass's __init__ costs twice as much."""

    attempt: int
    stored_at: float


@dataclass(frozen=True)
class Settlement:
    """One decision per carried event (same order), and what the whole sender does."""

    decisions: tuple[Decision, ...]
    pause_all: float | None = None  # Retry-After on 429/503: every request of this sender waits
    # GONE_CAUSE (410) or DISABLED_CAUSE (the circuit breaker): stop pulling, record it on the consumer
    stop_cause: str | None = None

    @property
    def stop_gone(self) -> bool:
        """Whether the Webhook stops (outcomes.GoneState.gone, whichever the cause)."""
        return self.stop_cause is not None

    def of(self, kind: DecisionKind) -> list[int]:
        """Indexes of the events whose decision is `kind`."""
        return [i for i, decision in enumerate(self.decisions) if decision.kind is kind]

    @property
    def retry_delay(self) -> float | None:
        """The one delay of the retried events (None when none is retried)."""
        for decision in self.decisions:
            if decision.kind is DecisionKind.RETRY:
                return decision.delay
        return None


_ACK = Decision.ack()
_GONE = Decision.gone()
_BLOCKED = Decision.dead_letter(DeadLetterReason.BLOCKED)
_MAX_ATTEMPTS = Decision.dead_letter(DeadLetterReason.MAX_ATTEMPTS)
_MAX_AGE = Decision.dead_letter(DeadLetterReason.MAX_AGE)
_ACK_ONE = Settlement((_ACK,))  # the common case, made once


def settle(
    outcome: AttemptOutcome,
    carried: Sequence[Carried],
    now: float,
    policy: RetryPolicy,
    retry_after: str | float | None = None,
    *,
    failing_since: float | None = None,
    disable_after_seconds: float | None = None,
) -> Settlement:
    """The settlement of one request that carried `carried` and ended with `outcome`.

    `failing_since`: since when only failures were seen (this attempt counted); with
    `disable_after_seconds` (spec.delivery.disableAfter) it decides the circuit breaker.
    """
    if not carried:
        raise ValueError("a request carries at least one event")
    count = len(carried)
    if outcome.succeeded:
        return _ACK_ONE if count == 1 else Settlement((_ACK,) * count)
    stop = _stop_cause(outcome, now, failing_since, disable_after_seconds)
    if outcome.gone:
        return Settlement((_GONE,) * count, stop_cause=stop)
    if outcome.kind is AttemptKind.BLOCKED:
        return Settlement((_BLOCKED,) * count, stop_cause=stop)
    attempt = max(c.attempt for c in carried)
    delay = retry_delay(attempt, policy)
    pause_all: float | None = None
    if outcome.throttled:
        wait = parse_retry_after(retry_after, now)
        if wait is not None:
            pause_all = min(wait, policy.retry_after_cap_seconds)
            delay = max(delay, pause_all)
    retry = Decision.retry(delay, backoff_all=pause_all)
    decisions = []
    for c in carried:
        if c.attempt >= policy.max_attempts:
            decisions.append(_MAX_ATTEMPTS)
        elif now + delay - c.stored_at > policy.max_age_seconds:
            decisions.append(_MAX_AGE)
        else:
            decisions.append(retry)
    retried = any(d is retry for d in decisions)
    return Settlement(tuple(decisions), pause_all=pause_all if retried else None, stop_cause=stop)


def _stop_cause(
    outcome: AttemptOutcome, now: float, failing_since: float | None, disable_after_seconds: float | None
) -> str | None:
    """Why a failed request stops the Webhook: the circuit breaker first, then a 410; None: it goes on."""
    if disable_after_seconds is None or failing_since is None or now - failing_since < disable_after_seconds:
        return GONE_CAUSE if outcome.gone else None
    return DISABLED_CAUSE
