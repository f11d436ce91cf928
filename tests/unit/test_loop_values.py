"""A delivery process's metrics without locks (`LoopValue`) read exactly as with prometheus_client's own
values: same counts, sums, buckets and gauges in the /metrics text a scraper gets."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, values

from hookline.sender.observe.metrics import LoopValue, SenderMetrics, render, use_loop_values


def exercise(registry: CollectorRegistry) -> bytes:
    metrics = SenderMetrics(registry)
    child = metrics.bind("shop", "orders", "")
    for status in ("success", "success", "http_error", "timeout"):
        child.attempts[status].inc()
    child.deliveries["delivered"].inc(7)
    child.dead_letters["max_attempts"].inc()
    for seconds in (0.001, 0.02, 0.3, 4.0, 100.0):
        child.duration.observe(seconds)
    child.in_flight.inc()
    child.in_flight.inc()
    child.in_flight.dec()
    child.pending.set(42)
    return render(registry)


def without_created(text: bytes) -> list[bytes]:
    """The exposition minus `_created` samples (their timestamps differ between two registries)."""
    return [line for line in text.splitlines() if b"_created" not in line]


def test_loop_values_render_the_same_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    locked = exercise(CollectorRegistry())
    use_loop_values()
    assert values.ValueClass is LoopValue
    unlocked = exercise(CollectorRegistry())
    assert without_created(unlocked) == without_created(locked)
    assert b"hookline_delivery_attempts_total{" in unlocked  # the families exist, with their samples
