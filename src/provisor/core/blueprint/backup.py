"""A node's backup policy: when (cron), what (the disk snapshot, paths, command dumps),
how long backups are kept, where they go, and the commands that quiesce the machine.

Pure: the cron syntax is read with croniter (computation only), durations like the
lease's. `due_times` says which scheduled run is due, for the scheduler.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Self

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from provisor.core.errors import InvalidInput
from provisor.core.names import check_name

MAX_KEEP = 1000  # backups kept per machine
MAX_RETENTION_DAYS = 3660  # ten years
MAX_PATHS = 64
MAX_COMMANDS = 16
MAX_COMMAND_CHARS = 16_384
MAX_PATH_CHARS = 1024
_RETENTION = re.compile(r"([1-9][0-9]{0,5})([hdw])")
_RETENTION_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?#LW-]{1,64}")


def check_schedule(value: str) -> str:
    """Five cron fields (minute hour day month weekday), e.g. `0 2 * * *`."""
    fields = value.split()
    if len(value) > 200 or len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(
            f"invalid schedule {value[:60]!r}: five cron fields (minute hour day month "
            "weekday), e.g. '0 2 * * *' for every night at 02:00 UTC"
        )
    if not croniter.is_valid(" ".join(fields)):
        raise ValueError(
            f"invalid schedule {value!r}: not a cron expression croniter reads "
            "(e.g. '0 2 * * *', '*/15 * * * *', '30 1 * * mon-fri')"
        )
    return " ".join(fields)


def check_retention(value: str) -> str:
    match = _RETENTION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid retention {value[:40]!r}: a duration like 36h, 30d or 8w")
    if retention_delta(value) > timedelta(days=MAX_RETENTION_DAYS):
        raise ValueError(f"retention {value!r} is longer than {MAX_RETENTION_DAYS} days")
    return value.strip()


def retention_delta(value: str) -> timedelta:
    match = _RETENTION.fullmatch(value.strip())
    assert match is not None
    return timedelta(**{_RETENTION_UNITS[match.group(2)]: int(match.group(1))})


def _path(value: str) -> str:
    if (
        not value.startswith("/")
        or len(value) > MAX_PATH_CHARS
        or any(c in value for c in "\0\n\r")
        or ".." in value.split("/")
    ):
        raise ValueError(
            f"invalid path {value[:60]!r}: an absolute path on the machine, without '..', "
            f"at most {MAX_PATH_CHARS} characters"
        )
    return value


def _command(value: str) -> str:
    if not value.strip():
        raise ValueError("a command cannot be empty")
    if len(value) > MAX_COMMAND_CHARS or "\0" in value:
        raise ValueError(f"a command has at most {MAX_COMMAND_CHARS:,} characters and no NUL")
    return value


def _store(value: str) -> str:
    try:
        return check_name(value, field="store")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


Command = Annotated[str, AfterValidator(_command)]


class BackupPolicy(BaseModel):
    """How a node's machines are backed up. Without `schedule`, only on demand."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schedule: Annotated[str | None, AfterValidator(lambda v: v and check_schedule(v))] = Field(
        default=None, description="cron (UTC): minute hour day month weekday, e.g. '0 2 * * *'"
    )
    keep: int | None = Field(
        default=None, ge=1, le=MAX_KEEP, description="keep this many good backups per machine"
    )
    keep_for: Annotated[str | None, AfterValidator(lambda v: v and check_retention(v))] = Field(
        default=None, alias="for", description="keep good backups this long (36h, 30d, 8w)"
    )
    disk: bool = Field(default=True, description="the machine's disk and volumes (a snapshot)")
    paths: tuple[Annotated[str, AfterValidator(_path)], ...] = Field(
        default=(), max_length=MAX_PATHS, description="files or folders archived over SSH"
    )
    commands: tuple[Command, ...] = Field(
        default=(),
        max_length=MAX_COMMANDS,
        description="commands whose output is stored (an application-consistent dump)",
    )
    pre: Command | None = Field(default=None, description="run first (quiesce); failing stops")
    post: Command | None = Field(default=None, description="run after the snapshot, always")
    store: Annotated[str, AfterValidator(_store)] = Field(
        default="local", description="where backups go: local, or a configured store"
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.disk and not self.paths and not self.commands:
            raise ValueError("a backup needs something to copy: disk, paths or commands")
        return self


def due_time(schedule: str, after: datetime, now: datetime) -> datetime | None:
    """The latest run of `schedule` later than `after` and not later than `now`, if any:
    runs missed while nothing ran collapse into this one."""
    previous: datetime = croniter(schedule, now).get_prev(datetime)
    if croniter.match(schedule, now) and now.second == 0 and now.microsecond == 0:
        previous = now
    return previous if previous > after else None


__all__ = [
    "MAX_KEEP",
    "BackupPolicy",
    "check_retention",
    "check_schedule",
    "due_time",
    "retention_delta",
]
