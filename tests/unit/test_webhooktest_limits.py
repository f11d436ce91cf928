"""WebhookTest size limits (rules/webhooktest.size_problem) and each namespace's share of the outbound
client (adapters/shares.py): bounded before anything is built, and measured."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

from hookline.api import WEBHOOKTEST_MAX_BATCH_BYTES, WEBHOOKTEST_MAX_DATA_BYTES
from hookline.operator.adapters.shares import NamespaceShares
from hookline.operator.rules.webhooktest import build_batch, json_size, size_problem


def test_json_size_is_at_least_the_encoded_size_and_stops_past_the_limit():
    data = {"recipient": "a@b.example", "tags": ["x", "y"], "n": 12, "ok": True, "none": None, "é": "ü" * 3}
    exact = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    assert json_size(data, 10**9) >= exact - 8  # escapes and the literals' exact lengths aside
    big = {"blob": "x" * 10_000_000}
    assert json_size(big, WEBHOOKTEST_MAX_DATA_BYTES) == len(json.dumps(big, separators=(",", ":")))
    deep: object = "leaf"
    for _ in range(100_000):  # no recursion: deep nesting is just counted
        deep = [deep]
    assert json_size(deep, 10**9) == 200_006


def test_data_over_256_kib_is_refused_naming_the_field_and_the_limit():
    problem = size_problem({"data": {"recipient": "a" * (300 * 1024)}})
    assert problem is not None
    assert "spec.data" in problem and str(WEBHOOKTEST_MAX_DATA_BYTES) in problem and "256 KiB" in problem


def test_data_times_batch_over_8_mib_is_refused_with_the_largest_batch_that_fits():
    data = {"recipient": "a" * (200 * 1024)}
    problem = size_problem({"data": data, "batch": 50})
    assert problem is not None
    assert "spec.batch (50)" in problem and str(WEBHOOKTEST_MAX_BATCH_BYTES) in problem
    assert "lower spec.batch to at most 40" in problem
    assert size_problem({"data": data, "batch": 40}) is None
    assert size_problem({"data": {"recipient": "a@b.example"}, "batch": 1000}) is None


def test_a_refused_test_allocates_nothing_like_its_batch():
    """The issue measured ~3x data x batch in operator memory (50 x 200 KB -> 30 MB): now refused
    with a peak of a few KiB over the spec already in memory."""
    spec = {"webhook": "w", "event": "click", "data": {"recipient": "a" * 1_000_000}, "batch": 1000}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        problem = size_problem(spec)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert problem is not None
    print(f"[limits] 1 MB data x batch 1000 refused; peak allocation {peak} bytes")
    assert peak < 64 * 1024


def test_building_what_the_limits_allow_stays_bounded():
    """For scale: what the largest allowed test builds (40 x 200 KiB), measured the same way."""
    data = {"recipient": "a@b.example", "original": "https://x.example/", "tags": ["t" * (200 * 1024)]}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        events, _ = build_batch("click", data, 40)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(events) == 40
    print(f"[limits] the largest allowed batch (40 x 200 KiB) built with a peak of {peak / 2**20:.1f} MiB")
    assert peak < 64 * 1024 * 1024


async def test_a_namespace_runs_at_most_its_share_and_another_is_not_held_up():
    shares = NamespaceShares(2)
    release = asyncio.Event()
    running = {"slow": 0, "fast": 0}
    most = {"slow": 0, "fast": 0}

    async def operation(namespace: str, hold: bool) -> None:
        async with shares.slot(namespace):
            running[namespace] += 1
            most[namespace] = max(most[namespace], running[namespace])
            if hold:
                await release.wait()
            running[namespace] -= 1

    slow = [asyncio.create_task(operation("slow", True)) for _ in range(10)]
    await asyncio.sleep(0)
    async with asyncio.timeout(1):  # the other namespace does not wait for the slow one's slots
        await asyncio.gather(*(operation("fast", False) for _ in range(5)))
    assert shares.busy("slow") == 2 and most["slow"] == 2 and most["fast"] <= 2
    release.set()
    await asyncio.gather(*slow)
    assert shares.busy("slow") == 0 and not shares._slots  # nothing kept for idle namespaces
