"""A batched Webhook (spec.delivery.batch) when a process dies mid-batch: the sender SIGKILLed, or
nats-server SIGKILLed (no flush of its consumer state), while batches are in flight.

Each test counts events, not requests (the receiver reads a batch body's ids): every event ingest
acknowledged reaches the receiver, none is dead-lettered. The events a death can deliver twice are
those of requests in flight and of acks not yet written where they count: the sender's unflushed
acks (SIGKILL of the sender), or nats-server's consumer state, which it writes at most every 100 ms
(SIGKILL of nats-server: the acks of that interval are forgotten and those events come again).
"""

from __future__ import annotations

from harness import Harness, click, report, wait_until

IN_FLIGHT = 4
MAX_EVENTS = 20
RECEIVER_DELAY = 0.05  # seconds per request: batches stay in flight, and the rate stays bounded
EVENTS = 2000
# Requests in flight plus acks not yet flushed: each at most maxInFlight batches of maxEvents.
IN_FLIGHT_EVENTS = 2 * IN_FLIGHT * MAX_EVENTS
# Events the receiver takes in 100 ms (nats-server's consumer-state write interval), twice for slack.
PER_FLUSH_INTERVAL = 2 * int(0.1 / RECEIVER_DELAY) * IN_FLIGHT * MAX_EVENTS


async def batched_webhook(harness: Harness):
    receiver = await harness.receiver(delay=RECEIVER_DELAY)
    webhook = await harness.webhook(
        "orders",
        receiver,
        maxInFlight=IN_FLIGHT,
        batch={"maxEvents": MAX_EVENTS, "maxWaitMilliseconds": 50},
    )
    return receiver, webhook


async def test_sender_sigkilled_mid_batch_loses_no_event(harness: Harness):
    receiver, webhook = await batched_webhook(harness)
    accepted = await harness.ingest_events(EVENTS)
    await wait_until(lambda: receiver.successes >= 10 * MAX_EVENTS, what="batches under way")
    webhook.sender.kill()
    in_flight = receiver.hanging  # requests the kill cut off (their batches come again)
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"
    assert max(len(a.events) for a in receiver.attempts) > 1, "no batch was sent"
    await harness.restart_sender(webhook.sender)
    accounting = await harness.settled(webhook, accepted)
    report(f"sender SIGKILLed mid-batch ({in_flight} requests cut off)", accounting)
    assert accounting.delivered == EVENTS and accounting.dead_lettered == 0
    assert accounting.duplicates <= IN_FLIGHT_EVENTS


async def test_nats_sigkilled_mid_batch_loses_no_event(harness: Harness):
    receiver, webhook = await batched_webhook(harness)
    accepted = await harness.ingest_events(EVENTS)
    await wait_until(lambda: receiver.successes >= 10 * MAX_EVENTS, what="batches under way")
    await harness.kill_nats(down_seconds=1.0)
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"
    # Acks lost with the server are redelivered after ack_wait (timeout + 30 s): allow for that.
    accounting = await harness.settled(webhook, accepted, within=240)
    report("nats-server SIGKILLed mid-batch", accounting)
    assert accounting.delivered == EVENTS and accounting.dead_lettered == 0
    assert accounting.duplicates <= IN_FLIGHT_EVENTS + PER_FLUSH_INTERVAL


def test_batch_bodies_are_counted_by_event():
    """The receiver's accounting reads a batch's events (so the tests above count events)."""
    from harness import carried_ids

    assert carried_ids("batch_x", b'[{"id":"a"},{"id":"b"}]') == ("a", "b")
    assert carried_ids("evt-1", b'{"id":"evt-1"}') == ("evt-1",)
    assert click("x")["id"] == "x"
