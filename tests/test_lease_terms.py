"""The pure rules of leases and scheduled starts (core/lease.py): `now` is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from provisor.core.errors import InvalidInput
from provisor.core.lease import (
    MAX_LEASE,
    LeaseTerms,
    describe_left,
    extended,
    lease_terms,
    parse_lease,
    seconds_left,
)

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def _terms(**given: Any) -> LeaseTerms:
    options: dict[str, Any] = {
        "now": NOW,
        "lease": None,
        "default": None,
        "at": None,
        "policy": None,
        "default_policy": "stop",
    }
    return lease_terms(**{**options, **given})


def test_a_lease_counts_from_the_start() -> None:
    assert _terms(lease="30d") == _terms(default=timedelta(days=30))
    now = _terms(lease="30d")
    assert now.expires_at == NOW + timedelta(days=30) and now.starts_at is None
    later = _terms(lease="2h", at="2026-12-08T08:00")
    assert later.starts_at == NOW + timedelta(days=1)
    assert later.expires_at == NOW + timedelta(days=1, hours=2)
    assert _terms(lease="none", default=timedelta(days=1)).expires_at is None
    assert _terms(at="90s").starts_at == NOW + timedelta(seconds=90)
    assert _terms(policy="terminate").policy == "terminate"
    assert _terms(default_policy="terminate").policy == "terminate"


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        ({"at": "2026-12-07T07:59:59Z"}, "at", "is in the past"),
        ({"at": "2026-12-07T08:00"}, "at", "is in the past"),  # now is not later
        ({"at": "2028-01-01"}, "at", "days ahead"),
        ({"at": "next tuesday"}, "at", "cannot read"),
        ({"lease": "0s"}, "lease", "at least 1s"),
        ({"lease": "3000d"}, "lease", "longer than the longest lease"),
        ({"lease": "1y"}, "lease", "invalid duration"),
        ({"policy": "delete"}, "lease_end", "use stop or terminate"),
    ],
)
def test_wrong_terms_say_what_and_where(given: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        _terms(**given)
    assert info.value.field == field


def test_an_extension_moves_the_end_forward_within_bounds() -> None:
    end = NOW + timedelta(days=1)
    assert extended(now=NOW, expires_at=end, by="7d", until=None) == end + timedelta(days=7)
    ended = NOW - timedelta(hours=1)  # counted from now once the end has passed
    assert extended(now=NOW, expires_at=ended, by="1h", until=None) == NOW + timedelta(hours=1)
    assert extended(now=NOW, expires_at=None, by="1h", until=None) == NOW + timedelta(hours=1)
    assert extended(now=NOW, expires_at=end, by=None, until="2026-12-07T09:00") == NOW + timedelta(
        hours=1
    )
    for by, until, message in (
        (None, None, "give one of"),
        ("1d", "2d", "give one of"),
        (None, "2026-12-07T07:00", "in the past"),
        (None, "2040-01-01", "days from now"),
        ("none", None, "needs a duration"),
    ):
        with pytest.raises(InvalidInput, match=message):
            extended(now=NOW, expires_at=end, by=by, until=until)
    assert parse_lease("1830d") == MAX_LEASE  # the longest allowed


def test_time_left_reads_as_operators_write_it() -> None:
    assert seconds_left(None, NOW) is None
    assert seconds_left(NOW - timedelta(seconds=5), NOW) == 0
    assert describe_left(None) == "" and describe_left(0) == "ended"
    assert describe_left(3 * 86400 + 4 * 3600 + 5) == "3d 4h"
    assert describe_left(725) == "12m 5s"
