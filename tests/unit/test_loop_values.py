"""A delivery process's metrics without locks (`LoopValue`) read exactly as with prometheus_client's own
values: same counts, sums, buckets and gauges in the /metrics text a scraper gets."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, values

from hookline.sender.observe.metrics import (
    LoopValue,
    SenderMetrics,
    observe_ages,
    render,
    use_loop_values,
)


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


@pytest.mark.parametrize("value_class", [values.MutexValue, LoopValue])
def test_ages_observed_in_runs_read_as_one_observation_each(
    monkeypatch: pytest.MonkeyPatch, value_class: type
) -> None:
    """A batch's events that share a stored time (a bundle's) are observed in one step; the latency
    histogram a scraper reads is the one of one observation per event: buckets, sum and count."""
    monkeypatch.setattr(values, "ValueClass", value_class)
    now = 1000.0
    stored = [990.0] * 100 + [999.95] * 3 + [1000.5] + [400.0] * 2 + [990.0]  # 1000.5: ahead -> 0
    one_by_one, in_runs = CollectorRegistry(), CollectorRegistry()
    single = SenderMetrics(one_by_one).bind("shop", "orders", "")
    for at in stored:
        single.latency.observe(max(0.0, now - at))
    observe_ages(SenderMetrics(in_runs).bind("shop", "orders", "").latency, now, stored)
    expected = without_created(render(one_by_one))
    assert without_created(render(in_runs)) == expected
    counts = [line for line in expected if line.startswith(b"hookline_end_to_end_latency_seconds_count")]
    assert counts and counts[0].endswith(b" 107.0")
