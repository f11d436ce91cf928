"""Leader election: the Lease rules (pure) and one replica's elector against an in-memory Lease store."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from hookline.operator.adapters.leases import LeaseError
from hookline.operator.loops.leader import LeaderElector
from hookline.operator.rules.leadership import LeaseTiming, Move, lease_body, next_move, record_of
from hookline.operator.settings import LeaderElection

TIMING = LeaseTiming(lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2)


class Leases:
    """One namespace's Leases as the API server keeps them: resourceVersion, 409 on a stale write."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise LeaseError("GET: connection refused")

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.items.get(name))

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        name = body["metadata"]["name"]
        if name in self.items:
            return None
        return self._store(name, body)

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        if body["metadata"].get("resourceVersion") != self.items[name]["metadata"]["resourceVersion"]:
            return None
        return self._store(name, body)

    def _store(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.items[name] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str:
        return self.items["op"]["spec"]["holderIdentity"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: Leases, identity: str, clock: Clock, timing: LeaseTiming = TIMING) -> LeaderElector:
    election = LeaderElection(namespace="hookline", name="op", identity=identity, timing=timing)
    return LeaderElector(leases, election, clock=clock)  # type: ignore[arg-type]


# --- the rules ----------------------------------------------------------------------------------------


def test_next_move_follows_the_holder_and_the_standbys_own_clock():
    held = record_of(lease_body("ns", "op", "a", TIMING, None, "T1"))
    assert next_move(None, "a", 0) is Move.CREATE
    assert next_move(held, "a", 0) is Move.RENEW
    assert next_move(held, "b", 14.9) is Move.WAIT
    assert next_move(held, "b", 15) is Move.TAKE
    released = record_of({"spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})
    assert next_move(released, "b", 0) is Move.TAKE


def test_a_lease_body_counts_transitions_and_keeps_the_acquire_time_while_renewed():
    first = lease_body("ns", "op", "a", TIMING, None, "T1")
    assert first["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "T1",
        "renewTime": "T1",
        "leaseTransitions": 0,
    }
    stored = record_of({**first, "metadata": {"resourceVersion": "7"}})
    renewed = lease_body("ns", "op", "a", TIMING, stored, "T2")
    assert renewed["metadata"]["resourceVersion"] == "7"  # a write meanwhile makes it a Conflict
    assert (renewed["spec"]["acquireTime"], renewed["spec"]["renewTime"]) == ("T1", "T2")
    taken = lease_body("ns", "op", "b", TIMING, stored, "T3")
    assert (taken["spec"]["acquireTime"], taken["spec"]["leaseTransitions"]) == ("T3", 1)


def test_timings_must_let_a_leader_stop_before_a_standby_starts():
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseTiming(lease_seconds=10, renew_deadline_seconds=10, retry_seconds=2)


# --- one replica's elector ----------------------------------------------------------------------------


async def test_one_leads_and_the_other_takes_over_only_after_the_lease_expired():
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a._try() is True
    assert await b._try() is False
    clock.now += 5
    assert await a._try() is True  # renewed
    assert await b._try() is False  # b sees the renewal: a lives
    clock.now += 14  # a is dead from here on: b has seen the record unchanged for 14 s
    assert await b._try() is False
    clock.now += 1
    assert await b._try() is True
    assert leases.holder() == "b"
    assert leases.items["op"]["spec"]["leaseTransitions"] == 1


async def test_a_standby_counts_from_when_it_saw_the_record_not_from_renew_time():
    """A standby that started late (or whose clock is off) still waits a whole lease duration."""
    leases, clock = Leases(), Clock()
    a = elector(leases, "a", clock)
    assert await a._try() is True
    clock.now += 100  # a stopped long ago, but b starts only now
    b = elector(leases, "b", clock)
    assert await b._try() is False
    clock.now += 15
    assert await b._try() is True


async def test_a_released_lease_is_taken_at_once():
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.acquire(asyncio.Event()) is True
    assert await b._try() is False
    await a.release()
    assert leases.holder() == ""
    assert await b._try() is True


async def test_a_release_after_a_renewal_whose_answer_was_lost_still_gives_the_lease_up():
    """A stop cancels a renewal after the API server wrote it: the leader's record is one version behind."""
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.acquire(asyncio.Event()) is True
    stored = record_of(leases.items["op"])
    await leases.replace("ns", "op", lease_body("ns", "op", "a", TIMING, stored, "T9"))  # a's answer lost
    await a.release()
    assert leases.holder() == ""
    assert await b._try() is True  # at once, not after the lease duration


async def test_a_release_leaves_a_lease_another_replica_holds():
    leases, clock = Leases(), Clock()
    a = elector(leases, "a", clock)
    assert await a.acquire(asyncio.Event()) is True
    stored = record_of(leases.items["op"])
    await leases.replace("ns", "op", lease_body("ns", "op", "b", TIMING, stored, "T9"))  # b took it
    await a.release()
    assert leases.holder() == "b"


async def test_two_standbys_racing_for_an_expired_lease_get_one_leader():
    leases, clock = Leases(), Clock()
    a, b, c = (elector(leases, name, clock) for name in "abc")
    assert await a._try() is True
    assert await b._try() is False and await c._try() is False
    clock.now += 15
    results = await asyncio.gather(b._try(), c._try())
    assert sorted(results) == [False, True]


async def test_a_leader_that_cannot_renew_gives_up_before_the_lease_expires():
    timing = LeaseTiming(lease_seconds=0.6, renew_deadline_seconds=0.3, retry_seconds=0.05)
    leases = Leases()
    a = elector(leases, "a", Clock(), timing)
    a.clock = time.monotonic  # real time: keep() sleeps for real
    assert await a.acquire(asyncio.Event()) is True
    leases.down = True
    started = asyncio.get_running_loop().time()
    reason = await asyncio.wait_for(a.keep(), timeout=2)
    assert "not renewed within 0.3 s" in reason
    assert asyncio.get_running_loop().time() - started < timing.lease_seconds
    assert not a.leading.is_set() and not a.holds()


async def test_a_leader_whose_lease_was_taken_stops():
    timing = LeaseTiming(lease_seconds=0.6, renew_deadline_seconds=0.3, retry_seconds=0.05)
    leases, clock = Leases(), Clock()
    a = elector(leases, "a", clock, timing)
    assert await a.acquire(asyncio.Event()) is True
    leases.items["op"]["spec"]["holderIdentity"] = "b"  # e.g. a was frozen longer than the lease
    reason = await asyncio.wait_for(a.keep(), timeout=2)
    assert reason == "the Lease is held by b"
