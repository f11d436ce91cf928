"""A request answered 503 part-way tells the truth per event, against a real nats-server on loopback.

The stream fills part-way through one request, and the nats-server is stopped while a request is being
published: the 503 lists every id in exactly one of `accepted`, `notAccepted` and `unknown`, and the
stream, read back, holds every accepted id and none of the notAccepted ones (an unknown one may be there).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from dataplane_helpers import add_witness, wait_until
from nats.js import api
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import IngestSettings
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics

TOKEN = "partial-token"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
ANSWER_LISTS = ("accepted", "notAccepted", "unknown")


def event(event_id: str, pad: int = 0) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "open",
        "recipient": "anna@example.com",
        "ip": "192.0.2.7",
        "useragent": "u" * pad,
    }


async def stored_ids(js: Any) -> set[str]:
    """Every event id the events stream holds, read back through a consumer that acknowledges nothing."""
    expected = (await js.stream_info(bus.STREAM)).state.messages
    found: set[str] = set()
    if not expected:
        return found
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL)
    sub = await js.pull_subscribe("hookline.events.>", stream=bus.STREAM, config=config)
    try:
        while len(found) < expected:
            for msg in await sub.fetch(1000, timeout=5):
                found.add(msg.headers[bus.MSG_ID_HEADER])
    finally:
        await sub.unsubscribe()
    return found


def check_partition(ids: list[str], answer: dict[str, Any]) -> None:
    """Each id of the request in exactly one list, each list in request order."""
    lists = [answer[name] for name in ANSWER_LISTS]
    assert sorted(i for part in lists for i in part) == sorted(ids)
    for part in lists:
        assert part == [i for i in ids if i in set(part)]
    assert set(answer["duplicates"]) <= set(answer["accepted"])


async def serve(nc: Any, js: Any, **settings: Any) -> tuple[str, Any]:
    registry = CollectorRegistry()
    ingest = Ingest(
        nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=IngestSettings(**settings)
    )
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    return f"http://127.0.0.1:{bound_port(runner)}", runner


@pytest.fixture
async def small_stream(nats_server) -> AsyncIterator[tuple[Any, Any, str]]:
    """Ingest over a 1 MiB events stream with a consumer that never acknowledges (so nothing leaves)."""
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js, max_bytes=1024 * 1024)
    await add_witness(js)
    url, runner = await serve(nc, js, max_body_bytes=8 * 1024 * 1024, publish_timeout_seconds=5)
    try:
        yield nc, js, url
    finally:
        await runner.cleanup()
        await nc.close()


async def test_a_stream_filling_part_way_answers_503_listing_exactly_what_it_stored(small_stream):
    _, js, url = small_stream
    # Large and small events alternate: once a large one no longer fits, small ones still do, so what
    # was stored is not a prefix of the request and only a per-event answer can say it.
    ids = [f"fill-{i:04d}" for i in range(300)]
    body = [event(i, pad=7000 if n % 2 == 0 else 10) for n, i in enumerate(ids)]
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(f"{url}/v1/events", data=json.dumps(body), headers=HEADERS) as response:
            assert response.status == 503
            assert response.headers["Retry-After"]
            answer = await response.json()
        took = time.monotonic() - started
    check_partition(ids, answer)
    assert "maximum bytes" in answer["error"]
    assert answer["unknown"] == []  # the server answered every publish
    stored = await stored_ids(js)
    assert stored == set(answer["accepted"])
    assert not stored & set(answer["notAccepted"])
    first_refused = ids.index(answer["notAccepted"][0])
    after_refusal = [i for i in answer["accepted"] if ids.index(i) > first_refused]
    assert after_refusal, "small events after the first refusal were stored"
    print(
        f"\n[stream full part-way] {len(ids)} events in one request: accepted {len(answer['accepted'])}, "
        f"notAccepted {len(answer['notAccepted'])}, unknown {len(answer['unknown'])}; "
        f"{len(after_refusal)} stored after the first refusal; stream holds {len(stored)}, "
        f"equal to accepted; answered in {took:.2f}s"
    )

    # The producer retries the same request, same ids, once the consumer caught up: nothing doubles.
    sub = await js.pull_subscribe("hookline.events.>", durable="witness", stream=bus.STREAM)
    while (await js.consumer_info(bus.STREAM, "witness")).num_pending:
        for msg in await sub.fetch(500, timeout=5):
            await msg.ack_sync()
    for _ in range(100):  # the recovery stream's reader releases what it copied about once a second
        if not (await js.stream_info(bus.STREAM)).state.messages:
            break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        retry = [event(i, pad=10) for i in ids]  # smaller now, so the whole request fits
        async with http.post(f"{url}/v1/events", data=json.dumps(retry), headers=HEADERS) as response:
            assert response.status == 202
            again = await response.json()
    assert again["accepted"] == ids
    assert again["duplicates"] == answer["accepted"]  # stored once, within the duplicate window
    info = await js.stream_info(bus.STREAM)
    assert info.state.messages == len(answer["notAccepted"])
    print(
        f"[stream full part-way] retry with the same ids: 202, {len(again['duplicates'])} duplicates, "
        f"{info.state.messages} newly stored"
    )


async def test_a_bus_down_before_the_request_lists_every_event_as_not_accepted(nats_server, small_stream):
    nc, js, url = small_stream
    ids = [f"down-{i}" for i in range(5)]
    nats_server.stop()
    await wait_until(lambda: not nc.is_connected, what="disconnect")
    body = json.dumps([event(i) for i in ids])
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/events", data=body, headers=HEADERS) as response,
    ):
        assert response.status == 503
        answer = await response.json()
    assert (answer["accepted"], answer["notAccepted"], answer["unknown"]) == ([], ids, [])
    assert "none of the 5 events was stored" in answer["error"]
    assert "retry" in answer["error"]
    nats_server.start()
    await wait_until(lambda: nc.is_connected, what="reconnect")
    await asyncio.sleep(0.5)  # anything nats-py had buffered would be published by now
    assert await stored_ids(js) == set()


@pytest.mark.parametrize(
    "how", [signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP], ids=["sigterm", "sigkill", "sigstop"]
)
@pytest.mark.slow
async def test_a_server_stopped_part_way_answers_503_whose_lists_match_the_stream(
    nats_server, monkeypatch, how
):
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    await add_witness(js)
    url, runner = await serve(nc, js, max_body_bytes=16 * 1024 * 1024, publish_timeout_seconds=2)
    try:
        run = uuid.uuid4().hex[:8]
        ids = [f"stop-{run}-{i:05d}" for i in range(6_000)]
        data = json.dumps([event(i, pad=200) for i in ids])
        settle_at, stop_at, handed = 2_000, 3_000, 0
        publish = nc.publish

        async def publish_then_stop(*args: Any, **kwargs: Any) -> None:
            """Ingest's own publishes, interrupted: the first 2,000 events have a moment to be answered,
            the next 1,000 are handed over at once, and with the 3,000th the server goes (those in
            flight may or may not be stored); then ingest is left to notice it is disconnected. A
            stopped (SIGSTOP) server keeps the connection: the rest is handed over, unanswered."""
            nonlocal handed
            handed += 1
            if handed == settle_at:
                await asyncio.sleep(0.3)
            if handed == stop_at:
                assert nats_server.proc is not None
                nats_server.proc.send_signal(how)
            await publish(*args, **kwargs)
            if handed == stop_at and how != signal.SIGSTOP:
                await wait_until(lambda: not nc.is_connected, within=30, what="ingest sees the server gone")

        monkeypatch.setattr(nc, "publish", publish_then_stop)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/v1/events", data=data, headers=HEADERS) as response,
        ):
            status, answer = response.status, await response.json()
        assert status == 503
        check_partition(ids, answer)
        assert answer["accepted"] and (answer["notAccepted"] or answer["unknown"])

        monkeypatch.undo()
        if how == signal.SIGSTOP:  # a server that stalled past the timeout and then carries on
            assert nats_server.proc is not None
            nats_server.proc.send_signal(signal.SIGCONT)
        else:
            assert nats_server.proc is not None
            nats_server.proc.wait(30)
            nats_server.proc = None
            nats_server.start()
        await wait_until(lambda: nc.is_connected, what="ingest reconnects")
        await asyncio.sleep(1.0)  # what nats-py had buffered goes out after the reconnect
        stored = await stored_ids(js)
        accepted, refused, unknown = (set(answer[name]) for name in ANSWER_LISTS)
        assert accepted <= stored, f"{len(accepted - stored)} accepted events are not in the stream"
        assert not refused & stored, f"{len(refused & stored)} notAccepted events are in the stream"
        assert stored <= accepted | unknown
        print(
            f"\n[server stopped part-way, {how.name}] {len(ids)} events in one request, the server stopped "
            f"at the {stop_at}th handed over: accepted {len(accepted)}, notAccepted {len(refused)}, unknown "
            f"{len(unknown)} ({len(unknown & stored)} of them in the stream afterwards); the stream "
            f"holds {len(stored)} = accepted + those"
        )
    finally:
        await runner.cleanup()
        await nc.close()
