"""A customer's server misbehaves: every event ingest accepted is still delivered or dead-lettered."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

from harness import Harness, Mode, Webhook, report, wait_until

from hookline.sender.model.outcomes import DeadLetterReason


async def test_receiver_fails_then_recovers_and_gets_every_event_once(harness: Harness):
    receiver = await harness.receiver()
    receiver.then(*[Mode.FAIL] * 10)  # down for its first 10 requests, then fine again
    webhook = await harness.webhook("orders", receiver, maxInFlight=5)
    accepted = await harness.ingest_events(50)
    accounting = await harness.settled(webhook, accepted)
    report("receiver fails then recovers", accounting)
    assert accounting.delivered == 50 and accounting.dead_lettered == 0
    assert accounting.duplicates == 0  # failed attempts are not deliveries
    assert len(receiver.answered_with(500)) == 10


async def test_receiver_hanging_past_the_timeout_is_retried_until_it_answers(harness: Harness):
    receiver = await harness.receiver(mode=Mode.HANG)
    webhook = await harness.webhook("orders", receiver, timeoutSeconds=1, maxInFlight=5)
    accepted = await harness.ingest_events(20)
    sender = webhook.sender
    await wait_until(
        lambda: _at_least(
            sender.metric(harness.http, "hookline_delivery_attempts_total", outcome="timeout"), 5
        ),
        what="the sender gave up on the hung requests",
        diagnostics=harness.diagnostics,
    )
    receiver.set(Mode.OK)
    accounting = await harness.settled(webhook, accepted)
    report("receiver hangs past the timeout", accounting)
    assert accounting.delivered == 20 and accounting.dead_lettered == 0
    assert accounting.duplicates == 0


async def test_events_that_never_get_through_are_dead_lettered_with_their_history(harness: Harness):
    receiver = await harness.receiver(mode=Mode.FAIL)
    webhook = await harness.webhook("orders", receiver, maxAttempts=2)
    accepted = await harness.ingest_events(20)
    accounting = await harness.settled(webhook, accepted)
    report("receiver never recovers (maxAttempts 2)", accounting)
    assert accounting.dead_lettered == 20 and accounting.delivered == 0
    records = await harness.dead_letters(webhook)
    assert len(records) == 20  # each once, although publishing is retried on failure
    for record in records:
        assert record.reason is DeadLetterReason.MAX_ATTEMPTS
        assert record.last_status == 500
        assert record.attempts == 2
        assert record.first_attempt_at < record.last_attempt_at
        assert record.event["recipient"] == "jane@example.com"
    assert len(receiver.attempts) == 40  # exactly maxAttempts each
    sender = webhook.sender
    assert await sender.metric(harness.http, "hookline_deliveries_total", outcome="dead_lettered") == 20
    assert await sender.metric(harness.http, "hookline_dead_letters_total", reason="max_attempts") == 20


async def test_redrive_delivers_dead_letters_once_the_receiver_is_fixed(harness: Harness):
    receiver = await harness.receiver(mode=Mode.FAIL)
    webhook = await harness.webhook("orders", receiver, maxAttempts=1)
    other_receiver = await harness.receiver("other")
    other = await harness.webhook("newsletter", other_receiver)
    accepted = await harness.ingest_events(30)
    assert (await harness.settled(webhook, accepted)).dead_lettered == 30
    await harness.settled(other, accepted)
    receiver.set(Mode.OK)
    code, out, err = await _hookline("redrive", "orders", "-n", "shop", "--nats-url", harness.nats.url)
    assert code == 0, err
    assert "redriven 30/30" in out
    await wait_until(
        lambda: receiver.delivered_ids >= set(accepted),
        what="redriven events delivered",
        diagnostics=harness.diagnostics,
    )
    assert await harness.dead_letters(webhook) == []
    assert other_receiver.successes == 30  # the other Webhook did not get them a second time


async def test_retry_after_on_429_pauses_the_whole_sender(harness: Harness):
    # 4 requests in flight, 50 ms each: about 80 requests/s until the first request gets a 429.
    receiver = await harness.receiver(retry_after="5", delay=0.05)
    receiver.then(Mode.THROTTLE)
    webhook = await harness.webhook("orders", receiver, maxInFlight=4)
    accepted = await harness.ingest_events(200)
    accounting = await harness.settled(webhook, accepted)
    report("429 with Retry-After", accounting)
    assert accounting.delivered == 200 and accounting.duplicates == 0
    throttled = receiver.answered_with(429)[0]
    assert throttled.answered is not None
    # Requests already on their way may land just after the 429; after that, nothing until Retry-After.
    quiet_from, quiet_until = throttled.answered + 1.5, throttled.answered + 5.0 - 0.05
    during = [a for a in receiver.attempts if quiet_from <= a.arrived < quiet_until]
    assert during == [], f"{len(during)} requests arrived while the receiver asked for a pause"
    later = [a for a in receiver.attempts if a.arrived >= quiet_until]
    assert len(later) > 100  # the rest came after the pause, the throttled event among them
    assert throttled.event_id in {a.event_id for a in later}


async def test_gone_stops_deliveries_even_across_a_restart_until_resumed(harness: Harness):
    receiver = await harness.receiver(mode=Mode.GONE)
    webhook = await harness.webhook("orders", receiver, maxInFlight=2)
    accepted = await harness.ingest_events(30)
    sender = webhook.sender
    await wait_until(
        lambda: sender.metric(harness.http, "hookline_webhook_gone"),
        what="hookline_webhook_gone set",
        diagnostics=harness.diagnostics,
    )
    # Every request that got the 410 (at most the two in flight) is a dead letter; the rest wait.
    await wait_until(
        lambda: _settled_or_waiting(harness, webhook, len(accepted)),
        what="each event dead-lettered or kept in the consumer",
        diagnostics=harness.diagnostics,
    )
    attempts_at_gone = len(receiver.attempts)
    assert 1 <= attempts_at_gone <= 2

    # The stop is kept on the consumer: a restarted sender knows it and sends nothing.
    await harness.restart_sender(sender)
    assert await sender.metric(harness.http, "hookline_webhook_gone") == 1
    accepted += await harness.ingest_events(10, prefix="later")
    await wait_until(
        lambda: _waiting(harness, webhook, len(accepted) - attempts_at_gone),
        what="the later events kept in the Webhook's consumer",
        diagnostics=harness.diagnostics,
    )
    await asyncio.sleep(2)  # give a broken sender the chance to send more (nothing must come)
    assert len(receiver.attempts) == attempts_at_gone
    accounting = await harness.account(webhook, accepted, count_waiting=True)
    report("410 Gone, after a sender restart", accounting)
    assert accounting.lost == 0 and accounting.delivered == 0
    assert accounting.dead_lettered == attempts_at_gone
    assert all(r.reason is DeadLetterReason.GONE for r in await harness.dead_letters(webhook))
    assert await sender.metric(harness.http, "hookline_dead_letters_total", reason="gone") == 0  # new process

    # The receiver is back: one command resumes the Webhook and redelivers the events that got the 410.
    receiver.set(Mode.OK)
    code, out, err = await _hookline(
        "redrive", "orders", "-n", "shop", "--resume", "--nats-url", harness.nats.url
    )
    assert code == 0, err
    assert "resumed deliveries of Webhook shop/orders" in out
    assert f"redriven {attempts_at_gone}/{attempts_at_gone}" in out
    accounting = await harness.settled(webhook, accepted)
    report("410 Gone, then resumed and redriven", accounting)
    assert accounting.delivered == len(accepted) and accounting.duplicates == 0
    assert await harness.dead_letters(webhook) == []
    await wait_until(
        lambda: _equals(sender.metric(harness.http, "hookline_webhook_gone"), 0),
        what="hookline_webhook_gone back to 0",
    )


async def _hookline(*argv: str) -> tuple[int, str, str]:
    """Run a `hookline` command as a user would; a hung one is killed rather than outliving the test."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookline.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


async def _settled_or_waiting(harness: Harness, webhook: Webhook, count: int) -> bool:
    return await harness.waiting(webhook) + len(await harness.dead_letters(webhook)) == count


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


async def _waiting(harness: Harness, webhook: Webhook, count: int) -> bool:
    return await harness.waiting(webhook) == count


async def _at_least(value: Awaitable[float], minimum: float) -> bool:
    return await value >= minimum
