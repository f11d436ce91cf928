"""The retry policy: Standard Webhooks schedule, bounds, Retry-After, 410 and blocked destinations."""

from __future__ import annotations

import email.utils

import aiohttp
import pytest

from hookline.sender.delivery.retry import (
    Decision,
    DecisionKind,
    RetryPolicy,
    classify,
    parse_retry_after,
    retry_delay,
)
from hookline.sender.delivery.settlement import Carried, settle
from hookline.sender.model.outcomes import AttemptKind, DeadLetterReason, GoneState
from hookline.sender.transport.errors import BlockedDestination, ConnectionFailed, InvalidURL, RequestTimeout

NOW = 1_750_000_000.0
HOUR = 3600.0


def decide(outcome, attempt, first_attempt_at, now, policy, retry_after=None):
    """The decision for one event after its attempt number `attempt` (the engine's single path)."""
    return settle(outcome, [Carried(attempt, first_attempt_at)], now, policy, retry_after).decisions[0]


def fixed(value: float) -> RetryPolicy:
    return RetryPolicy(random=lambda: value)


def test_schedule_is_the_standard_webhooks_one_without_jitter():
    policy = fixed(0.5)  # the midpoint of the jitter range adds nothing
    delays = [retry_delay(attempt, policy) for attempt in range(1, 10)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000]


def test_jitter_stays_within_twenty_percent_either_side():
    low, high = fixed(0.0), fixed(0.999999)
    assert retry_delay(1, low) == pytest.approx(4.0)
    assert retry_delay(1, high) == pytest.approx(6.0, rel=1e-5)
    assert retry_delay(3, low) == pytest.approx(1440.0)
    assert retry_delay(3, high) == pytest.approx(2160.0, rel=1e-5)


def test_jitter_spreads_retries_of_many_events():
    import random

    rng = random.Random(4)
    policy = RetryPolicy(random=rng.random)
    delays = {round(retry_delay(2, policy)) for _ in range(200)}
    assert len(delays) > 50
    assert min(delays) >= 240 and max(delays) <= 360


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_success_and_acked(status):
    outcome = classify(status)
    assert outcome.kind is AttemptKind.SUCCESS
    assert decide(outcome, 1, NOW, NOW, fixed(0.5)) == Decision.ack()


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_failures_are_retried_on_schedule(status):
    outcome = classify(status)
    assert outcome.kind is AttemptKind.HTTP_ERROR and not outcome.client_error
    decision = decide(outcome, 1, NOW, NOW, fixed(0.5))
    assert decision.kind is DecisionKind.RETRY
    assert decision.delay == 5.0
    assert decision.backoff_all is None  # no Retry-After given


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 422, 301, 302])
def test_other_client_errors_are_retried_too_but_flagged(status):
    outcome = classify(status)
    assert decide(outcome, 2, NOW, NOW, fixed(0.5)) == Decision.retry(300.0)
    if 400 <= status < 500:
        assert outcome.client_error
        assert "client error" in outcome.detail and str(status) in outcome.detail


def test_timeout_and_connection_errors_are_retried_with_their_kind():
    timeout = classify(None, TimeoutError())
    assert timeout.kind is AttemptKind.TIMEOUT and timeout.status is None
    refused = classify(None, ConnectionRefusedError(111, "Connection refused"))
    assert refused.kind is AttemptKind.CONNECTION_ERROR
    assert "refused" in refused.detail
    for outcome in (timeout, refused):
        assert decide(outcome, 1, NOW, NOW, fixed(0.5)).kind is DecisionKind.RETRY


def test_aiohttp_errors_are_classified():
    assert classify(None, aiohttp.ServerTimeoutError("read")).kind is AttemptKind.TIMEOUT
    reset = classify(None, aiohttp.ServerDisconnectedError())
    assert reset.kind is AttemptKind.CONNECTION_ERROR and "ServerDisconnectedError" in reset.detail


@pytest.mark.parametrize(
    "error",
    [BlockedDestination("refused to connect to 10.0.0.5: private"), InvalidURL("the URL has no host")],
)
def test_blocked_destination_is_dead_lettered_at_once(error):
    outcome = classify(None, error)
    assert outcome.kind is AttemptKind.BLOCKED
    assert str(error) in outcome.detail
    assert decide(outcome, 1, NOW, NOW, fixed(0.5)) == Decision.dead_letter(DeadLetterReason.BLOCKED)


def test_safe_client_errors_are_classified_without_the_host():
    timeout = classify(None, RequestTimeout("no complete answer from shop.example within 10 s", "timeout"))
    assert timeout.kind is AttemptKind.TIMEOUT
    refused = classify(
        None, ConnectionFailed("request to shop.example failed: refused", "connection refused")
    )
    assert refused.kind is AttemptKind.CONNECTION_ERROR
    assert refused.detail == "connection error: connection refused"


def test_gone_stops_the_webhook():
    outcome = classify(410)
    assert outcome.gone
    decision = decide(outcome, 1, NOW, NOW, fixed(0.5))
    assert decision.kind is DecisionKind.GONE
    assert decision.reason is DeadLetterReason.GONE


def test_last_attempt_goes_to_dead_letters():
    policy = RetryPolicy(max_attempts=3, random=lambda: 0.5)
    assert decide(classify(500), 2, NOW, NOW, policy).kind is DecisionKind.RETRY
    assert decide(classify(500), 3, NOW, NOW, policy) == Decision.dead_letter(DeadLetterReason.MAX_ATTEMPTS)


def test_single_attempt_policy_never_retries():
    policy = RetryPolicy(max_attempts=1)
    assert decide(classify(503), 1, NOW, NOW, policy).reason is DeadLetterReason.MAX_ATTEMPTS


def test_event_too_old_for_another_attempt_is_dead_lettered():
    policy = RetryPolicy(max_attempts=100, max_age_seconds=24 * HOUR, random=lambda: 0.5)
    first = NOW - 20 * HOUR
    # The next delay after attempt 5 is 5 h: 25 h after the first attempt, past the 24 h bound.
    assert decide(classify(500), 5, first, NOW, policy) == Decision.dead_letter(DeadLetterReason.MAX_AGE)
    # After attempt 2 the next is 5 min away: still within the bound.
    assert decide(classify(500), 2, first, NOW, policy).kind is DecisionKind.RETRY


def test_default_schedule_fits_within_the_default_age():
    policy = fixed(0.999999)  # longest jitter
    elapsed = 0.0
    for attempt in range(1, policy.max_attempts):
        decision = decide(classify(500), attempt, NOW, NOW + elapsed, policy)
        assert decision.kind is DecisionKind.RETRY, f"attempt {attempt} dead-lettered early"
        elapsed += decision.delay
    final = decide(classify(500), policy.max_attempts, NOW, NOW + elapsed, policy)
    assert final.reason is DeadLetterReason.MAX_ATTEMPTS


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_pauses_the_whole_sender(status):
    decision = decide(classify(status), 1, NOW, NOW, fixed(0.5), retry_after="120")
    assert decision.kind is DecisionKind.RETRY
    assert decision.backoff_all == 120.0
    assert decision.delay == 120.0  # the event itself waits at least as long


def test_retry_after_http_date_is_honoured():
    header = email.utils.formatdate(NOW + 90, usegmt=True)
    decision = decide(classify(429), 1, NOW, NOW, fixed(0.5), retry_after=header)
    assert decision.backoff_all == pytest.approx(90.0)


def test_retry_after_is_capped_at_an_hour():
    decision = decide(classify(503), 1, NOW, NOW, fixed(0.5), retry_after=str(7 * 24 * 3600))
    assert decision.backoff_all == 3600.0


def test_short_retry_after_does_not_shorten_the_schedule():
    decision = decide(classify(429), 3, NOW, NOW, fixed(0.5), retry_after="2")
    assert decision.backoff_all == 2.0
    assert decision.delay == 1800.0


def test_retry_after_on_other_statuses_is_ignored():
    decision = decide(classify(500), 1, NOW, NOW, fixed(0.5), retry_after="600")
    assert decision.backoff_all is None and decision.delay == 5.0


def test_unparseable_retry_after_falls_back_to_the_schedule():
    decision = decide(classify(429), 1, NOW, NOW, fixed(0.5), retry_after="soon, please")
    assert decision == Decision.retry(5.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("  30 ", 30.0),
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),  # in the past
        ("Sun, 06 Nov 1994 08:49:37", None),  # no zone: not an HTTP-date
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
        (42, 42.0),
    ],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header, NOW) == expected


def test_policy_from_crd_spec_and_model_shapes():
    assert RetryPolicy.from_spec({"maxAttempts": 3, "timeoutSeconds": 10}).max_attempts == 3
    assert RetryPolicy.from_spec({"maxAttempts": 4, "maxAgeSeconds": 600}).max_age_seconds == 600.0
    assert RetryPolicy.from_spec(None).max_attempts == 10

    class Delivery:
        max_attempts = 7

    assert RetryPolicy.from_spec(Delivery(), max_age_seconds=3600).max_age_seconds == 3600.0


def test_bad_policy_names_the_field():
    with pytest.raises(ValueError, match="maxAttempts"):
        RetryPolicy.from_spec({"maxAttempts": 0})


def test_gone_state_reports_the_first_410():
    state = GoneState()
    assert state.metric_value == 0 and not state.gone
    gone = state.mark(NOW, "evt-1", "https://shop.example.com/hook?token=s3cret")
    again = gone.mark(NOW + 60, "evt-2", "https://other.example.com/")
    assert again == gone and gone.event_id == "evt-1"
    assert gone.metric_value == 1 and gone.since == NOW


def test_gone_state_knows_its_url_without_keeping_it():
    url = "https://shop.example.com/hook?token=s3cret"
    gone = GoneState().mark(NOW, "evt-1", url)
    assert gone.answered_by(url)
    assert not gone.answered_by("https://shop.example.com/new-hook")  # spec.url changed: resume
    assert "s3cret" not in repr(gone)
    assert not GoneState().answered_by(url)
