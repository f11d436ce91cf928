"""Key-value bucket handles opened once per connection (sender/bus/buckets.py), on a real nats-server:
an engine recording floors and health reports asks for each bucket's info once, and a bucket deleted
under a kept handle costs one failed write, after which the bucket is made again and holds the next
one."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from hookline.sender import bus
from hookline.sender.bus import buckets
from hookline.sender.bus.attemptlog import HEALTH_BUCKET, AttemptLog
from hookline.sender.bus.floors import FLOORS_BUCKET, read_floor, record_floor
from hookline.sender.model.deliveryhealth import HealthReport


def report(name: str, pending: int) -> HealthReport:
    return HealthReport("shop", name, 1.0, 0, 0, 60, pending, None, 0)


async def watch_bucket_lookups(nc: bus.NATS) -> list[str]:
    """The subjects of STREAM.INFO requests (opening a bucket is one), as the server receives them."""
    seen: list[str] = []

    async def note(msg: Msg) -> None:
        seen.append(msg.subject)

    await nc.subscribe("$JS.API.STREAM.INFO.*", cb=note)
    await nc.flush()
    return seen


async def test_floors_of_many_consumers_open_the_bucket_once(nats, nats_server) -> None:
    nc, js = nats
    observer = await bus.connect(nats_server.url)
    try:
        lookups = await watch_bucket_lookups(observer)
        for i in range(20):  # as 20 engines on one connection, each with its own context
            await record_floor(nc.jetstream(), f"consumer-{i}", 100 + i)
        assert [await read_floor(nc.jetstream(), f"consumer-{i}") for i in (0, 19)] == [100, 119]
        assert await read_floor(js, "never-recorded") is None  # a key not found keeps the handle
        await record_floor(js, "consumer-0", 200)
        await observer.flush()
        assert lookups == [f"$JS.API.STREAM.INFO.KV_{FLOORS_BUCKET}"]
    finally:
        await observer.close()


async def test_a_deleted_floors_bucket_is_made_again_after_one_failed_write(nats) -> None:
    _, js = nats
    await record_floor(js, "shop", 10)
    await js.delete_key_value(FLOORS_BUCKET)
    with pytest.raises(Exception):  # noqa: B017  (nats-py's error for a missing stream varies)
        await record_floor(js, "shop", 11)  # the kept handle points at nothing: it is dropped
    await record_floor(js, "shop", 12)
    assert await read_floor(js, "shop") == 12
    assert (await js.stream_info(f"KV_{FLOORS_BUCKET}")).config.max_msgs_per_subject == 1


async def test_health_reports_of_many_webhooks_share_one_handle_and_survive_a_deleted_bucket(
    nats, nats_server
) -> None:
    nc, js = nats
    observer = await bus.connect(nats_server.url)
    try:
        lookups = await watch_bucket_lookups(observer)
        logs = [AttemptLog(nc, nc.jetstream(), "shop", f"orders-{i}") for i in range(10)]
        for i, log in enumerate(logs):
            assert await log.previous() is None  # none yet
            await log.report(report(f"orders-{i}", i + 1))
        assert (await logs[3].previous()).pending == 4
        await observer.flush()
        assert lookups == [f"$JS.API.STREAM.INFO.KV_{HEALTH_BUCKET}"]
    finally:
        await observer.close()
    await js.delete_key_value(HEALTH_BUCKET)
    assert await logs[0].previous() is None  # the read fails: a fresh start, and the handle is dropped
    await logs[0].report(report("orders-0", 7))  # opens (makes) the bucket again
    assert (await logs[0].previous()).pending == 7


async def test_engines_starting_together_wait_for_one_lookup(nats, nats_server) -> None:
    """100 engines of a replica start at once: those that ask while the bucket is being opened wait
    for that open instead of each making its own request."""
    nc, _ = nats
    observer = await bus.connect(nats_server.url)
    try:
        lookups = await watch_bucket_lookups(observer)
        await asyncio.gather(*(record_floor(nc.jetstream(), f"consumer-{i}", i) for i in range(20)))
        assert await read_floor(nc.jetstream(), "consumer-7") == 7
        await observer.flush()
        assert lookups == [f"$JS.API.STREAM.INFO.KV_{FLOORS_BUCKET}"]
    finally:
        await observer.close()


async def test_an_open_that_fails_fails_every_waiter_and_the_next_use_opens_again() -> None:
    """A stand-in context: the first open raises; the callers that waited for it all see the error,
    none keeps a handle, and the next use opens the bucket again."""
    js = type("StandIn", (), {})()
    opens: list[int] = []
    gate = asyncio.Event()

    async def opener() -> str:
        opens.append(1)
        await gate.wait()
        if len(opens) == 1:
            raise ConnectionError("nats: timeout")
        return "handle"

    async def use() -> str:
        async with buckets.using(js, "KV_X", opener) as kv:  # type: ignore[arg-type]
            return kv

    waiting = [asyncio.create_task(use()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert len(opens) == 1 and all(isinstance(o, ConnectionError) for o in outcomes)
    assert await use() == "handle" and await use() == "handle"
    assert len(opens) == 2
