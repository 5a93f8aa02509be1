"""Rollout stages and when they stop (core.rollout)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisor.core.errors import InvalidInput
from provisor.core.rollout import Amount, Rollout


def test_amounts_are_counts_or_percentages_rounded_up() -> None:
    assert Amount.parse("10", "batch").of(50) == 10
    assert Amount.parse("10%", "batch").of(55) == 6
    assert str(Amount.parse(" 25% ", "batch")) == "25%"


@pytest.mark.parametrize("text", ["", "ten", "-1", "101%", "1.5", "%"])
def test_a_bad_amount_says_which_option_and_how(text: str) -> None:
    with pytest.raises(InvalidInput, match="max_failures") as caught:
        Amount.parse(text, "max_failures")
    assert caught.value.field == "max_failures"


def test_canary_then_batches() -> None:
    rollout = Rollout(batch=Amount(10), canary=2)
    assert rollout.stages(25) == [2, 10, 10, 3]
    assert Rollout().stages(7) == [7]
    assert not Rollout().staged


@given(
    total=st.integers(0, 500),
    batch=st.integers(1, 600),
    percent=st.booleans(),
    canary=st.integers(0, 20),
)
def test_stages_cover_every_host_once(total: int, batch: int, percent: bool, canary: int) -> None:
    amount = Amount(min(batch, 100) if percent else batch, percent)
    stages = Rollout(batch=amount, canary=canary).stages(total)
    assert sum(stages) == total
    assert all(size > 0 for size in stages)


def test_a_failed_canary_stops_and_the_threshold_stops_later_stages() -> None:
    rollout = Rollout(batch=Amount(10), canary=1, max_failures=Amount(5))
    assert "canary" in (rollout.stop_reason(0, 1, 50) or "")
    assert rollout.stop_reason(1, 5, 50) is None
    assert "more than --max-failures 5" in (rollout.stop_reason(2, 6, 50) or "")
    assert Rollout(max_failures=Amount(10, percent=True)).stop_reason(0, 6, 50) == (
        "6 host(s) failed, more than --max-failures 10% (5 of 50)"
    )
