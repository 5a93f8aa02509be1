"""The CLI's table helpers: times short enough for a narrow column, and which columns
give way when a listing is wider than the terminal."""

from __future__ import annotations

from datetime import UTC, datetime

from provisor.cli.output import _fit, short_time

NOW = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)


def test_short_time_drops_the_year_only_for_recent_times() -> None:
    assert short_time(datetime(2026, 12, 7, 9, 5, 3, tzinfo=UTC), now=NOW) == "12-07 09:05"
    assert short_time(datetime(2026, 7, 1, 9, 5, 3), now=NOW, seconds=True) == "07-01 09:05:03"
    assert short_time(datetime(2025, 12, 7, 9, 5, tzinfo=UTC), now=NOW) == "2025-12-07"


def test_the_widest_cuttable_column_gives_way_first_and_none_below_its_floor() -> None:
    # name (kept), details (cut), target (cut): 10 cells too many.
    assert _fit([12, 40, 20], [4, 7, 6], [False, True, True], 62) == [12, 30, 20]
    # Down to the floors, never past them; what is still too wide is left to rich.
    assert _fit([12, 40, 20], [4, 7, 6], [False, True, True], 20) == [12, 7, 6]
    assert _fit([12, 40], [4, 7], [False, False], 20) == [12, 40]
