"""One customer's broken server never slows another's; none is hit harder than its Webhook allows."""

from __future__ import annotations

from harness import Harness, Mode, report, wait_until


async def test_a_hanging_endpoint_does_not_hold_up_another_webhook(harness: Harness):
    stuck = await harness.receiver("stuck", mode=Mode.HANG)
    healthy = await harness.receiver("healthy")
    stuck_webhook = await harness.webhook("stuck", stuck, timeoutSeconds=60, maxInFlight=5)
    healthy_webhook = await harness.webhook("healthy", healthy, maxInFlight=10)
    accepted = await harness.ingest_events(300)  # both Webhooks subscribe to these clicks

    await wait_until(
        lambda: healthy.delivered_ids >= set(accepted),
        what="the healthy Webhook received all its events",
        diagnostics=harness.diagnostics,
    )
    # ... while the other one is still stuck on its first requests.
    assert stuck.hanging > 0
    assert stuck.delivered_ids == set()
    report("healthy Webhook next to a hanging one", await harness.account(healthy_webhook, accepted))

    stuck.set(Mode.OK)
    accounting = await harness.settled(stuck_webhook, accepted, within=240)
    report("hanging Webhook after it recovered", accounting)
    assert accounting.delivered == 300


async def test_two_replicas_together_keep_to_max_requests_per_second(harness: Harness):
    """A generous bound only (never harder than the limit, and not starved); bench/ratelimit.py measures."""
    limit = 20.0
    receiver = await harness.receiver()
    webhook = await harness.webhook(
        "orders", receiver, replicas=2, maxRequestsPerSecond=limit, maxInFlight=10
    )
    accepted = await harness.ingest_events(240)
    accounting = await harness.settled(webhook, accepted)
    report("rate limit, two replicas", accounting)
    assert accounting.delivered == 240
    arrivals = sorted(a.arrived for a in receiver.attempts)
    # Skip the first second: each replica may start with its small bucket full.
    steady = [t for t in arrivals if t >= arrivals[0] + 1.0]
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    observed = (len(steady) - 1) / span if span > 0 else float("inf")
    print(f"[fault] rate limit: {observed:.2f} requests/s observed, limit {limit:g}/s over 2 replicas")
    assert observed <= limit * 1.10
    assert observed >= limit * 0.5
    for sender in webhook.senders:  # both replicas did part of the work
        assert await sender.metric(harness.http, "hookline_delivery_attempts_total", outcome="success") > 0
