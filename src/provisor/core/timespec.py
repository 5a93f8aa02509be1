"""Reading times and durations as operators write them: `15m`, `2h`, `7d`, or ISO 8601."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from provisor.core.errors import InvalidInput

_DURATION = re.compile(r"([0-9]{1,9})\s*([smhdw])")  # a billion weeks is plenty
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EXAMPLES = {"s": "30s", "m": "15m", "h": "2h", "d": "7d", "w": "2w"}


def parse_duration(text: str, *, units: str = "smhdw") -> timedelta:
    """`15m` is 15 minutes: a whole number, then one of `units` (s, m, h, d, w).

    Space around and between the two is allowed. Raises ValueError for anything else;
    a caller with a narrower syntax (the blueprint's lease) checks it before.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or match.group(2) not in units:
        examples = ", ".join(_EXAMPLES[unit] for unit in _UNITS if unit in units)
        raise ValueError(f"invalid duration {_shown(text)}: a number and a unit, e.g. {examples}")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"duration {_shown(text)} is too long") from None


def parse_seconds(text: str) -> float:
    """`90` or `90s`, `15m`, `2h`, `1d` as seconds. Raises ValueError for anything else."""
    try:
        seconds = float(text)
    except ValueError:
        return parse_duration(text, units="smhd").total_seconds()
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {_shown(text)}: a number of seconds, or e.g. 15m")
    return seconds


def _shown(text: str) -> str:
    """`text` quoted for a message, cut short: a message never repeats a megabyte."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_since(text: str, *, now: datetime, field: str = "since") -> datetime:
    """`15m` means 15 minutes before `now`; an ISO time without a zone is UTC."""
    value = text.strip()
    try:
        ago = parse_duration(value)
    except ValueError as exc:
        if _DURATION.fullmatch(value):  # a duration, but too long for a time
            raise InvalidInput(str(exc), field=field) from None
    else:
        try:
            return now - ago
        except OverflowError:
            raise InvalidInput(f"{_shown(text)} reaches back before year 1", field=field) from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"cannot read {_shown(text)} as a time: use e.g. 30s, 15m, 2h, 7d, 2w "
            "or an ISO time like 2026-11-21T08:00",
            field=field,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
