"""Waiting for something to become true: the one way provisor waits.

A wait asks its question at once, then again after pauses that start short and grow
(a quick answer is seen quickly, a slow one costs few questions), and stops at its
deadline with one last look. It returns the answer, or None when time ran out: the
caller says what timing out means, in its own words.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, overload

T = TypeVar("T")


def _pauses(
    timeout: float, first: float, factor: float, most: float, jitter: bool
) -> Iterator[float | None]:
    """The pauses between questions until the deadline, then None: the last question."""
    deadline = time.monotonic() + timeout
    pause = first
    while (left := deadline - time.monotonic()) > 0:
        spread = random.uniform(0.5, 1.5) if jitter else 1.0  # noqa: S311 (not for secrets)
        yield min(left, pause * spread)
        pause = min(pause * factor, most)
    yield None


def _answered(found: object) -> bool:
    return found is not None and found is not False


@overload
async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    first: float = ...,
    factor: float = ...,
    most: float = ...,
    jitter: bool = ...,
) -> T | None: ...


@overload
async def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    first: float = ...,
    factor: float = ...,
    most: float = ...,
    jitter: bool = ...,
) -> T | None: ...


async def poll_until(
    check: Callable[[], Any],
    *,
    timeout: float,
    first: float = 0.005,
    factor: float = 2.0,
    most: float = 0.1,
    jitter: bool = False,
) -> Any:
    """The first answer of `check` (sync or async) that is neither None nor False, or None
    after `timeout` seconds. `jitter` spreads the pauses of many waiters on one service."""
    for pause in _pauses(timeout, first, factor, most, jitter):
        found = check()
        if isinstance(found, Awaitable):
            found = await found
        if _answered(found):
            return found
        if pause is None:
            return None
        await asyncio.sleep(pause)
    return None  # pragma: no cover (the pauses always end with None)


def poll_until_sync(
    check: Callable[[], T | None],
    *,
    timeout: float,
    first: float = 0.005,
    factor: float = 2.0,
    most: float = 0.1,
) -> T | None:
    """`poll_until` for code that runs in a thread of its own (it blocks while it waits)."""
    for pause in _pauses(timeout, first, factor, most, jitter=False):
        found = check()
        if _answered(found):
            return found
        if pause is None:
            return None
        time.sleep(pause)
    return None  # pragma: no cover (the pauses always end with None)


__all__ = ["poll_until", "poll_until_sync"]
