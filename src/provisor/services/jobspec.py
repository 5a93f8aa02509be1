"""What a fleet job is asked to do (`JobSpec`) and the limits it runs within (`JobLimits`).

Kept apart from `services.jobs` and light (pydantic, no store, no SSH): the CLI checks a
job it sends to a server (`provisor run --server`) with the same model the server takes,
without loading the database layer or asyncssh.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from provisor.core.errors import invalid_input
from provisor.fleet.output import DEFAULT_MAX_OUTPUT, MAX_MAX_OUTPUT

if TYPE_CHECKING:  # asyncssh loads with the first job, not with the CLI
    from provisor.fleet.operations import Operation
    from provisor.fleet.output import OutputPolicy
    from provisor.settings import Settings

_MAX_HEARTBEAT_SECONDS = 5.0
# Linux's signals (the hosts' kernel), as kill and pkill name them without SIG.
SIGNAL_NAMES = frozenset(
    s.name.removeprefix("SIG") for s in signal.Signals if not s.name.startswith("SIG_")
)
_COMMON_SIGNALS = ("TERM", "KILL", "HUP", "INT", "USR1", "USR2")


@dataclass(frozen=True)
class JobLimits:
    """The configured limits a job takes when its spec names none (see `Settings`)."""

    command_timeout: float = 3600.0
    stall_timeout: float = 60.0
    max_output: int = DEFAULT_MAX_OUTPUT
    stale_after: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> JobLimits:
        return cls(
            command_timeout=settings.command_timeout,
            stall_timeout=settings.stall_timeout,
            max_output=settings.max_output,
            stale_after=settings.job_stale_after,
        )

    @property
    def heartbeat_seconds(self) -> float:
        """How often a running job shows it lives: well inside `stale_after`."""
        return max(0.2, min(_MAX_HEARTBEAT_SECONDS, self.stale_after / 4))


JobKind = Literal["run", "copy", "fetch", "kill"]


class JobSpec(BaseModel):
    """One fleet job, as the CLI and the API describe it; `operation()` builds what runs
    on each host."""

    kind: JobKind
    target: str = Field(min_length=1, description="target expression, e.g. group:web")
    command: str | None = Field(default=None, description="run: the command")
    stdin: bytes | None = Field(default=None, description="run: text fed to standard input")
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=30 * 24 * 3600,
        description="run: seconds the command may run per host (default: command_timeout)",
    )
    stall_timeout: float | None = Field(
        default=None,
        gt=0,
        le=30 * 24 * 3600,
        description="copy, fetch: seconds without data moving before a host's transfer "
        "stops (default: stall_timeout)",
    )
    max_output: int | None = Field(
        default=None,
        ge=1024,
        le=MAX_MAX_OUTPUT,
        description="run, kill: bytes of each host's stdout and stderr kept; the rest is "
        "counted (default: max_output)",
    )
    sudo: bool = Field(default=False, description="run: through sudo")
    pattern: str | None = Field(default=None, description="kill: pkill -f pattern")
    signal: str = Field(default="TERM", description="kill: TERM, KILL, HUP, 9, ...")
    sources: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="copy (CLI): files and directories to send; fetch: the one path on the hosts",
    )
    uploads: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="copy (API): ids of uploaded files to send (POST /uploads)",
    )
    destination: str | None = Field(
        default=None, description="copy: path on the hosts; fetch: local directory"
    )
    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    connect_timeout: float = Field(default=10.0, gt=0, le=3600, description="seconds per SSH login")
    user: str | None = Field(default=None, description="login user for hosts that name none")
    identity: str | None = Field(default=None, description="private key file for hosts without one")

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        name = value.upper().removeprefix("SIG")
        if name.isascii() and name.isdigit() and 0 < int(name) <= 64:
            return str(int(name))
        if name not in SIGNAL_NAMES:
            raise ValueError(
                f"unknown signal {value!r}: a name ({', '.join(_COMMON_SIGNALS)}, ...) or "
                "a number 1-64"
            )
        return name

    @model_validator(mode="after")
    def _fits_kind(self) -> JobSpec:
        if self.kind == "run" and not self.command:
            raise ValueError("a run job needs a command")
        if self.kind == "kill" and not self.pattern:
            raise ValueError("a kill job needs a pattern")
        if self.kind == "copy" and (
            not (self.sources or self.uploads) or bool(self.sources and self.uploads)
        ):
            raise ValueError("a copy job needs sources (or uploads, not both)")
        if self.kind == "copy" and not self.destination:
            raise ValueError("a copy job needs a destination")
        if self.uploads and self.kind != "copy":
            raise ValueError("uploads are for copy jobs")
        if self.kind == "fetch" and (len(self.sources) != 1 or not self.destination):
            raise ValueError("a fetch job needs one path on the hosts and a local directory")
        return self

    def operation(
        self,
        *,
        sudo_password: str | None = None,
        label: str | None = None,
        limits: JobLimits | None = None,
        output: OutputPolicy | None = None,
    ) -> Operation:
        """What runs on each host (asyncssh loads here, not with the CLI); the limits the
        spec leaves open are `limits`', and `output` says where output goes."""
        from provisor.fleet import operations
        from provisor.fleet.output import OutputPolicy

        limits = limits or JobLimits()
        output = output or OutputPolicy()
        if self.kind == "run":
            assert self.command is not None
            return operations.Run(
                self.command,
                stdin=self.stdin,
                timeout=self.timeout or limits.command_timeout,
                sudo=self.sudo,
                sudo_password=sudo_password if self.sudo else None,
                output=output,
            )
        if self.kind == "kill":
            assert self.pattern is not None
            return operations.Kill(self.pattern, self.signal, output=output)
        assert self.destination is not None
        stall = self.stall_timeout or limits.stall_timeout
        if self.kind == "fetch":
            return operations.Fetch(self.sources[0], self.destination, stall_timeout=stall)
        return operations.Copy(
            tuple(self.sources), self.destination, label=label, stall_timeout=stall
        )


def parse_job_spec(data: dict[str, Any]) -> JobSpec:
    """A `JobSpec` from `data`; a bad value is an `InvalidInput` naming its field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


__all__ = ["SIGNAL_NAMES", "JobKind", "JobLimits", "JobSpec", "parse_job_spec"]
