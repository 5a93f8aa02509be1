"""provisor.polling: the one way provisor waits (no wall-clock figures asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from provisor.polling import poll_until, poll_until_sync


def answers(*values: object) -> Iterator[object]:
    yield from values
    while True:
        yield None


def test_the_first_answer_is_returned_and_none_or_false_mean_not_yet() -> None:
    sync = answers(None, False, 0, "late")
    assert poll_until_sync(lambda: next(sync), timeout=30, first=0.001) == 0
    calls: list[int] = []

    async def check() -> str | None:
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    assert asyncio.run(poll_until(check, timeout=30, first=0.001)) == "ready"
    assert len(calls) == 3


def test_time_running_out_gives_none_after_a_last_look() -> None:
    asked: list[int] = []

    def never() -> bool:
        asked.append(1)
        return False

    assert poll_until_sync(never, timeout=0.05, first=0.01) is None
    assert len(asked) >= 2  # at once, then at least the last look at the deadline
    before = len(asked)
    assert asyncio.run(poll_until(never, timeout=0)) is None
    assert len(asked) - before == 1  # no time at all: asked once


def test_a_failing_check_ends_the_wait_with_its_error() -> None:
    def broken() -> None:
        raise ValueError("no such thing")

    with pytest.raises(ValueError, match="no such thing"):
        poll_until_sync(broken, timeout=30)
    with pytest.raises(ValueError, match="no such thing"):
        asyncio.run(poll_until(broken, timeout=30))
