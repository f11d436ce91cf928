"""Our own processes fail or stop mid-stream: a SIGKILLed sender, a restarted nats-server, ingest
without NATS, a sender stopped while it waits out a receiver's Retry-After.

Each test counts: every event ingest acknowledged reaches the receiver (nothing lost). Events that
were in flight when a process died may be delivered twice; the count of those duplicates is printed
and bounded by what can be unacknowledged at one moment (the requests in flight, maxInFlight).
"""

from __future__ import annotations

import asyncio

from harness import Harness, Mode, click, report, wait_until

IN_FLIGHT = 10
# Unacknowledged at one instant: requests in flight plus acks not yet flushed to the server.
DUPLICATE_BOUND = 2 * IN_FLIGHT


async def test_sender_killed_mid_stream_and_restarted_loses_nothing(harness: Harness):
    receiver = await harness.receiver(delay=0.02)  # slow enough that the kill lands mid-stream
    webhook = await harness.webhook("orders", receiver, maxInFlight=IN_FLIGHT)
    accepted = await harness.ingest_events(600)
    await wait_until(lambda: receiver.successes >= 100, what="deliveries under way")
    webhook.sender.kill()
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"
    await harness.restart_sender(webhook.sender)
    accounting = await harness.settled(webhook, accepted)
    report("sender SIGKILLed mid-stream", accounting)
    assert accounting.delivered == 600 and accounting.dead_lettered == 0
    assert accounting.duplicates <= DUPLICATE_BOUND


async def test_nats_restarted_mid_stream_loses_nothing(harness: Harness):
    receiver = await harness.receiver(delay=0.02)
    webhook = await harness.webhook("orders", receiver, maxInFlight=IN_FLIGHT)
    accepted = await harness.ingest_events(600)
    await wait_until(lambda: receiver.successes >= 100, what="deliveries under way")
    await harness.restart_nats(down_seconds=1.0)
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the restart: no fault"
    # Acks lost in the outage are redelivered after ack_wait (timeout + 30 s): allow for that.
    accounting = await harness.settled(webhook, accepted, within=240)
    report("nats-server restarted mid-stream", accounting)
    assert accounting.delivered == 600 and accounting.dead_lettered == 0
    assert accounting.duplicates <= DUPLICATE_BOUND


async def test_ingest_answers_503_while_nats_is_down_and_accepts_the_retry(harness: Harness):
    receiver = await harness.receiver()
    webhook = await harness.webhook("orders", receiver, maxInFlight=IN_FLIGHT)
    accepted = await harness.ingest_events(50, prefix="before")
    await harness.settled(webhook, accepted)

    await asyncio.to_thread(harness.nats.stop)
    batch = [click(f"during-{i:03d}") for i in range(50)]
    status, body = await harness.post(batch)
    assert status == 503, body
    assert "retry" in body["error"]

    await asyncio.to_thread(harness.nats.start)
    assert harness.ingest is not None
    await harness.started(harness.ingest)

    async def accepted_now() -> bool:
        status, _ = await harness.post(batch)  # the producer retries the very same batch
        return status == 202

    await wait_until(accepted_now, what="ingest accepts again after NATS is back", interval=1.0)
    accepted += [event["id"] for event in batch]
    accepted += await harness.ingest_events(50, prefix="after")
    accounting = await harness.settled(webhook, accepted, within=240)
    report("ingest while NATS is down", accounting)
    assert accounting.delivered == 150 and accounting.dead_lettered == 0
    assert accounting.duplicates <= DUPLICATE_BOUND


async def test_sigterm_during_a_retry_after_pause_hands_the_waiting_events_back(harness: Harness):
    receiver = await harness.receiver(retry_after="3600")  # "come back in an hour"
    receiver.then(Mode.THROTTLE)
    webhook = await harness.webhook("orders", receiver, maxInFlight=4)
    accepted = await harness.ingest_events(20)
    await wait_until(lambda: receiver.answered_with(429), what="the 429", diagnostics=harness.diagnostics)
    # The workers now hold their next events through the pause; a rollout must not wait an hour.
    assert await asyncio.to_thread(webhook.sender.stop, 60) == 0
    assert len(receiver.delivered_ids) < len(accepted) - 1, "no event was held through the pause"

    webhook.sender.start()  # a fresh replica knows nothing of the pause; the events come back at once
    await harness.started(webhook.sender)
    throttled = receiver.answered_with(429)[0].event_id
    await wait_until(
        lambda: receiver.delivered_ids >= set(accepted) - {throttled},
        what="the held events delivered by the next sender",
        diagnostics=harness.diagnostics,
    )
    accounting = await harness.account(webhook, accepted, count_waiting=True)
    report("SIGTERM during a Retry-After pause", accounting)
    assert accounting.lost == 0 and accounting.duplicates == 0
    assert accounting.waiting == 1  # the throttled event itself: retried after the hour it was asked for
