"""The batch assembler (an engine's BatchAssembler) on fake messages: no NATS, no HTTP.

It hands a batch over when maxEvents is reached, when the next event would pass maxBytes, or at
maxWait (first taking in what already arrived); the events of a failed batch coming back are sent
together as that batch again, even between fresh events, or what came back of it after the wait;
on stop everything it holds goes back to the stream.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from dataplane_helpers import wait_until
from prometheus_client import CollectorRegistry

from hookline.api import parse_webhook_spec
from hookline.sender.delivery.engine import Engine
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.wire import decode_form
from hookline.sender.observe.metrics import SenderMetrics

STORED = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


@dataclass
class FakeMsg:
    sequence: int
    data: bytes
    num_delivered: int = 1
    subject: str = "hookline.events.open._._"
    naks: list[float | None] = field(default_factory=list)

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(
            sequence=SimpleNamespace(stream=self.sequence), num_delivered=self.num_delivered, timestamp=STORED
        )

    async def nak(self, delay: float | None = None) -> None:
        self.naks.append(delay)

    async def term(self) -> None:  # pragma: no cover - only undecodable messages
        raise AssertionError("not expected")


@dataclass
class FakeFeed:
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    released: int = 0

    def release(self, count: int = 1) -> None:
        self.released += count


def msg(sequence: int, **extra: Any) -> FakeMsg:
    event = {"id": f"e{sequence}", "type": "open", "time": 1_700_000_000, "recipient": "a@b.example"}
    return FakeMsg(sequence, json.dumps({**event, **extra}, separators=(",", ":")).encode())


def engine(fmt: str = "json", settings: EngineSettings | None = None, **batch: Any) -> Engine:
    spec = parse_webhook_spec(
        {
            "url": "https://shop.example.com/hook.php",
            "events": ["open"],
            "format": fmt,
            "delivery": {"batch": batch},
        }
    )
    metrics = SenderMetrics(CollectorRegistry()).bind("default", "shop")
    settings = settings or EngineSettings()
    return Engine(None, None, "c", spec, None, metrics, settings=settings)  # type: ignore[arg-type]  # no NATS, no HTTP


def sequences(batch: list[Any]) -> list[int]:
    return [item.msg.sequence for item in batch]


async def run(e: Engine, feed: FakeFeed) -> asyncio.Task[None]:
    return asyncio.create_task(e.assembler.run(feed))  # type: ignore[arg-type]


async def stop(e: Engine, feed: FakeFeed, task: asyncio.Task[None]) -> list[Any]:
    """Stop the assembler; the batches it handed over, in order (the workers' Nones left out)."""
    feed.queue.put_nowait(None)
    await task
    out = []
    while not e.assembler.ready.empty():
        if (batch := e.assembler.ready.get_nowait()) is not None:
            out.append(batch)
    return out


async def test_a_batch_is_handed_over_at_max_events_and_the_rest_goes_back_on_stop():
    e, feed = engine(maxEvents=3, maxWaitMilliseconds=10_000), FakeFeed()
    held = [msg(i) for i in range(1, 8)]
    for m in held:
        feed.queue.put_nowait(m)
    task = await run(e, feed)
    await wait_until(lambda: e.assembler.ready.qsize() == 2, within=10, what="two full batches")
    batches = await stop(e, feed, task)
    assert [sequences(b) for b in batches] == [[1, 2, 3], [4, 5, 6]]
    assert held[6].naks == [None] and all(m.naks == [] for m in held[:6])  # the open batch went back
    assert feed.released == 1  # only what the assembler gave back; the workers release the rest
    assert e.assembler.ready.qsize() == 0


async def test_at_max_wait_it_first_takes_in_what_already_arrived():
    e, feed = engine(maxEvents=100, maxWaitMilliseconds=0), FakeFeed()
    for i in range(1, 6):
        feed.queue.put_nowait(msg(i))
    task = await run(e, feed)
    await wait_until(lambda: e.assembler.ready.qsize() >= 1, within=10, what="a batch")
    assert [sequences(b) for b in await stop(e, feed, task)] == [[1, 2, 3, 4, 5]]


@pytest.mark.parametrize("fmt", ["json", "form"])
async def test_no_batch_passes_max_bytes_and_a_larger_event_goes_alone(fmt):
    e, feed = engine(fmt, maxEvents=100, maxWaitMilliseconds=0, maxBytes=1024), FakeFeed()
    for i in range(1, 21):
        feed.queue.put_nowait(msg(i, useragent="x" * (2000 if i == 7 else 100)))
    task = await run(e, feed)
    await wait_until(
        lambda: sum(len(b) for b in list(e.assembler.ready._queue)) == 20, within=10, what="all batched"
    )  # type: ignore[attr-defined]
    batches = await stop(e, feed, task)
    for batch in batches:
        _, body, _ = e.delivery.build_batch([i.event for i in batch], 0, [i.part for i in batch])
        assert len(body) <= 1024 or sequences(batch) == [7]
        ids = [x["id"] for x in (json.loads(body) if fmt == "json" else decode_form(body)["events"])]
        assert ids == [f"e{s}" for s in sequences(batch)]  # form indices renumbered from 0 per batch
    assert [s for b in batches for s in sequences(b)] == list(range(1, 21))
    assert [7] in [sequences(b) for b in batches] and len(batches) >= 4


async def test_a_failed_batch_comes_back_as_itself_between_fresh_events():
    e, feed = engine(maxEvents=10, maxWaitMilliseconds=10_000), FakeFeed()
    e.assembler.remember_group([3, 1, 2], delay=0.0)  # the order the failed batch had
    arrivals = [msg(10), msg(2), msg(11), msg(1), msg(3)]
    for m in arrivals:
        m.num_delivered = 2 if m.sequence < 10 else 1
        feed.queue.put_nowait(m)
    task = await run(e, feed)
    await wait_until(lambda: e.assembler.ready.qsize() == 1, within=10, what="the failed batch again")
    (again,) = await stop(e, feed, task)
    assert sequences(again) == [3, 1, 2]  # the same events in the same order, without 10 and 11
    assert [m.naks for m in arrivals] == [[None], [], [None], [], []]  # the fresh ones went back on stop
    assert e.assembler.regroup == {}


async def test_what_came_back_of_a_failed_batch_goes_after_the_wait():
    settings = EngineSettings(regroup_wait_seconds=0.05)
    e, feed = engine(settings=settings, maxEvents=10, maxWaitMilliseconds=0), FakeFeed()
    e.assembler.remember_group([1, 2, 3], delay=0.0)
    feed.queue.put_nowait(msg(1))
    feed.queue.put_nowait(msg(2))  # 3 was taken by another replica
    task = await run(e, feed)
    await wait_until(lambda: e.assembler.ready.qsize() == 1, within=10, what="the part that came back")
    assert [sequences(b) for b in await stop(e, feed, task)] == [[1, 2]]
    assert e.assembler.regroup == {}  # 3 is forgotten: if it comes back it is a fresh event


async def test_through_a_pause_events_waiting_in_batches_are_kept_in_progress():
    e, feed = engine(maxEvents=2, maxWaitMilliseconds=10_000), FakeFeed()
    progress: list[int] = []
    held = [msg(i) for i in range(1, 6)]
    for m in held:
        m.in_progress = lambda m=m: _note(progress, m.sequence)  # type: ignore[method-assign]
        feed.queue.put_nowait(m)
    task = await run(e, feed)
    await wait_until(
        lambda: e.assembler.ready.qsize() == 2 and len(e.assembler.assembling) == 1,
        within=10,
        what="assembled",
    )
    await e.assembler.keep_waiting_batches()
    assert progress == []  # no pause: nothing to say
    e.gate.pause_for(60)
    await e.assembler.keep_waiting_batches()
    assert sorted(progress) == [1, 2, 3, 4, 5]  # two waiting batches and the open one
    await stop(e, feed, task)


async def _note(progress: list[int], sequence: int) -> None:
    progress.append(sequence)
