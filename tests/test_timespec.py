"""Durations and times as operators write them: one parser for `--since` and the lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisor.core.blueprint import load_blueprint
from provisor.core.errors import InvalidInput, ParseErrors
from provisor.core.timespec import parse_duration, parse_since

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        (" 2h ", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("5 m", timedelta(minutes=5)),
        ("0m", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "15", "15M", "1.5h", "-5m", "15mm", "2026-11-21"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_units_narrow_what_is_read() -> None:
    assert parse_duration("90m", units="mhdw") == timedelta(minutes=90)
    with pytest.raises(ValueError, match=r"e\.g\. 15m, 2h, 7d, 2w$"):
        parse_duration("30s", units="mhdw")


def test_since_reads_durations_and_times() -> None:
    assert parse_since("15m", now=NOW) == NOW - timedelta(minutes=15)
    assert parse_since("30s", now=NOW) == NOW - timedelta(seconds=30)
    assert parse_since("2026-11-20T08:00", now=NOW) == NOW - timedelta(days=1)
    with pytest.raises(InvalidInput, match="cannot read 'yesterday' as a time"):
        parse_since("yesterday", now=NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999d", "reaches back before year 1"),
        ("999999999w", "duration '999999999w' is too long"),
        ("9" * 100_000 + "s", r"cannot read '9{37}\.\.\.' as a time"),  # never echoed whole
        ("\u0661\u0665m", "cannot read"),  # digits, but not the ones operators type
    ],
)
def test_since_refuses_what_is_no_time_with_a_short_message(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_since(text, now=NOW)
    assert len(info.value.message) < 200


MINIMAL = "name: shop\nversion: '1'\nnodes:\n  app:\n    image: debian-12\n"


@pytest.mark.parametrize(
    ("lease", "expected"),
    [("90m", timedelta(minutes=90)), ("2w", timedelta(weeks=2)), ("none", None)],
)
def test_lease_duration(lease: str, expected: timedelta | None) -> None:
    assert load_blueprint(MINIMAL + f"lease: {lease}\n").lease_duration == expected


@pytest.mark.parametrize("lease", ["30s", "0m", "05h", "1000000m", "5 h"])
def test_lease_is_narrower_than_since(lease: str) -> None:
    with pytest.raises(ParseErrors, match=f"invalid lease '{lease}'"):
        load_blueprint(MINIMAL + f"lease: {lease}\n")
