"""OriginGate (transport/sharing.py): places per origin; a freed place goes to the waiting engines in
turn (a few consecutive places each) and within an engine in order of arrival; a place is never lost
when a waiter gives up, even one handed a place it had not taken yet."""

from __future__ import annotations

import asyncio

import pytest

from hookline.sender.transport.sharing import OriginGate, places_per_turn

SHOP = ("https", "shop.example", 443)
OTHER = ("https", "other.example", 443)


def full_gate(limit: int, holder: str, **options: int) -> OriginGate:
    """A gate whose places `holder` holds, every one."""
    gate = OriginGate(limit, **options)
    for _ in range(limit):
        assert gate.try_enter(SHOP, holder)
    return gate


def line_up(gate: OriginGate, owners: list[str], got: list[str]) -> list[asyncio.Task[None]]:
    """One waiting worker per entry of `owners`, each noting its owner in `got` once let in."""

    async def wait(owner: str) -> None:
        await gate.enter(SHOP, owner)
        got.append(owner)

    return [asyncio.create_task(wait(owner)) for owner in owners]


async def test_places_are_per_origin_and_an_engines_workers_get_them_in_order_of_arrival():
    gate = OriginGate(2)
    assert gate.try_enter(SHOP, "a") and gate.try_enter(SHOP, "a")
    assert not gate.try_enter(SHOP, "a")
    assert gate.try_enter(OTHER, "a")  # another receiver has its own places
    order: list[int] = []

    async def wait(n: int) -> None:
        await gate.enter(SHOP, "a")
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert gate.waiting(SHOP) == 3 and order == []
    for _ in range(3):
        gate.leave(SHOP, "a")
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert gate.in_flight(SHOP) == 2  # the places moved on, their count did not change
    assert not gate.try_enter(SHOP, "b")  # and nobody jumps the line


async def test_freed_places_go_to_the_waiting_engines_in_turn():
    """Engine `stuck` holds every place (its receiver hangs) and has more workers waiting; as its
    requests time out, the places go to `a`, `b` and `stuck` in turn, not back to `stuck` alone."""
    gate = full_gate(3, "stuck")
    got: list[str] = []
    tasks = line_up(gate, ["stuck"] * 5 + ["a"] * 2 + ["b"] * 2, got)
    await asyncio.sleep(0)
    for _ in range(3):
        gate.leave(SHOP, "stuck")
        await asyncio.sleep(0)
    assert sorted(got) == ["a", "b", "stuck"]  # one place each
    assert gate.in_flight(SHOP, "stuck") == 1 and gate.in_flight(SHOP, "a") == 1
    for owner in ("a", "b", "stuck"):
        gate.leave(SHOP, owner)
        await asyncio.sleep(0)
    assert sorted(got[3:]) == ["a", "b", "stuck"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_waiter_cancelled_as_it_is_handed_a_place_passes_it_on():
    gate = OriginGate(1)
    assert gate.try_enter(SHOP, "a")
    first = asyncio.create_task(gate.enter(SHOP, "b"))
    second = asyncio.create_task(gate.enter(SHOP, "c"))
    await asyncio.sleep(0)
    gate.leave(SHOP, "a")  # hands the place to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the place went on to the next in line
    assert gate.in_flight(SHOP) == 1 and gate.in_flight(SHOP, "c") == 1 and gate.in_flight(SHOP, "b") == 0
    gate.leave(SHOP, "c")
    assert gate.in_flight(SHOP) == 0 and gate.waiting(SHOP) == 0


async def test_a_withdrawn_waiter_leaves_no_place_behind():
    gate = OriginGate(1)
    assert gate.try_enter(SHOP, "a")
    waiter = gate.queue(SHOP, "b", asyncio.get_running_loop())
    gate.withdraw(SHOP, "b", waiter)
    gate.leave(SHOP, "a")
    assert gate.in_flight(SHOP) == 0 and gate.waiting(SHOP) == 0
    assert gate.try_enter(SHOP, "b")


async def test_an_engine_gets_up_to_a_turn_of_places_in_a_row_then_the_next_engine():
    """Turns of 2: `a` and `b` each have 3 workers waiting; freed places go a, a, b, b, a, b. An
    engine whose line empties ends its turn early, and one that comes back waits behind the others."""
    gate = full_gate(6, "busy", turn=2)
    got: list[str] = []
    tasks = line_up(gate, ["a"] * 3 + ["b"] * 3, got)
    await asyncio.sleep(0)
    for _ in range(6):
        gate.leave(SHOP, "busy")
        await asyncio.sleep(0)
    assert got == ["a", "a", "b", "b", "a", "b"]
    await asyncio.gather(*tasks)
    # `c` waits with one worker, then `a` with two: `c`'s turn ends with its line, `a` takes its two.
    tasks = line_up(gate, ["c", "a", "a"], got)
    await asyncio.sleep(0)
    got.clear()
    for _ in range(3):
        gate.leave(SHOP, "b")
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert got == ["c", "a", "a"]
    assert gate.in_flight(SHOP) == 6 and gate.in_flight(SHOP, "a") == 5 and gate.waiting(SHOP) == 0


def test_a_turn_is_a_quarter_of_the_places_and_at_least_one():
    assert [places_per_turn(limit) for limit in (1, 3, 4, 64, 100)] == [1, 1, 1, 16, 25]
    assert OriginGate(64).turn == 16 and OriginGate(64, turn=1).turn == 1


def test_a_limit_or_turn_below_one_is_refused_naming_it():
    with pytest.raises(ValueError, match="in-flight limit per origin must be >= 1, got 0"):
        OriginGate(0)
    with pytest.raises(ValueError, match="places per turn must be >= 1, got 0"):
        OriginGate(4, turn=0)
