"""Reading times as operators write them: `15m`, `2h`, `7d`, or ISO 8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from provisor.core.errors import InvalidInput

_AGO = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime, field: str = "since") -> datetime:
    """`15m` means 15 minutes before `now`; an ISO time without a zone is UTC."""
    value = text.strip()
    match = _AGO.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"cannot read {text!r} as a time: use e.g. 30s, 15m, 2h, 7d, 2w "
            "or an ISO time like 2026-11-21T08:00",
            field=field,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
