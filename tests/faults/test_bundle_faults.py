"""Events stored as bundles (several per message, model/bundles.py) when the sender is SIGKILLed or
nats-server is SIGKILLed mid-bundle.

Counted by event: every stored event reaches the receiver, none is dead-lettered. JetStream's unit is
the message, so a death can deliver twice the events of the bundles the sender held and had not
acked yet (its requests in flight, the members already delivered of bundles not finished, the
bundles read ahead); with nats-server SIGKILLed, also those whose acks of the last 100 ms it forgot.
"""

from __future__ import annotations

from harness import Harness, report, wait_until

IN_FLIGHT = 4
BUNDLE = 50
RECEIVER_DELAY = 0.01
EVENTS = 2000
# Bundles in the sender's hands when it dies: what it reads ahead is sized in events (at most 32 for a
# Webhook of maxInFlight 4), rounded up to whole bundles, plus the bundles its workers are in.
HELD_EVENTS = (32 // BUNDLE + 1 + IN_FLIGHT) * BUNDLE


async def bundled_webhook(harness: Harness):
    receiver = await harness.receiver(delay=RECEIVER_DELAY)
    webhook = await harness.webhook("bundled", receiver, maxInFlight=IN_FLIGHT)
    return receiver, webhook


async def sender_killed_mid_way(harness: Harness, receiver, webhook, accepted: list[str], what: str) -> None:
    """SIGKILL the sender once bundles are under way, start it again: every event delivered once,
    but for the events of the bundles it held."""
    await wait_until(lambda: receiver.successes >= 3 * BUNDLE, what="bundles under way")
    webhook.sender.kill()
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"
    await harness.restart_sender(webhook.sender)
    accounting = await harness.settled(webhook, accepted)
    report(what, accounting)
    assert accounting.delivered == EVENTS and accounting.dead_lettered == 0
    assert accounting.duplicates <= HELD_EVENTS


async def test_sender_sigkilled_mid_bundle_loses_no_event(harness: Harness):
    receiver, webhook = await bundled_webhook(harness)
    accepted = await harness.publish_bundles(EVENTS, size=BUNDLE)
    await sender_killed_mid_way(harness, receiver, webhook, accepted, "sender SIGKILLed mid-bundle")


async def test_nats_sigkilled_mid_bundle_loses_no_event(harness: Harness):
    receiver, webhook = await bundled_webhook(harness)
    accepted = await harness.publish_bundles(EVENTS, size=BUNDLE)
    await wait_until(lambda: receiver.successes >= 3 * BUNDLE, what="bundles under way")
    await harness.kill_nats(down_seconds=1.0)
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"
    accounting = await harness.settled(webhook, accepted, within=240)
    report("nats-server SIGKILLed mid-bundle", accounting)
    assert accounting.delivered == EVENTS and accounting.dead_lettered == 0
    assert accounting.duplicates <= 2 * HELD_EVENTS


async def test_ingest_bundling_then_the_sender_sigkilled_loses_no_event(tmp_path, nats_server):
    """End to end: `hookline ingest --bundle-events 50` stores each request of 100 events as two
    bundles; the sender dies mid-way; every accepted event is delivered."""
    async with Harness(tmp_path, nats_server, ingest_args=["--bundle-events", str(BUNDLE)]) as harness:
        receiver, webhook = await bundled_webhook(harness)
        accepted = await harness.ingest_events(EVENTS)
        assert await harness.stored_messages() <= EVENTS // BUNDLE, "ingest did not store bundles"
        await sender_killed_mid_way(
            harness, receiver, webhook, accepted, "ingest --bundle-events, sender SIGKILLed"
        )
