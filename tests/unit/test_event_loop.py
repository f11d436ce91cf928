"""Which event loop a service command runs on: uvloop for the delivery processes (sender, pool), the
standard one for the rest and whenever HOOKLINE_EVENT_LOOP=asyncio says so."""

from __future__ import annotations

import asyncio
import gc

import uvloop
from prometheus_client import values

from hookline.sender.observe.health import LOOP_ENV, loop_factory, run_until_signal
from hookline.sender.observe.metrics import LoopValue


def test_delivery_processes_get_uvloop_and_others_the_standard_loop(monkeypatch):
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert loop_factory(True) is uvloop.new_event_loop
    assert loop_factory(False) is None


def test_the_standard_loop_can_be_asked_for(monkeypatch):
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert loop_factory(True) is None


def test_run_until_signal_runs_on_the_chosen_loop(monkeypatch):
    monkeypatch.delenv(LOOP_ENV, raising=False)
    # A delivery process also tunes its collector and metric values; not this test process's.
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "set_threshold", lambda *thresholds: None)
    seen: list[type] = []

    async def main(stop: asyncio.Event) -> int:
        seen.append(type(asyncio.get_running_loop()))
        return 3

    assert run_until_signal(main, fast_loop=True) == 3
    assert run_until_signal(main) == 3
    assert seen[0] is uvloop.Loop and not issubclass(seen[1], uvloop.Loop)


def test_a_delivery_process_makes_its_metrics_without_locks(monkeypatch):
    """`hookline sender` and `hookline pool` update metrics from their loop's thread only."""
    monkeypatch.delenv(LOOP_ENV, raising=False)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "set_threshold", lambda *thresholds: None)

    async def main(stop: asyncio.Event) -> int:
        return 0

    run_until_signal(main)
    assert values.ValueClass is not LoopValue
    run_until_signal(main, fast_loop=True)
    assert values.ValueClass is LoopValue
