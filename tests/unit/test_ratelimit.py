"""Rate, replica-share and Retry-After limits on virtual time (no real-clock timing)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable

import pytest

from hookline.sender.delivery.ratelimit import (
    READ_AHEAD,
    BackoffGate,
    TokenBucket,
    feed_capacity,
    per_replica_in_flight,
    per_replica_rate,
)


class VirtualClock:
    """Monotonic time that only moves when every task is waiting on it (deterministic)."""

    def __init__(self) -> None:
        self.now = 100.0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def _settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def run(self, awaitable: Awaitable[object]) -> None:
        """Run `awaitable`, jumping the clock to the next sleeper whenever everything is blocked."""
        task = asyncio.ensure_future(awaitable)
        while True:
            await self._settle()
            if task.done():
                task.result()
                return
            if not self._waiters:
                raise AssertionError("deadlock: every task waits and no one sleeps on the clock")
            wake_at, _, future = heapq.heappop(self._waiters)
            self.now = max(self.now, wake_at)
            future.set_result(None)


async def send_requests(bucket: TokenBucket, clock: VirtualClock, workers: int, total: int) -> list[float]:
    """`workers` concurrent senders share `total` requests; returns the time each one was let through."""
    sent: list[float] = []
    counter = itertools.count()

    async def worker() -> None:
        while next(counter) < total:
            await bucket.acquire()
            sent.append(clock())

    await clock.run(asyncio.gather(*(worker() for _ in range(workers))))
    return sent


async def test_requests_are_spread_evenly_at_the_configured_rate():
    clock = VirtualClock()
    bucket = TokenBucket(50.0, burst=1, clock=clock, sleep=clock.sleep)
    sent = await send_requests(bucket, clock, workers=10, total=500)
    assert len(sent) == 500
    gaps = [b - a for a, b in itertools.pairwise(sorted(sent))]
    assert min(gaps) == pytest.approx(0.02)
    # 500 requests at 50/s: the first goes at once, the last 499 intervals later.
    assert sent[-1] - sent[0] == pytest.approx(499 / 50)


async def test_no_window_of_one_second_exceeds_the_rate_plus_the_small_bucket():
    clock = VirtualClock()
    bucket = TokenBucket(200.0, clock=clock, sleep=clock.sleep)  # default bucket: 50 ms = 10 requests
    sent = sorted(await send_requests(bucket, clock, workers=50, total=2000))
    start = 0
    for end, t in enumerate(sent):
        while sent[start] <= t - 1.0:
            start += 1
        assert end - start + 1 <= 200 + 10


async def test_idle_time_does_not_bank_a_burst():
    clock = VirtualClock()
    bucket = TokenBucket(10.0, burst=2, clock=clock, sleep=clock.sleep)
    await send_requests(bucket, clock, workers=1, total=5)
    clock.now += 3600  # an hour idle
    sent = await send_requests(bucket, clock, workers=20, total=20)
    assert sum(1 for t in sent if t == sent[0]) == 2  # only the bucket of 2 goes at once
    assert sent[-1] - sent[0] == pytest.approx(18 / 10)


async def test_two_replicas_share_the_webhook_rate():
    total_rate = 90.0
    clock = VirtualClock()
    replicas = [
        TokenBucket(per_replica_rate(total_rate, 2), burst=1, clock=clock, sleep=clock.sleep)
        for _ in range(2)
    ]
    sent: list[float] = []

    async def replica(bucket: TokenBucket) -> None:
        sent.extend(await send_requests_inline(bucket, clock, 450))

    await clock.run(asyncio.gather(*(replica(b) for b in replicas)))
    sent.sort()
    observed = (len(sent) - 1) / (sent[-1] - sent[0])
    assert observed == pytest.approx(total_rate, rel=0.05)


async def send_requests_inline(bucket: TokenBucket, clock: VirtualClock, total: int) -> list[float]:
    sent = []
    for _ in range(total):
        await bucket.acquire()
        sent.append(clock())
    return sent


async def test_unlimited_rate_never_waits():
    bucket = TokenBucket(None)
    assert [bucket.reserve() for _ in range(1000)] == [0.0] * 1000
    assert bucket.rate is None


async def test_changing_the_rate_applies_to_later_requests():
    clock = VirtualClock()
    bucket = TokenBucket(10.0, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)
    bucket.set_rate(100.0)
    assert bucket.rate == pytest.approx(100.0)
    assert bucket.reserve() == pytest.approx(0.2)  # the slot after the ones already reserved
    assert bucket.reserve() == pytest.approx(0.21)  # then 10 ms apart


def test_bad_rate_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"maxRequestsPerSecond"):
        TokenBucket(-5.0)


def test_replica_shares():
    assert per_replica_rate(50.0, 2) == 25.0
    assert per_replica_rate(None, 3) is None
    assert per_replica_in_flight(10, 3) == 3  # 3 replicas x 3 never exceed 10
    assert per_replica_in_flight(2, 4) == 1  # every replica can still send
    with pytest.raises(ValueError, match="replicas"):
        per_replica_rate(50.0, 0)
    with pytest.raises(ValueError, match="maxInFlight"):
        per_replica_in_flight(0, 1)


def test_a_slow_rate_holds_no_more_events_than_it_can_send_before_redelivery():
    # 1 request/s and 20 s before JetStream would redeliver: 20 workers, not 50 waiting for tokens.
    assert per_replica_in_flight(50, 1, rate=1.0, within=20.0) == 20
    assert per_replica_in_flight(50, 1, rate=0.01, within=20.0) == 1
    assert per_replica_in_flight(10, 2, rate=500.0, within=20.0) == 5  # fast enough: the share


def test_a_feed_reads_ahead_of_few_workers_as_far_as_the_rate_allows():
    # maxInFlight 1 held one message: a pull request per delivery. Now READ_AHEAD messages...
    assert feed_capacity(1) == READ_AHEAD == 32
    assert feed_capacity(100) == 100  # ...and many workers hold one each, as before
    # ...but no more than the rate limit sends before JetStream would redeliver the last one.
    assert feed_capacity(1, rate=0.5, within=20.0) == 10
    assert feed_capacity(4, rate=0.01, within=20.0) == 4  # never fewer than the workers
    assert feed_capacity(1, rate=10_000.0, within=20.0) == READ_AHEAD


async def test_backoff_gate_pauses_every_worker_until_the_deadline():
    clock = VirtualClock()
    gate = BackoffGate(clock=clock, sleep=clock.sleep)
    passed: list[float] = []

    async def worker() -> None:
        await gate.wait()
        passed.append(clock())

    start = clock()
    gate.pause_for(30.0)
    assert gate.paused
    await clock.run(asyncio.gather(*(worker() for _ in range(5))))
    assert passed == [start + 30.0] * 5
    assert not gate.paused


async def test_backoff_gate_is_extended_by_a_later_retry_after_never_shortened():
    clock = VirtualClock()
    gate = BackoffGate(clock=clock, sleep=clock.sleep)
    start = clock()
    passed: list[float] = []

    async def worker() -> None:
        await gate.wait()
        passed.append(clock())

    async def receiver_says_wait_longer() -> None:
        await clock.sleep(10.0)
        gate.pause_for(60.0)  # until start + 70
        gate.pause_for(1.0)  # a shorter one does not cut it

    gate.pause_for(20.0)
    await clock.run(asyncio.gather(worker(), receiver_says_wait_longer()))
    assert passed == [start + 70.0]


async def test_open_gate_lets_workers_through_without_sleeping():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    gate = BackoffGate(sleep=sleep)
    gate.pause_for(0)
    await gate.wait()
    assert slept == []
