"""Leases and scheduled starts: when a deployment starts, when it ends, and what then.

A lease is a duration (`30d`; the CLI and API accept seconds too, `90s`, which the
blueprint's `lease` does not) counted from the deployment's start: the request, or the
time `--at` names. At its end the deployment is stopped (machines off, disks kept) or
terminated, per its policy. Everything here is pure: `now` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from provisor.core.errors import InvalidInput
from provisor.core.timespec import parse_duration

POLICIES = ("stop", "terminate")
MAX_LEASE = timedelta(days=5 * 366)  # longer is a mistake: no lease at all says so
MAX_AHEAD = timedelta(days=366)  # how far ahead a deployment may be scheduled
NO_LEASE = "none"


@dataclass(frozen=True)
class LeaseTerms:
    starts_at: datetime | None  # None: now
    expires_at: datetime | None  # None: no lease
    policy: str


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_moment(text: str, *, now: datetime, field: str) -> datetime:
    """An ISO time (UTC when it names no zone), or a duration from now (`2h`)."""
    value = text.strip()
    try:
        return now + parse_duration(value)
    except ValueError:
        pass
    except OverflowError:
        raise InvalidInput(f"{value[:40]!r} is too far ahead", field=field) from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise InvalidInput(
            f"cannot read {shown!r} as a time: use an ISO time like 2026-11-21T08:00 "
            "(UTC unless it names a zone) or a duration from now like 30m, 2h, 7d",
            field=field,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_lease(text: str, *, field: str = "lease") -> timedelta | None:
    """`30d`, `12h`, `90s`...; `none` for no lease. Bounded by MAX_LEASE."""
    if text.strip().lower() == NO_LEASE:
        return None
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"{exc} (or `none`)", field=field) from None
    if duration <= timedelta(0):
        raise InvalidInput("a lease must last at least 1s (or be `none`)", field=field)
    if duration > MAX_LEASE:
        hint = ": give none for a deployment without an end" if field == "lease" else ""
        raise InvalidInput(
            f"{text.strip()} is longer than the longest lease allowed ({MAX_LEASE.days} "
            f"days){hint}",
            field=field,
        )
    return duration


def check_policy(policy: str, *, field: str = "lease_end") -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"unknown lease end {policy[:40]!r}: use stop or terminate", field=field)
    return policy


def lease_terms(
    *,
    now: datetime,
    lease: str | None,
    default: timedelta | None,
    at: str | None,
    policy: str | None,
    default_policy: str,
) -> LeaseTerms:
    """The terms of a new deployment: `--lease` (else the blueprint's `default`), `--at`,
    `--lease-end` (else the blueprint's `default_policy`)."""
    starts_at = None
    if at is not None:
        starts_at = parse_moment(at, now=now, field="at")
        if starts_at <= now:
            raise InvalidInput(
                f"--at {_stamp(starts_at)} is in the past (it is {_stamp(now)} now): "
                "give a later time, or leave --at out to deploy now",
                field="at",
            )
        if starts_at > now + MAX_AHEAD:
            raise InvalidInput(
                f"--at {_stamp(starts_at)} is more than {MAX_AHEAD.days} days ahead",
                field="at",
            )
    duration = parse_lease(lease) if lease is not None else default
    expires_at = (starts_at or now) + duration if duration is not None else None
    return LeaseTerms(starts_at, expires_at, check_policy(policy or default_policy))


def extended(
    *, now: datetime, expires_at: datetime | None, by: str | None, until: str | None
) -> datetime:
    """The new end of a lease: `by` a duration after its current end (after now when it
    has none, or has ended), or `until` a time; never in the past, never past MAX_LEASE
    from now."""
    if (by is None) == (until is None):
        raise InvalidInput("give one of --by (e.g. 7d) or --until (a time)", field="by")
    if by is not None:
        duration = parse_lease(by, field="by")
        if duration is None:
            raise InvalidInput("--by needs a duration, e.g. 7d", field="by")
        base = expires_at if expires_at is not None and expires_at > now else now
        end = base + duration
        field = "by"
    else:
        assert until is not None
        end = parse_moment(until, now=now, field="until")
        field = "until"
        if end <= now:
            raise InvalidInput(
                f"--until {_stamp(end)} is in the past (it is {_stamp(now)} now)", field=field
            )
    if end > now + MAX_LEASE:
        raise InvalidInput(
            f"the lease would end {_stamp(end)}, more than {MAX_LEASE.days} days from now",
            field=field,
        )
    return end


def seconds_left(expires_at: datetime | None, now: datetime) -> int | None:
    """Whole seconds until the end (0 once it passed); None without a lease."""
    if expires_at is None:
        return None
    return max(0, int((expires_at - now).total_seconds()))


def describe_left(seconds: int | None) -> str:
    """`3d 4h`, `12m 5s`, `ended`; empty without a lease (for tables)."""
    if seconds is None:
        return ""
    if seconds <= 0:
        return "ended"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown)


__all__ = [
    "MAX_AHEAD",
    "MAX_LEASE",
    "POLICIES",
    "LeaseTerms",
    "check_policy",
    "describe_left",
    "extended",
    "lease_terms",
    "parse_lease",
    "parse_moment",
    "seconds_left",
]
