"""OriginGate (transport/sharing.py): places per origin, handed over in order of arrival, and never
lost when a waiter gives up, even one handed a place it had not taken yet."""

from __future__ import annotations

import asyncio

import pytest

from hookline.sender.transport.sharing import OriginGate

SHOP = ("https", "shop.example", 443)
OTHER = ("https", "other.example", 443)


async def test_places_are_per_origin_and_handed_over_in_order_of_arrival():
    gate = OriginGate(2)
    assert gate.try_enter(SHOP) and gate.try_enter(SHOP)
    assert not gate.try_enter(SHOP)
    assert gate.try_enter(OTHER)  # another receiver has its own places
    order: list[int] = []

    async def wait(n: int) -> None:
        await gate.enter(SHOP)
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert gate.waiting(SHOP) == 3 and order == []
    for _ in range(3):
        gate.leave(SHOP)
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert gate.in_flight(SHOP) == 2  # the places moved on, their count did not change
    assert not gate.try_enter(SHOP)  # and nobody jumped the line


async def test_a_waiter_cancelled_as_it_is_handed_a_place_passes_it_on():
    gate = OriginGate(1)
    assert gate.try_enter(SHOP)
    first = asyncio.create_task(gate.enter(SHOP))
    second = asyncio.create_task(gate.enter(SHOP))
    await asyncio.sleep(0)
    gate.leave(SHOP)  # hands the place to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the place went on to the next in line
    assert gate.in_flight(SHOP) == 1
    gate.leave(SHOP)
    assert gate.in_flight(SHOP) == 0 and gate.waiting(SHOP) == 0


async def test_a_withdrawn_waiter_leaves_no_place_behind():
    gate = OriginGate(1)
    assert gate.try_enter(SHOP)
    waiter = gate.queue(SHOP)
    gate.withdraw(SHOP, waiter)
    gate.leave(SHOP)
    assert gate.in_flight(SHOP) == 0 and gate.waiting(SHOP) == 0
    assert gate.try_enter(SHOP)


def test_a_limit_below_one_is_refused_naming_it():
    with pytest.raises(ValueError, match="in-flight limit per origin must be >= 1, got 0"):
        OriginGate(0)
