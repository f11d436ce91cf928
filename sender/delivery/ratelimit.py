"""Per-process limits that together hold a Webhook's limits across sender replicas.

- `TokenBucket`: `maxRequestsPerSecond / replicas` requests per second in this process, smooth: each
  request gets the next free slot, slots are 1/rate apart, and at most `burst` slots can be taken
  early (so a pause does not turn into a burst above the rate).
- `per_replica_in_flight`: concurrent requests of one replica, so that the replicas together keep
  to `maxInFlight` (the engine runs that many workers).
- `BackoffGate`: Retry-After on 429/503 pauses every worker of the sender until a deadline.

Clock and sleep are injectable so tests run on virtual time; production uses the monotonic clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

__all__ = [
    "BackoffGate",
    "TokenBucket",
    "per_replica_in_flight",
    "per_replica_rate",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# The bucket holds this many seconds' worth of requests (at least one): enough to absorb a late
# wake-up of the event loop, too little to be felt by the receiver as a burst.
DEFAULT_BURST_SECONDS = 0.05


def per_replica_rate(total_per_second: float | None, replicas: int) -> float | None:
    """This replica's share of the Webhook's request rate (None: unlimited)."""
    if total_per_second is None:
        return None
    if replicas < 1:
        raise ValueError(f"sender replicas must be at least 1, got {replicas}")
    return total_per_second / replicas


def per_replica_in_flight(
    total: int, replicas: int, *, rate: float | None = None, within: float | None = None
) -> int:
    """This replica's share of maxInFlight, rounded down so the replicas together never exceed it.

    With `rate` (this replica's requests/s) and `within` (seconds), no more than the rate can send in
    that time: a worker holds its event while waiting for a token, and an event held longer than the
    consumer's ack_wait would be redelivered to another replica while still waiting here.
    """
    if replicas < 1:
        raise ValueError(f"sender replicas must be at least 1, got {replicas}")
    if total < 1:
        raise ValueError(f"spec.delivery.maxInFlight must be at least 1, got {total}")
    share = max(1, total // replicas)
    if rate and within:
        share = min(share, max(1, math.floor(rate * within)))
    return share


# Messages an engine without batches holds at least, workers or not: its feed asks NATS for more once
# half of its capacity is free, so with maxInFlight 1 it made a pull request per delivery (issue 22:
# nats-server 0.108 ms per pooled delivery at maxInFlight 1 against 0.067 at 32).
READ_AHEAD = 32


def feed_capacity(workers: int, *, rate: float | None = None, within: float | None = None) -> int:
    """Messages an engine without batches holds: one per worker, or READ_AHEAD if more, but no more
    than the rate limit lets it send within `within` seconds (as `per_replica_in_flight`); those
    waiting for a worker longer are reported in progress (feed.MessageFeed.keep_waiting)."""
    ahead = READ_AHEAD
    if rate and within:
        ahead = min(ahead, math.floor(rate * within))
    return max(workers, ahead)


class TokenBucket:
    """A smooth rate limit (GCRA): `await acquire()` returns when this request may be sent.

    Waiters are served in call order; each reserves its slot when it calls, so concurrent workers
    never see the same token. `rate` None or 0 means unlimited.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next request
        self._interval = 0.0
        self._tolerance = 0.0
        self._burst_override = burst
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        return 1.0 / self._interval if self._interval else None

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (e.g. when the replica count changes); reservations already made stand."""
        if rate is not None and (rate < 0 or not math.isfinite(rate)):
            raise ValueError(f"spec.delivery.maxRequestsPerSecond must be a positive number, got {rate}")
        if not rate:
            self._interval = 0.0
            self._tolerance = 0.0
            return
        self._interval = 1.0 / rate
        burst = self._burst_override if self._burst_override is not None else rate * DEFAULT_BURST_SECONDS
        burst = max(1.0, burst)
        self._tolerance = (burst - 1.0) * self._interval

    def reserve(self) -> float:
        """Take the next slot; returns how many seconds from now it starts (0: go now)."""
        if not self._interval:
            return 0.0
        now = self._clock()
        start = max(now, self._tat - self._tolerance)
        self._tat = max(self._tat, start) + self._interval
        return start - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)


class BackoffGate:
    """Pauses every worker until a deadline (a receiver's Retry-After); a later deadline extends it."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._until = -math.inf

    def pause_for(self, seconds: float) -> None:
        """Pause from now for `seconds`; never shortens a pause already in force."""
        if seconds > 0:
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    @property
    def paused(self) -> bool:
        return self.remaining() > 0

    async def wait(self) -> None:
        """Return once no pause is in force (re-checks, since a pause may be extended meanwhile)."""
        while (left := self.remaining()) > 0:
            await self._sleep(left)
