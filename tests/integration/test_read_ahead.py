"""An engine reads ahead of its workers (issue 22): a Webhook with maxInFlight 1 asks NATS for
messages once per READ_AHEAD / 2 deliveries, not once per delivery, and the events waiting for its
one worker are kept in progress, so a slow receiver gets each of them once. Real nats-server, real
sender engine, real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from dataplane_helpers import Receiver, sender_config, sender_runtime, wait_until

from hookline.sender import bus
from hookline.sender.bus import layout
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.ratelimit import READ_AHEAD
from hookline.sender.model.events import parse_event


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def publish(js, count: int) -> list[str]:
    ids = []
    for i in range(count):
        event = parse_event({"id": f"ra{i}", "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
        await js.publish(event.subject, event.to_bytes(), headers={bus.MSG_ID_HEADER: event.id})
        ids.append(event.id)
    return ids


async def run_sender(nc, receiver: Receiver, **delivery) -> SenderRuntime:
    cfg = sender_config(
        "unused", f"{receiver.url}/hook", name="ahead", delivery={"maxInFlight": 1, **delivery}
    )
    runtime = await sender_runtime(nc, cfg)
    return runtime


async def test_one_worker_asks_nats_for_messages_once_per_half_read_ahead(nats, nats_server, receiver):
    nc, js = nats
    stop = asyncio.Event()
    runtime = await run_sender(nc, receiver)
    ids = await publish(js, 128)
    spy = await bus.connect(nats_server.url)  # sees every pull request the engine makes
    pulls: list[bytes] = []
    await spy.subscribe(
        f"$JS.API.CONSUMER.MSG.NEXT.{bus.STREAM}.{runtime.cfg.nats.consumer}", cb=_append(pulls)
    )
    await spy.flush()
    task = asyncio.get_running_loop().create_task(runtime.run(stop))
    try:
        await wait_until(lambda: len(receiver.delivered()) == len(ids), what="every event delivered")
    finally:
        stop.set()
        await task
        await spy.close()
    assert sorted(receiver.ids()) == sorted(ids)  # each once
    # 128 deliveries by one worker: a request for the first READ_AHEAD (32), then one per 16 (before:
    # a request per delivery).
    assert READ_AHEAD == 32 and len(pulls) <= 128 // 16 + 2, len(pulls)


def _append(into: list[bytes]):
    async def cb(msg) -> None:
        into.append(msg.data)

    return cb


async def test_events_waiting_for_the_one_worker_are_not_handed_out_again(nats, receiver, monkeypatch):
    """ack_wait 3 s (a 1 s timeout and 2 s of margin), a receiver answering in 0.5 s, 14 events: the last
    waits ~6.5 s in the engine's hands; JetStream would hand it out again after 3 s unless told."""
    monkeypatch.setattr(layout, "ACK_WAIT_MARGIN_SECONDS", 2.0)
    nc, js = nats
    receiver.delay = 0.5
    stop = asyncio.Event()
    runtime = await run_sender(nc, receiver, timeoutSeconds=1)
    ids = await publish(js, 14)
    task = asyncio.get_running_loop().create_task(runtime.run(stop))
    try:
        await wait_until(lambda: len(receiver.delivered()) == len(ids), what="every event delivered")
        info = await js.consumer_info(bus.STREAM, runtime.cfg.nats.consumer)
        assert info.config.ack_wait == 3.0
    finally:
        stop.set()
        await task
    assert sorted(receiver.ids()) == sorted(ids)  # none twice
    assert info.num_redelivered == 0
