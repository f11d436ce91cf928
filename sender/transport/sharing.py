"""What the engines of one process share on the way out: a cap on requests in flight per origin, and
keep-alive connections.

Each Webhook's engine has its own client, sized to its own `maxInFlight`. In a pool replica many
Webhooks often point at one customer server (a Webhook per database, all to the same endpoint): 100 of
them at maxInFlight 32 would hold 3,200 connections to it, each opened for a few requests, a load no
one asked for that costs the receiver and the replica more per request than the requests themselves
(bench/pool.py). So a process has one `EgressSharing`:

- its gate lets at most `limit` requests to one origin (scheme, host, port) be in flight; the others
  wait their turn, engines in turn (a quarter of the places each at most, in a row, so that one
  engine's state stays in the CPU's caches) and each engine's workers in order of arrival (engines
  wait before they sign a request and keep its events in progress meanwhile, engine.py), so a busy
  origin slows its Webhooks down but does not time them out, and one whose receiver hangs cannot keep
  the others of that origin out;
- clients that may use each other's connections get one keep-alive pool: the same share key (the
  host passes the Webhook's namespace, so no connection carries two tenants' requests), the same
  egress policy (it checked the connection's addresses), the process's default TLS context (a Webhook
  with its own client certificate or CAs keeps its own connections) and the same body cap.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Hashable

from yarl import URL

from hookline.sender.transport.http1 import KeepAlivePool

Origin = tuple[str, str, int]  # scheme, host, port
# A shared pool's connections are bounded per origin by the gate and per Webhook by its engine's
# workers; this only keeps the count finite.
SHARED_POOL_LIMIT = 65536


def origin_of(url: URL) -> Origin:
    return (url.scheme, url.raw_host or "", url.port or 0)


class _Lane:
    """One origin: places taken, and who waits, per owner (an engine), owners in turn."""

    __slots__ = ("busy", "given", "held", "turn_owner", "waiting")

    def __init__(self) -> None:
        self.busy = 0
        self.held: dict[Hashable, int] = {}
        # Owners with waiters, in the order they get the next place (a dict keeps insertion order).
        self.waiting: dict[Hashable, collections.deque[asyncio.Future[None]]] = {}
        self.turn_owner: Hashable = None  # the owner whose turn it is, and the places it got in it
        self.given = 0


def places_per_turn(limit: int) -> int:
    """A quarter of an origin's places: enough consecutive requests of one engine to keep its state
    in the CPU's caches (bench/pool.py: a replica of 100 busy Webhooks spent 0.070-0.076 ms per
    delivery handing places over one at a time, 0.052-0.057 in turns of 16, as with one Webhook), few
    enough that a Webhook whose receiver hangs takes no more than a quarter of the places per turn."""
    return max(1, limit // 4)


class OriginGate:
    """At most `limit` requests in flight per origin. A freed place goes to the owners (engines) that
    wait in turn, up to `turn` places each (`places_per_turn` of the limit unless given), and within
    an owner to its workers in order of arrival: a Webhook whose receiver hangs can hold every place
    only while nobody else waits for that origin."""

    def __init__(self, limit: int, turn: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit per origin must be >= 1, got {limit}")
        if turn is not None and turn < 1:
            raise ValueError(f"the places per turn must be >= 1, got {turn}")
        self.limit = limit
        self.turn = places_per_turn(limit) if turn is None else turn
        self._lanes: dict[Origin, _Lane] = {}

    def in_flight(self, origin: Origin, owner: Hashable = None) -> int:
        lane = self._lanes.get(origin)
        if lane is None:
            return 0
        return lane.busy if owner is None else lane.held.get(owner, 0)

    def waiting(self, origin: Origin) -> int:
        lane = self._lanes.get(origin)
        if lane is None:
            return 0
        return sum(1 for line in lane.waiting.values() for w in line if not w.done())

    def try_enter(self, origin: Origin, owner: Hashable) -> bool:
        """A place now, if there is one and no one waits for it (no task, no await)."""
        lane = self._lanes.get(origin)
        if lane is None:
            lane = self._lanes[origin] = _Lane()
        if lane.busy < self.limit and not lane.waiting:
            lane.busy += 1
            lane.held[owner] = lane.held.get(owner, 0) + 1
            return True
        return False

    def queue(self, origin: Origin, owner: Hashable, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A place in line (after `try_enter` said no): the future (of the caller's `loop`) resolves
        when the place is handed over. One given up on must be `withdraw`n."""
        waiter = loop.create_future()
        line = self._lanes[origin].waiting.setdefault(owner, collections.deque())
        line.append(waiter)
        return waiter

    def withdraw(self, origin: Origin, owner: Hashable, waiter: asyncio.Future[None]) -> None:
        """Out of line: a place already handed over goes to the next in line."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.leave(origin, owner)
            return
        waiter.cancel()
        lane = self._lanes.get(origin)
        if lane is None:
            return
        line = lane.waiting.get(owner)
        if line is not None:
            with contextlib.suppress(ValueError):  # `leave` may have passed over it already
                line.remove(waiter)
            if not line:
                del lane.waiting[owner]
        self._forget_if_idle(origin, lane)

    async def enter(self, origin: Origin, owner: Hashable) -> None:
        if self.try_enter(origin, owner):
            return
        waiter = self.queue(origin, owner, asyncio.get_running_loop())
        try:
            await waiter  # `leave` hands its place over: busy stays counted for this request
        except BaseException:
            self.withdraw(origin, owner, waiter)
            raise

    def leave(self, origin: Origin, owner: Hashable) -> None:
        lane = self._lanes[origin]
        left = lane.held[owner] - 1
        if left:
            lane.held[owner] = left
        else:
            del lane.held[owner]
        while lane.waiting:
            next_owner = next(iter(lane.waiting))
            if next_owner != lane.turn_owner:
                lane.turn_owner, lane.given = next_owner, 0
            line = lane.waiting[next_owner]
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    lane.held[next_owner] = lane.held.get(next_owner, 0) + 1
                    lane.given += 1
                    if not line or lane.given >= self.turn:
                        # Its turn ends: to the back if more of its workers wait, the others go first.
                        del lane.waiting[next_owner]
                        lane.turn_owner = None
                        if line:
                            lane.waiting[next_owner] = line
                    return
            del lane.waiting[next_owner]
        lane.busy -= 1
        self._forget_if_idle(origin, lane)

    def _forget_if_idle(self, origin: Origin, lane: _Lane) -> None:
        if lane.busy == 0 and not lane.waiting and self._lanes.get(origin) is lane:
            del self._lanes[origin]  # a replica reaches thousands of origins over its life


class EgressSharing:
    """One per process: the origin gate and the keep-alive pools its clients share (counted, closed
    with their last client)."""

    def __init__(self, max_in_flight_per_origin: int) -> None:
        self.gate = OriginGate(max_in_flight_per_origin)
        self._pools: dict[Hashable, tuple[KeepAlivePool, int]] = {}

    def pool(self, key: Hashable, make: Callable[[], KeepAlivePool]) -> KeepAlivePool:
        held = self._pools.get(key)
        pool = held[0] if held is not None else make()
        self._pools[key] = (pool, (held[1] if held is not None else 0) + 1)
        return pool

    def release(self, key: Hashable) -> None:
        pool, users = self._pools[key]
        if users > 1:
            self._pools[key] = (pool, users - 1)
        else:
            del self._pools[key]
            pool.close()

    def pools(self) -> int:
        return len(self._pools)
