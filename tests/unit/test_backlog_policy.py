"""The backlog policy (operator/rules/backlog.py): which Webhooks' backlogs are moved aside, and how many."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from hookline.operator.loops.backlog import BacklogMover
from hookline.operator.metrics import OperatorMetrics
from hookline.operator.rules.backlog import (
    BacklogSettings,
    ConsumerState,
    Move,
    Progress,
    StreamFill,
    decide,
    stop_of,
    track_progress,
    webhook_of_consumer,
)
from hookline.operator.settings import backlog_from_env
from hookline.sender.bus.backlog import MoveResult
from hookline.sender.model.config import consumer_name

MIB = 1024 * 1024
SETTINGS = BacklogSettings(high_water=0.6, stalled_seconds=300, moves_per_tick=1_000)


def state(name: str, pending: int, floor: int = 0, *, ack_pending: int = 0, stopped: str | None = None):
    return ConsumerState(consumer_name(name, "hook"), (name, "hook"), pending, ack_pending, floor, stopped)


def test_below_the_high_water_mark_nothing_moves_even_a_stopped_webhook():
    fill = StreamFill(int(0.59 * 100 * MIB), 100 * MIB)
    assert decide(fill, [state("a", 5_000, stopped="Paused")], {}, 0.0, SETTINGS) == []


def test_above_the_mark_a_stopped_webhook_is_moved_and_a_progressing_one_is_not():
    fill = StreamFill(70 * MIB, 100 * MIB)
    paused = state("a", 400, floor=10, stopped="Paused")
    healthy = state("b", 300, floor=5)
    progress = track_progress({}, [paused, healthy], now=0.0)
    moves = decide(fill, [paused, healthy], progress, 10.0, SETTINGS)
    assert [(m.webhook, m.count) for m in moves] == [(("a", "hook"), 400)]
    assert "70% of its byte limit" in moves[0].why and "stopped (Paused)" in moves[0].why
    assert not moves[0].resume  # a spec.paused consumer is not paused in NATS


def test_a_webhook_without_ack_progress_for_stalled_seconds_counts_as_stuck():
    fill = StreamFill(90 * MIB, 100 * MIB)
    hanging = state("a", 200, floor=7, ack_pending=5)
    progress = track_progress({}, [hanging], now=0.0)
    assert decide(fill, [hanging], progress, 299.0, SETTINGS) == []
    progress = track_progress(progress, [hanging], now=301.0)  # the floor did not move
    (move,) = decide(fill, [hanging], progress, 301.0, SETTINGS)
    assert move.count == 200 and "acknowledged nothing for 301 s" in move.why
    moved_on = state("a", 200, floor=8, ack_pending=5)
    assert track_progress(progress, [moved_on], now=302.0)[moved_on.consumer] == Progress((8, 0), 302.0)


def test_the_loops_own_moves_do_not_count_as_progress():
    fill = StreamFill(90 * MIB, 100 * MIB)
    stuck = state("a", 500, floor=7)
    progress = track_progress({}, [stuck], now=0.0)
    progress = track_progress(progress, [stuck], now=301.0)
    assert decide(fill, [stuck], progress, 301.0, SETTINGS)[0].count == 500
    after_move = ConsumerState(stuck.consumer, stuck.webhook, 300, 0, 207, delivered=207)
    progress = track_progress(progress, [after_move], now=311.0, moved={stuck.consumer})
    assert progress[stuck.consumer] == Progress((207, 207), 0.0)  # still stuck since 0
    assert decide(fill, [after_move], progress, 311.0, SETTINGS)[0].count == 300
    assert track_progress(progress, [after_move], now=312.0)[stuck.consumer].since == 0.0
    progressed = ConsumerState(stuck.consumer, stuck.webhook, 290, 0, 217, delivered=217)
    assert track_progress(progress, [progressed], now=320.0)[stuck.consumer].since == 320.0


def test_a_webhook_taking_new_events_is_not_stuck_while_one_event_holds_its_floor():
    fill = StreamFill(90 * MIB, 100 * MIB)
    retrying = ConsumerState(consumer_name("a", "hook"), ("a", "hook"), 50, 3, 7, delivered=1_000)
    progress = track_progress({}, [retrying], now=0.0)
    later = ConsumerState(consumer_name("a", "hook"), ("a", "hook"), 50, 3, 7, delivered=1_400)
    progress = track_progress(progress, [later], now=400.0)
    assert decide(fill, [later], progress, 400.0, SETTINGS) == []


def test_gone_and_disabled_consumers_are_resumed_for_the_move():
    fill = StreamFill(61 * MIB, 100 * MIB)
    (move,) = decide(fill, [state("a", 10, stopped="gone")], {}, 0.0, SETTINGS)
    assert move.resume


def test_the_oldest_holder_goes_first_and_the_tick_budget_bounds_the_work():
    fill = StreamFill(95 * MIB, 100 * MIB)
    states = [state("young", 900, floor=500, stopped="Paused"), state("old", 800, floor=3, stopped="gone")]
    moves = decide(fill, states, {}, 0.0, SETTINGS)
    assert [(m.webhook[0], m.count) for m in moves] == [("old", 800), ("young", 200)]
    assert sum(m.count for m in moves) == SETTINGS.moves_per_tick


def test_the_per_webhook_cap_moves_only_the_excess_at_any_fill():
    settings = BacklogSettings(max_pending=1_000, moves_per_tick=10_000)
    fill = StreamFill(1 * MIB, -1)  # no byte limit: the cap still applies
    moves = decide(fill, [state("big", 1_500, floor=1), state("small", 999)], {}, 0.0, settings)
    assert [(m.webhook[0], m.count) for m in moves] == [("big", 500)]
    assert "over the backlog cap of 1000" in moves[0].why


def test_nothing_moves_when_disabled():
    settings = BacklogSettings(enabled=False, max_pending=1)
    assert decide(StreamFill(99, 100), [state("a", 50, stopped="Paused")], {}, 0.0, settings) == []


def test_stops_the_operator_knows_of_come_from_the_ready_reason():
    assert stop_of("Paused") == "Paused" and stop_of("ScopeNotAllowed") == "ScopeNotAllowed"
    assert stop_of("SenderAvailable") is None and stop_of("") is None


def test_consumers_map_back_to_their_webhooks():
    assert webhook_of_consumer(consumer_name("team-a", "orders.eu"), {}) == ("team-a", "orders.eu")
    long_name = "x" * 200
    hashed = consumer_name("team-a", long_name)
    assert webhook_of_consumer(hashed, {}) is None
    assert webhook_of_consumer(hashed, {hashed: ("team-a", long_name)}) == ("team-a", long_name)
    assert webhook_of_consumer("HOOKLINE_EVENTS_RECOVERY_reader", {}) is None


def test_settings_from_the_environment_name_the_variable_on_error():
    settings = backlog_from_env(
        {"HOOKLINE_BACKLOG_HIGH_WATER_PERCENT": "75", "HOOKLINE_BACKLOG_MAX_PENDING": "5"}
    )
    assert settings.high_water == 0.75 and settings.max_pending == 5
    with pytest.raises(ValueError, match="HOOKLINE_BACKLOG_MAX_PENDING"):
        backlog_from_env({"HOOKLINE_BACKLOG_MAX_PENDING": "-3"})
    with pytest.raises(ValueError, match="high-water"):
        backlog_from_env({"HOOKLINE_BACKLOG_HIGH_WATER_PERCENT": "150"})


class FakeBus:
    """The backlog loop's NATS side, answering from memory: one stopped Webhook, always over the mark."""

    def __init__(self) -> None:
        self.moves: list[Move] = []

    async def fill(self) -> StreamFill:
        return StreamFill(90 * MIB, 100 * MIB)

    async def states(self, known, stopped) -> list[ConsumerState]:
        return [state("a", 100, floor=len(self.moves), stopped="Paused")]

    async def move(self, move: Move, on_moved: Callable[[int], None]) -> MoveResult:
        self.moves.append(move)
        on_moved(move.count)
        return MoveResult(move.count)


async def test_the_loop_reports_a_webhook_at_most_every_interval_with_the_moves_added_up():
    reports: list[tuple[Move, MoveResult]] = []

    async def report(move: Move, result: MoveResult) -> None:
        reports.append((move, result))

    bus = FakeBus()
    mover = BacklogMover(bus, SETTINGS, OperatorMetrics(CollectorRegistry()), dict, report)  # type: ignore[arg-type]
    for second in (0.0, 10.0, 20.0, 400.0):
        await mover.tick(now=second)
    assert len(bus.moves) == 4
    assert [r.moved for _, r in reports] == [100, 300]  # at 0, then 400 with the two in between
    assert mover.metrics.moved_aside.labels("a", "hook")._value.get() == 400
