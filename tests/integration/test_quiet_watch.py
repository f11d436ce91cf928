"""A quiet Webhook costs the bus almost nothing (issue 22, item 3): its engine stops asking NATS for the
consumer's state while nothing happens, and still notices within seconds what JetStream pushes (a
deleted consumer, a stop recorded by another replica, a resume) and the next event. Real nats-server,
a real engine and an aiohttp receiver on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from dataplane_helpers import Receiver, sender_config, wait_until
from natsauth_helpers import Client, start_authed_nats
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.delivery.watch import advisory_subjects
from hookline.sender.model.events import parse_event
from hookline.sender.model.outcomes import GoneState
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy

# Production's idle interval: whatever is noticed below within seconds was pushed, not polled.
SETTINGS = EngineSettings(watch_interval_seconds=0.3, watch_idle_interval_seconds=600.0)
NOTICED_WITHIN = 5.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def publish(js, *ids: str) -> None:
    for event_id in ids:
        event = parse_event({"id": event_id, "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
        await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.id})


async def looks_over(engine, seconds: float) -> int:
    """Consumer-info requests the watch made during `seconds` (a bounded observation, not a sync)."""
    before = engine.watch.looks
    await asyncio.sleep(seconds)
    return engine.watch.looks - before


async def test_a_quiet_engine_stops_polling_and_still_notices_deletion_stop_resume_and_events(nats, receiver):
    nc, js = nats
    cfg = sender_config("unused", f"{receiver.url}/hooks/quiet", name="quiet", format="json")
    metrics = SenderMetrics(CollectorRegistry())
    runtime = await SenderRuntime.create(nc, cfg, EgressPolicy.for_dev(), metrics, None, settings=SETTINGS)
    engine, stop = runtime.engine, asyncio.Event()
    task = asyncio.get_running_loop().create_task(runtime.run(stop))
    try:
        await wait_until(lambda: engine.readiness() is None and engine.watch.quiet, what="a quiet engine")
        assert await looks_over(engine, 1.5) == 0  # at the short interval it would have looked ~5 times

        # An event: delivered at once (the pull is outstanding), and the watch looks closely again.
        await publish(js, "e1")
        await wait_until(lambda: "e1" in receiver.delivered(), within=NOTICED_WITHIN, what="e1 delivered")
        await wait_until(lambda: engine.watch.quiet, within=NOTICED_WITHIN, what="quiet again")

        # Deleted behind hookline's back: the advisory wakes the watch, which makes it again.
        recreated = engine.metrics.consumer_recreated
        assert await js.delete_consumer(bus.STREAM, engine.consumer)
        await wait_until(
            lambda: recreated._value.get() == 1, within=NOTICED_WITHIN, what="the deleted consumer made again"
        )
        await publish(js, "e2")
        await wait_until(lambda: "e2" in receiver.delivered(), within=30, what="e2 after the recreation")
        await wait_until(lambda: engine.watch.quiet, within=NOTICED_WITHIN, what="quiet again")

        # A stop recorded by another replica (it pauses the consumer), then a resume.
        await bus.mark_gone(js, engine.consumer, GoneState().mark(1.0, "evt-elsewhere", cause="gone"))
        await wait_until(lambda: engine.gone.state.gone, within=NOTICED_WITHIN, what="the stop followed")
        await wait_until(lambda: engine.watch.quiet, within=NOTICED_WITHIN, what="quiet while stopped")
        assert await bus.clear_gone(js, engine.consumer)
        await wait_until(
            lambda: not engine.gone.state.gone, within=NOTICED_WITHIN, what="the resume followed"
        )
        await publish(js, "e3")
        await wait_until(lambda: "e3" in receiver.delivered(), within=NOTICED_WITHIN, what="e3 after resume")
        assert set(receiver.delivered()) == {"e1", "e2", "e3"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.slow
async def test_events_waiting_out_their_retry_delay_let_the_watch_rest_at_the_steady_interval(nats, receiver):
    nc, js = nats
    receiver.status = 500
    cfg = sender_config("unused", f"{receiver.url}/hooks/failing", name="failing", format="json")
    metrics = SenderMetrics(CollectorRegistry())
    runtime = await SenderRuntime.create(nc, cfg, EgressPolicy.for_dev(), metrics, None, settings=SETTINGS)
    engine, stop = runtime.engine, asyncio.Event()
    task = asyncio.get_running_loop().create_task(runtime.run(stop))
    try:
        await wait_until(lambda: engine.readiness() is None, what="a running engine")
        await publish(js, "r1")
        await wait_until(lambda: len(receiver.requests) == 1, within=NOTICED_WITHIN, what="a failed attempt")
        # The event waits 5 s for its second attempt: pending 1, nothing in hand, so the watch rests.
        await wait_until(
            lambda: engine.watch.quiet and engine.watch.last_pending == 1, within=2, what="a steady rest"
        )
        assert engine.watch.idle_wait <= SETTINGS.watch_steady_interval_seconds
        assert await looks_over(engine, 1.0) == 0
        await wait_until(lambda: len(receiver.requests) == 2, within=10, what="the retry, on schedule")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_least_privilege_sender_hears_only_its_own_consumers_advisories(tmp_path):
    """The sender's NATS user may subscribe to its consumer's advisories (the watch rests on them), and
    to no other consumer's."""
    server = start_authed_nats(tmp_path)
    try:
        admin = await bus.connect(
            server.url,
            auth=BusAuth(creds_file=str(server.creds["operator"]), inbox_prefix=inbox_prefix("operator")),
        )
        js = admin.jetstream()
        await js.add_stream(name=bus.STREAM, subjects=["hookline.events.>"])
        for name in ("orders", "billing"):
            await bus.ensure_consumer(
                js, sender_config(server.url, "http://127.0.0.1:9/", namespace="team-a", name=name)
            )
        who, creds = server.sender_creds("team-a", "orders")
        other, _ = server.sender_creds("team-a", "billing")
        client = await Client().connect(server.url, creds, who.consumer)
        heard: list[str] = []

        async def hear(msg) -> None:
            heard.append(msg.subject)

        try:
            for subject in advisory_subjects(who.consumer):
                await client.nc.subscribe(subject, cb=hear)
            await client.nc.flush()
            await client.refused(
                "another consumer's advisories",
                lambda: client.nc.subscribe(advisory_subjects(other.consumer)[0]),
            )
            assert await js.delete_consumer(bus.STREAM, who.consumer)
            await wait_until(lambda: bool(heard), within=NOTICED_WITHIN, what="the DELETED advisory")
            assert heard == [f"$JS.EVENT.ADVISORY.CONSUMER.DELETED.{bus.STREAM}.{who.consumer}"]
        finally:
            await client.close()
            await admin.close()
    finally:
        server.server.close()
