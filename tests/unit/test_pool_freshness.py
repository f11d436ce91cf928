"""Which of two authentic pool entries of one Webhook is newer (issue 19, item 3: a replayed old entry
is refused). The generation decides for the same Webhook, so an operator leader whose clock is behind
never holds back a spec change; the issue time decides otherwise."""

from __future__ import annotations

from hookline.sender.bus.poolproto import Freshness


def test_the_generation_decides_for_the_same_webhook_whatever_the_clocks() -> None:
    applied = Freshness("uid-1", 3, 1000.0)
    assert Freshness("uid-1", 2, 2000.0).older_than(applied)  # replayed generation 2, later clock
    assert not Freshness("uid-1", 4, 900.0).older_than(applied)  # a new leader's clock behind


def test_the_issue_time_decides_within_a_generation_and_across_webhooks_of_one_name() -> None:
    applied = Freshness("uid-1", 3, 1000.0)
    assert Freshness("uid-1", 3, 999.0).older_than(applied)  # a rotated Secret's earlier entry
    assert not Freshness("uid-1", 3, 1000.0).older_than(applied)  # the same entry again (a move)
    assert Freshness("uid-0", 9, 500.0).older_than(applied)  # the deleted Webhook of that name
    assert not Freshness("uid-2", 1, 1500.0).older_than(applied)  # made again after it
