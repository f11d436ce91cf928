"""Bundles (several events in one stored message, model/bundles.py) through a real sender engine, a
real nats-server and a real receiver: each event is delivered once, the message is acked once all
of its events are settled, an event that fails comes back alone (the delivered ones are not sent
again, in this engine or in the next), and a dead letter names the event and its reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats.errors
import pytest
from aiohttp import web
from dataplane_helpers import Received, Receiver, sender_config, sender_runtime, wait_until
from nats.js.errors import NotFoundError

from hookline.sender import bus
from hookline.sender.bus.bundles import progress_key
from hookline.sender.bus.connection import BusUnavailable
from hookline.sender.bus.deadletter import iter_dead_letters
from hookline.sender.bus.failedattempts import FAILED_ATTEMPTS_STREAM, FailedAttemptStore
from hookline.sender.bus.natsserver import EmbeddedNats
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.model.bundles import pack
from hookline.sender.model.events import parse_event


class PickyReceiver(Receiver):
    """Fails the events named in `failing` (500) as long as they are named there."""

    failing: set[str]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if request.headers["webhook-id"] in self.failing else 200
        self.requests.append(Received(request.path, dict(request.headers), body, status))
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[PickyReceiver]:
    r = PickyReceiver()
    r.failing = set()
    await r.start()
    yield r
    await r.stop()


def opens(prefix: str, count: int) -> list:
    return [
        parse_event({"id": f"{prefix}{i}", "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
        for i in range(count)
    ]


async def publish_bundle(js, events: list) -> None:
    payload, headers = pack([e.to_bytes() for e in events])
    await js.publish(events[0].subject, payload, headers={**headers, bus.MSG_ID_HEADER: f"b:{events[0].id}"})


async def start(nc, receiver: Receiver, **delivery) -> tuple[SenderRuntime, asyncio.Event, asyncio.Task]:
    cfg = sender_config(
        "unused",
        f"{receiver.url}/hook",
        name="bundled",
        format="json",
        delivery={"maxInFlight": 4, **delivery},
    )
    runtime = await sender_runtime(nc, cfg)
    stop = asyncio.Event()
    return runtime, stop, asyncio.get_running_loop().create_task(runtime.run(stop))


async def settled(js, runtime: SenderRuntime, messages: int = 1) -> bool:
    """Every one of `messages` published messages handed out and acked (a busy server's late answer
    means not yet, so the wait keeps polling)."""
    try:
        info = await js.consumer_info(bus.STREAM, runtime.cfg.nats.consumer)
    except (nats.errors.Error, TimeoutError):
        return False
    return info.ack_floor.stream_seq >= messages and info.num_ack_pending == 0 and info.num_pending == 0


async def test_each_event_of_a_bundle_is_delivered_once_and_the_message_acked_once(nats, receiver):
    nc, js = nats
    runtime, stop, task = await start(nc, receiver)
    bundles = [opens(f"b{n}-", 10) for n in range(3)]
    for events in bundles:
        await publish_bundle(js, events)
    single = opens("single-", 1)[0]  # a stream holds both forms
    await js.publish(single.subject, single.to_bytes(), headers={bus.MSG_ID_HEADER: single.id})
    try:
        await wait_until(lambda: len(receiver.delivered()) == 31, what="every event delivered")
        await wait_until(lambda: settled(js, runtime, 4), what="every message acked")
    finally:
        stop.set()
        await task
    expected = sorted([e.id for events in bundles for e in events] + [single.id])
    assert sorted(receiver.ids()) == expected  # each once


async def test_a_failed_event_of_a_bundle_comes_back_alone(nats, receiver):
    nc, js = nats
    events = opens("r", 5)
    receiver.failing = {"r2"}
    runtime, stop, task = await start(nc, receiver)
    await publish_bundle(js, events)
    try:
        await wait_until(lambda: len(receiver.delivered()) == 4, what="the other four delivered")
        receiver.failing.clear()  # the retry (after the schedule's 5 s) succeeds
        await wait_until(lambda: "r2" in receiver.delivered(), what="the failed event delivered on its retry")
        await wait_until(lambda: settled(js, runtime), what="the bundle acked")
    finally:
        stop.set()
        await task
    assert sorted(receiver.ids()) == ["r0", "r1", "r2", "r2", "r3", "r4"]  # only r2 came back
    consumer = runtime.cfg.nats.consumer
    with pytest.raises(NotFoundError):  # no progress record is left behind
        await js.get_last_msg(FAILED_ATTEMPTS_STREAM, f"hookline.failed.{consumer}.{progress_key(1)}")


async def test_another_engine_skips_what_the_first_delivered(nats, receiver):
    """The first engine stops while one event waits for its retry: the next one reads the bundle's
    progress from NATS and sends that event only."""
    nc, js = nats
    events = opens("h", 6)
    receiver.failing = {"h4"}
    runtime, stop, task = await start(nc, receiver)
    await publish_bundle(js, events)
    try:
        await wait_until(lambda: len(receiver.delivered()) == 5, what="five delivered")
        store = FailedAttemptStore(js, runtime.cfg.nats.consumer)
        await wait_until(lambda: _has(store, progress_key(1)), what="the bundle's progress stored")
    finally:
        stop.set()
        await task
    receiver.failing.clear()
    runtime, stop, task = await start(nc, receiver)  # memory starts empty
    try:
        await wait_until(lambda: "h4" in receiver.delivered(), what="the failed event delivered")
        await wait_until(lambda: settled(js, runtime), what="the bundle acked")
    finally:
        stop.set()
        await task
    assert sorted(receiver.ids()) == ["h0", "h1", "h2", "h3", "h4", "h4", "h5"]


async def _has(store: FailedAttemptStore, key: str) -> bool:
    try:
        return await store.read_raw(key) is not None
    except BusUnavailable:  # a late answer: ask again
        return False


async def test_a_dead_letter_from_a_bundle_names_its_event_and_reason(nats, receiver):
    nc, js = nats
    await bus.ensure_dead_letter_stream(js)
    events = opens("d", 4)
    receiver.failing = {"d1"}
    runtime, stop, task = await start(nc, receiver, maxAttempts=1)
    await publish_bundle(js, events)
    try:
        await wait_until(lambda: len(receiver.delivered()) == 3, what="three delivered")
        await wait_until(lambda: settled(js, runtime), what="the bundle acked")
    finally:
        stop.set()
        await task
    letters = [s.record async for s in iter_dead_letters(js, "default", "bundled")]
    assert [(d.event_id, str(d.reason), d.attempts) for d in letters] == [("d1", "max_attempts", 1)]
    assert sorted(receiver.ids()) == ["d0", "d1", "d2", "d3"]


async def test_a_batched_webhook_batches_the_events_of_bundles(nats, receiver):
    nc, js = nats
    runtime, stop, task = await start(nc, receiver, batch={"maxEvents": 50, "maxWaitMilliseconds": 20})
    for n in range(4):
        await publish_bundle(js, opens(f"x{n}-", 25))
    try:
        await wait_until(lambda: settled(js, runtime, 4), what="every bundle acked")
    finally:
        stop.set()
        await task
    carried = [e["id"] for r in receiver.requests for e in json.loads(r.body)]
    assert sorted(carried) == sorted(f"x{n}-{i}" for n in range(4) for i in range(25))
    assert len(receiver.requests) < 100 / 10  # batched, not one request per event


async def test_a_backlog_of_bundles_larger_than_nats_buffers_for_a_client_is_read_without_a_disconnect(
    tmp_path, receiver
):
    """nats-server disconnects a client it has more than `max_pending` bytes queued for (a slow
    consumer). A pull asking for as many messages as the engine has room for events would fetch that
    many whole bundles: the feed bounds each pull in bytes too."""
    config = tmp_path / "nats.conf"
    config.write_text("max_pending: 1MB\nmax_payload: 256KB\n")
    with EmbeddedNats(tmp_path / "store", config_file=config, log_file=tmp_path / "nats.log") as server:
        nc = await bus.connect(server.url)
        js = nc.jetstream()
        await bus.ensure_stream(js)
        runtime, stop, task = await start(nc, receiver, batch={"maxEvents": 100, "maxWaitMilliseconds": 20})
        try:
            stop.set()  # the backlog must be stored before the engine's first pull
            await task
            padding = "p" * 600
            for n in range(200):  # 200 bundles of 100 events of ~700 bytes: ~14 MB
                await publish_bundle(
                    js, [parse_event({**e.payload, "tags": [padding]}) for e in opens(f"m{n}-", 100)]
                )
            runtime, stop, task = await start(
                nc, receiver, batch={"maxEvents": 100, "maxWaitMilliseconds": 20}
            )
            await wait_until(lambda: settled(js, runtime, 200), what="every bundle acked")
        finally:
            stop.set()
            await task
        assert nc.stats["reconnects"] == 0, "the sender was disconnected"
        await nc.close()
    assert "Slow Consumer" not in (tmp_path / "nats.log").read_text()
    carried = [e["id"] for r in receiver.requests for e in json.loads(r.body)]
    assert len(carried) == len(set(carried)) == 20_000


async def test_a_starting_feed_takes_one_bundle_not_the_whole_backlog(nats):
    """A feed has room for `capacity` events but cannot know how many a message carries before one
    came: it asks for one message first, then for one more bundle to have in reserve (its room
    stretches by one message's events). Asking for `capacity` messages fetched up to a megabyte of
    bundles per Webhook at once (a pool replica restarting with 1,000 Webhooks' backlogs, ~1 GiB)."""
    nc, js = nats
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/", name="sized-feed")
    await bus.ensure_consumer(js, cfg)
    for n in range(20):
        await publish_bundle(js, opens(f"backlog{n}-", 100))
    feed = bus.MessageFeed(nc, cfg.nats.consumer, capacity=32)
    await feed.start()
    try:
        await wait_until(lambda: feed.queue.qsize() == 200, what="two bundles' events queued")
        info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
        # Two bundles handed out (200 events in hand, past capacity and reserve: no further request).
        assert (info.num_ack_pending, info.num_pending, feed.in_hand) == (2, 18, 200)
    finally:
        await feed.stop()
