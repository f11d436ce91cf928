"""A Webhook's consumer deleted behind hookline's back (`nats consumer rm`, a script, a bug) under the
default interest retention (issue 17, item 1): real nats-server, `hookline ingest` and `hookline
sender` processes, slow aiohttp receivers on loopback. Every event ingest accepted is counted.

Before the recovery stream, the events stream dropped the events only the deleted consumer still
wanted, and stored none of those published before the sender made it again: 1,700 of 2,600 lost.
Now the recreated consumer is owed them and they come back from HOOKLINE_EVENTS_RECOVERY; past the
recovery window the loss is counted (hookline_events_lost_total, status.delivery.eventsLost and the
Delivering condition EventsLost), never silent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import Harness, Webhook, report, wait_until

from hookline.api import DeliveringReason
from hookline.operator.rules.delivery import delivering_condition
from hookline.sender.bus import STREAM, read_floor
from hookline.sender.bus.attemptlog import AttemptLog
from hookline.sender.bus.recovery import RECOVERY_STREAM
from hookline.sender.model.deliveryhealth import HealthReport

pytestmark = pytest.mark.slow

BATCHES = 26  # of 100 events: 2,600, as the issue counted
DELETE_AFTER = 10  # batches accepted before the consumer goes


async def delete_consumer(harness: Harness, webhook: Webhook) -> None:
    """What `nats consumer rm HOOKLINE_EVENTS <consumer>` does: the JetStream API's delete."""
    assert await harness._js_call(lambda js: js.delete_consumer(STREAM, webhook.consumer))


async def floor_recorded(harness: Harness, webhook: Webhook) -> int:
    async def read(js: Any) -> int:
        return await read_floor(js, webhook.consumer) or 0

    return await harness._js_call(read)


async def stream_end(harness: Harness, stream: str = STREAM) -> tuple[int, int]:
    """First and last sequence of a stream."""

    async def read(js: Any) -> tuple[int, int]:
        state = (await js.stream_info(stream)).state
        return int(state.first_seq or 0), int(state.last_seq or 0)

    return await harness._js_call(read)


async def flow_with_a_deletion(harness: Harness, slow: Webhook, *, bundle: int = 0) -> list[str]:
    """Events keep coming (100 every 50 ms, faster than the slow receiver takes them); the slow
    Webhook's consumer is deleted part-way, with a backlog only it still wanted. `bundle`: stored
    that many to a message (model/bundles.py) instead of through ingest."""
    accepted: list[str] = []
    for batch in range(BATCHES):
        if batch == DELETE_AFTER:
            await wait_until(lambda: slow.receiver.successes > 100, what="deliveries under way")
            messages = 100 // bundle if bundle else 100  # the consumer counts messages
            assert await harness.waiting(slow) > messages, "no backlog when the consumer was deleted"
            await delete_consumer(harness, slow)
        if bundle:
            accepted += await harness.publish_bundles(100, prefix=f"b{batch:02d}", size=bundle)
        else:
            accepted += await harness.ingest_events(100, prefix=f"b{batch:02d}")
        await asyncio.sleep(0.05)
    return accepted


async def test_a_consumer_deleted_while_its_receiver_is_slow_loses_nothing(harness: Harness):
    receiver = await harness.receiver("slow", delay=0.01)
    slow = await harness.webhook("slow", receiver, maxInFlight=4)
    accepted = await flow_with_a_deletion(harness, slow)
    accounting = await harness.settled(slow, accepted)
    report("consumer deleted while its receiver was slow", accounting)
    assert accounting.lost == 0 and accounting.delivered == len(accepted) == BATCHES * 100
    assert await slow.sender.metric(harness.http, "hookline_consumer_recreated_total") >= 1
    recovered = await slow.sender.metric(harness.http, "hookline_events_recovered_total")
    assert recovered > 0, "the events only the deleted consumer wanted came from the recovery stream"
    print(f"[fault] put back from {RECOVERY_STREAM}: {recovered:.0f}")
    assert await slow.sender.metric(harness.http, "hookline_events_lost_total") == 0


async def test_a_consumer_deleted_with_bundles_in_its_backlog_gets_them_back_whole(harness: Harness):
    """The recovery stream's copies keep a bundle's header: put back, each event is delivered."""
    receiver = await harness.receiver("slow", delay=0.01)
    slow = await harness.webhook("slow", receiver, maxInFlight=4)
    accepted = await flow_with_a_deletion(harness, slow, bundle=25)
    accounting = await harness.settled(slow, accepted)
    report("consumer deleted with bundles in its backlog", accounting)
    assert accounting.lost == 0 and accounting.delivered == len(accepted) == BATCHES * 100
    assert await slow.sender.metric(harness.http, "hookline_events_recovered_total") > 0
    assert await slow.sender.metric(harness.http, "hookline_events_lost_total") == 0


async def test_a_deleted_consumer_beside_a_healthy_webhook_loses_nothing_for_either(harness: Harness):
    healthy_receiver = await harness.receiver("healthy")
    healthy = await harness.webhook("healthy", healthy_receiver, maxInFlight=16)
    receiver = await harness.receiver("slow", delay=0.01)
    slow = await harness.webhook("slow", receiver, maxInFlight=4)
    accepted = await flow_with_a_deletion(harness, slow)
    for webhook in (slow, healthy):
        accounting = await harness.settled(webhook, accepted)
        report(f"consumer of {webhook.name} deleted, beside a healthy Webhook", accounting)
        assert accounting.lost == 0 and accounting.delivered == len(accepted)
    assert await healthy.sender.metric(harness.http, "hookline_consumer_recreated_total") == 0
    assert await slow.sender.metric(harness.http, "hookline_events_lost_total") == 0


async def test_a_gap_longer_than_the_recovery_window_is_counted_and_reported(tmp_path, nats_server):
    async with Harness(tmp_path, nats_server, ingest_args=["--recovery-window", "2s"]) as harness:
        receiver = await harness.receiver("receiver")
        webhook = await harness.webhook("shop", receiver)
        delivered = await harness.ingest_events(20, prefix="before")
        await harness.settled(webhook, delivered)
        _, last = await stream_end(harness)
        await wait_until(lambda: floor_recorded(harness, webhook), what="floor recorded")
        await wait_until(
            lambda: _equals(floor_recorded(harness, webhook), last), what="floor recorded at the end"
        )
        webhook.sender.stop()
        await delete_consumer(harness, webhook)
        missed = await harness.ingest_events(150, prefix="gap")
        _, gap_end = await stream_end(harness)
        # The recovery window (2 s) passes: the copies of the gap's events expire.
        await wait_until(
            lambda: _past(stream_end(harness, RECOVERY_STREAM), gap_end), within=30, what="window passed"
        )
        webhook.sender.start()
        await harness.started(webhook.sender)
        after = await harness.ingest_events(30, prefix="after")
        await harness.settled(webhook, after)

        lost = await webhook.sender.metric(harness.http, "hookline_events_lost_total", reason="window_passed")
        accounting = await harness.account(webhook, [*delivered, *missed, *after])
        report("consumer deleted, sender down past the recovery window", accounting)
        print(f"[fault] hookline_events_lost_total{{reason=window_passed}} = {lost:.0f}")
        assert accounting.lost == len(missed) == lost == 150

        async def health(js: Any) -> HealthReport | None:
            return await AttemptLog(None, js, webhook.namespace, webhook.name).previous()  # type: ignore[arg-type]

        reports: list[HealthReport | None] = []

        async def reported() -> bool:
            reports[:] = [await harness._js_call(health)]
            return reports[0] is not None and reports[0].events_lost == 150

        await wait_until(reported, within=30, what="the loss in the health report")
        assert reports[0] is not None
        status = reports[0].delivery_status()
        assert status["eventsLost"] == 150 and status["eventsLostAt"]
        condition = delivering_condition(status, webhook.namespace, webhook.name)
        assert condition.reason == DeliveringReason.EVENTS_LOST and condition.status == "False"
        assert "150 events" in condition.message
        print(f"[fault] Delivering={condition.status} {condition.reason}: {condition.message}")


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


async def _past(ends: Any, sequence: int) -> bool:
    first, _ = await ends
    return first > sequence
