"""The operator's backlog loop on a paused Webhook (issue 18, item 3), against the strict API emulator
and a real nats-server: above the high-water mark its events are moved to its dead letters, and the
Webhook shows it (a Warning Event, status.delivery.deadLetters, the operator's metric)."""

from __future__ import annotations

import asyncio
import json

from operator_helpers import WEBHOOKS, wait_for
from test_webhooktest_flows import verified_webhook

from hookline.operator.rules.backlog import BacklogSettings
from hookline.sender import bus
from hookline.sender.bus.deadletter import count_dead_letters
from hookline.sender.model.config import consumer_name

STREAM_BYTES = 1024 * 1024
SETTINGS = BacklogSettings(high_water=0.6, tick_seconds=0.2, scan_seconds=0.5, stalled_seconds=60)


async def test_a_paused_webhooks_backlog_is_moved_aside_and_shown_on_it(
    cluster, site, start_operator, nats_server
):
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await bus.ensure_stream(js, max_bytes=STREAM_BYTES)  # as ingest makes it, with a small limit
        operator = await start_operator(backlog=SETTINGS)
        await verified_webhook(cluster, site, "holder", paused=True)
        consumer = consumer_name("shop", "holder")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # the operator makes the consumer of a verified Webhook, paused or not
            try:
                await js.consumer_info(bus.STREAM, consumer)
                break
            except Exception:
                assert loop.time() < deadline, "the paused Webhook got no consumer"
                await asyncio.sleep(0.1)

        event = {"type": "click", "recipient": "a@b.example", "ip": "192.0.2.1", "original": "https://x/"}
        published = 0
        for i in range(2_400):  # ~900 KB: past the 60 % mark unless the loop moves them
            body = json.dumps({**event, "id": f"e-{i:05d}", "pad": "x" * 200}).encode()
            await js.publish("hookline.events.click._._", body, stream=bus.STREAM)
            published += 1

        async def all_moved() -> bool:
            return await count_dead_letters(js, "shop", "holder") + await pending(js, consumer) == published

        moved_events = await wait_for(
            lambda: cluster_events(cluster, "holder"), "the BacklogMovedAside Event"
        )
        state = await js.stream_info(bus.STREAM)
        assert state.state.bytes < 0.6 * STREAM_BYTES  # room again for everyone
        assert await all_moved()
        dead = await count_dead_letters(js, "shop", "holder")
        metric = operator.runtime.metrics.moved_aside.labels("shop", "holder")._value.get()
        assert dead == metric > 0
        assert "hookline redrive holder -n shop" in moved_events[0]["message"]
        assert "stopped (Paused)" in moved_events[0]["message"]

        def shown() -> int | None:
            delivery = ((cluster.get(WEBHOOKS, "holder") or {}).get("status") or {}).get("delivery") or {}
            return delivery.get("deadLetters")

        shown_count = await wait_for(shown, "status.delivery.deadLetters")
        print(
            f"[backlog] paused Webhook: {published} published, {dead} moved aside, status shows {shown_count}"
        )
        assert 0 < shown_count <= dead
    finally:
        await nc.close()


async def pending(js, consumer: str) -> int:
    return bus.pending_of(await js.consumer_info(bus.STREAM, consumer))


def cluster_events(cluster, name: str) -> list[dict]:
    return [e for e in cluster.events_for(name) if e.get("reason") == "BacklogMovedAside"]
