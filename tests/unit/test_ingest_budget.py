"""The heavy lane's byte budget: a token bucket that runs into debt for a large body."""

from __future__ import annotations

import pytest

from hookline.sender.ingest.budget import ByteBudget

MIB = 1024 * 1024


def test_a_full_bucket_serves_its_burst_at_once_then_paces_to_the_rate():
    budget = ByteBudget(rate=4 * MIB, burst=2 * MIB)
    assert budget.take(MIB, now=0.0) == 0.0
    assert budget.take(MIB, now=0.0) == 0.0
    assert budget.take(MIB, now=0.0) == pytest.approx(0.25)  # 1 MiB of debt at 4 MiB/s
    assert budget.take(MIB, now=0.0) == pytest.approx(0.5)  # queued behind the first
    assert budget.take(MIB, now=1.0) == pytest.approx(0.0)  # 4 MiB refilled pays the debt and this


def test_a_body_larger_than_the_burst_waits_for_its_excess_and_savings_are_capped():
    budget = ByteBudget(rate=MIB, burst=MIB)
    assert budget.take(3 * MIB, now=100.0) == pytest.approx(2.0)
    assert budget.take(0, now=1000.0) == 0.0
    assert budget.level == MIB  # an idle hour saves no more than the burst


def test_bytes_given_back_are_available_again():
    budget = ByteBudget(rate=MIB, burst=MIB)
    assert budget.take(2 * MIB, now=0.0) == pytest.approx(1.0)
    budget.give_back(2 * MIB)
    assert budget.take(MIB, now=0.0) == 0.0
