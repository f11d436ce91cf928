"""The settlement decision (sender/delivery/settlement.py): one test per outcome, for one event and a batch,
and the single-event policy in test_retry.py. Pure: no NATS, no HTTP, no clock."""

from __future__ import annotations

import itertools

import pytest

from hookline.sender.delivery.retry import Decision, DecisionKind, RetryPolicy, classify
from hookline.sender.delivery.settlement import Carried, Settlement, settle
from hookline.sender.model.outcomes import DeadLetterReason
from hookline.sender.transport.errors import BlockedDestination, ConnectionFailed, RequestTimeout

NOW = 1_750_000_000.0
DAY = 86400.0


def policy(max_attempts: int = 10, max_age: float = 3 * DAY, random: float = 0.5) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, max_age_seconds=max_age, random=lambda: random)


def batch(*attempts: int, age: float = 0.0) -> list[Carried]:
    return [Carried(attempt, NOW - age) for attempt in attempts]


def test_a_2xx_acks_every_event_of_the_batch():
    result = settle(classify(200), batch(1, 1, 3), NOW, policy())
    assert result == Settlement((Decision.ack(),) * 3)
    assert result.of(DecisionKind.ACK) == [0, 1, 2] and result.retry_delay is None
    assert not result.stop_gone and result.pause_all is None


def test_a_failure_retries_every_event_together_after_one_delay():
    result = settle(classify(500), batch(1, 1, 1), NOW, policy())
    assert result.of(DecisionKind.RETRY) == [0, 1, 2]
    assert {d.delay for d in result.decisions} == {5.0}  # the schedule's second step, jitter at midpoint
    assert result.retry_delay == 5.0 and result.pause_all is None and not result.stop_gone


def test_the_batch_delay_follows_its_highest_attempt_and_is_jittered_once():
    draws = itertools.count()
    jittery = RetryPolicy(random=lambda: (next(draws) % 10) / 10)  # a new value on every draw
    result = settle(classify(503), batch(1, 3, 2), NOW, jittery)
    assert len({d.delay for d in result.decisions}) == 1  # the events come back together
    assert 1440.0 <= result.retry_delay <= 2160.0  # after attempt 3: 30 min +-20 %
    assert next(draws) == 1  # exactly one random draw for the whole batch


@pytest.mark.parametrize(
    "error", [RequestTimeout("timeout"), ConnectionFailed("refused"), TimeoutError()], ids=type
)
def test_timeouts_and_connection_errors_retry(error):
    result = settle(classify(None, error), batch(2, 2), NOW, policy())
    assert result.of(DecisionKind.RETRY) == [0, 1] and result.retry_delay == 300.0


def test_events_past_max_attempts_are_dead_lettered_alone_and_the_rest_retried():
    result = settle(classify(500), batch(3, 1, 3), NOW, policy(max_attempts=3))
    assert result.of(DecisionKind.DEAD_LETTER) == [0, 2]
    assert {result.decisions[i].reason for i in (0, 2)} == {DeadLetterReason.MAX_ATTEMPTS}
    assert result.of(DecisionKind.RETRY) == [1]


def test_an_event_too_old_for_the_retry_is_dead_lettered_for_max_age():
    carried = [Carried(1, NOW - 10.0), Carried(1, NOW - DAY + 1.0)]  # the second passes a day in 5 s
    result = settle(classify(500), carried, NOW, policy(max_age=DAY))
    assert result.decisions[0].kind is DecisionKind.RETRY
    assert result.decisions[1] == Decision.dead_letter(DeadLetterReason.MAX_AGE)


def test_410_dead_letters_every_event_as_gone_and_stops_the_webhook():
    result = settle(classify(410), batch(1, 2), NOW, policy())
    assert result.decisions == (Decision.gone(), Decision.gone())
    assert all(d.reason is DeadLetterReason.GONE for d in result.decisions)
    assert result.stop_gone and result.pause_all is None


def test_a_blocked_destination_dead_letters_every_event_at_once():
    result = settle(classify(None, BlockedDestination("10.0.0.1 is private")), batch(1, 1), NOW, policy())
    assert result.decisions == (Decision.dead_letter(DeadLetterReason.BLOCKED),) * 2
    assert not result.stop_gone


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_pauses_all_requests_and_delays_the_batch_at_least_that_long(status):
    result = settle(classify(status), batch(1, 1), NOW, policy(), retry_after="120")
    assert result.pause_all == 120.0
    assert result.retry_delay == 120.0  # longer than the schedule's 5 s
    assert all(d.backoff_all == 120.0 for d in result.decisions)


def test_retry_after_is_capped_and_ignored_on_other_statuses():
    assert settle(classify(429), batch(1), NOW, policy(), retry_after="999999").pause_all == 3600.0
    assert settle(classify(500), batch(1), NOW, policy(), retry_after="120").pause_all is None


def test_no_pause_when_no_event_is_retried():
    result = settle(classify(429), batch(10), NOW, policy(max_attempts=10), retry_after="60")
    assert result.decisions == (Decision.dead_letter(DeadLetterReason.MAX_ATTEMPTS),)
    assert result.pause_all is None


def test_a_request_carries_at_least_one_event():
    with pytest.raises(ValueError, match="at least one event"):
        settle(classify(200), [], NOW, policy())


def test_the_circuit_breaker_stops_once_only_failures_were_seen_for_disable_after():
    def stop(outcome, failing_for):
        since = None if failing_for is None else NOW - failing_for
        result = settle(outcome, batch(1), NOW, policy(), failing_since=since, disable_after_seconds=DAY)
        return result.stop_cause

    assert stop(classify(500), DAY - 1) is None
    assert stop(classify(500), None) is None
    assert stop(classify(500), DAY) == "disabled"
    assert stop(classify(None, ConnectionFailed("refused")), 2 * DAY) == "disabled"
    assert stop(classify(410), 0) == "gone"
    assert stop(classify(410), DAY) == "disabled"  # the breaker's cause is the one reported
    ok = settle(classify(200), batch(1), NOW, policy(), failing_since=None, disable_after_seconds=DAY)
    assert ok.stop_cause is None and not ok.stop_gone
    no_breaker = settle(classify(500), batch(1), NOW, policy(), failing_since=NOW - 9 * DAY)
    assert no_breaker.stop_cause is None
