"""Which events of a request go into which bundle (pure: ingest/bundling.py)."""

from __future__ import annotations

from hookline.sender.bus.publish import Fate
from hookline.sender.ingest.body import Outgoing
from hookline.sender.ingest.bundling import Group, answer_fates, plan_bundles


def out(event_id: str, subject: str = "s.a", size: int = 10) -> Outgoing:
    return Outgoing(event_id, subject, b"x" * size)


def test_events_of_one_subject_go_together_in_request_order_and_one_alone_is_plain():
    plan = plan_bundles([out("a"), out("b", "s.b"), out("c"), out("d")], 100, 10_000)
    assert plan.groups == (Group("s.a", (0, 2, 3)), Group("s.b", (1,)))
    assert [g.plain for g in plan.groups] == [False, True]


def test_a_bundle_holds_at_most_max_events():
    plan = plan_bundles([out(str(i)) for i in range(7)], 3, 10_000)
    assert [g.members for g in plan.groups] == [(0, 1, 2), (3, 4, 5), (6,)]


def test_a_bundle_holds_at_most_max_bytes_with_its_newlines():
    # 3 events of 10 bytes and 2 newlines: 32 bytes; a limit of 31 puts the third in the next bundle
    plan = plan_bundles([out(str(i)) for i in range(3)], 100, 31)
    assert [g.members for g in plan.groups] == [(0, 1), (2,)]
    assert [g.members for g in plan_bundles([out(str(i)) for i in range(3)], 100, 32).groups] == [(0, 1, 2)]


def test_max_events_is_capped_at_the_formats_limit():
    plan = plan_bundles([out(str(i), size=1) for i in range(1001)], 5000, 10**9)
    assert [len(g.members) for g in plan.groups] == [1000, 1]


def test_a_repeated_id_is_planned_once_and_answered_with_the_first_ones_fate():
    plan = plan_bundles([out("a"), out("b"), out("a")], 100, 10_000)
    assert plan.groups == (Group("s.a", (0, 1)),) and plan.repeats == {2: 0}
    assert answer_fates(3, {0: Fate.STORED, 1: Fate.STORED}, plan.repeats) == [
        Fate.STORED,
        Fate.STORED,
        Fate.DUPLICATE,
    ]
    assert answer_fates(3, {0: Fate.UNKNOWN, 1: Fate.STORED}, plan.repeats)[2] is Fate.UNKNOWN
