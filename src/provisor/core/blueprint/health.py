"""A node's health checks and recovery ladder in a blueprint (`checks`, `recovery`).

    checks:
      interval: 10s        # how often (1s to 1h; default 30s)
      timeout: 5s          # each probe: 1s to 5m, at most the interval (default 10s)
      failures: 3          # consecutive failed rounds before unhealthy (1 to 100; default 3)
      successes: 2         # consecutive good rounds before healthy again (1 to 100; default 2)
      probes:              # all must pass for a round to pass
        - provider         # the provider says the machine runs
        - ssh              # SSH lets the controller in
        - {kind: tcp, port: 5432}
        - {kind: http, port: 8080, path: /health, status: 200, body: "^ok"}
        - {kind: command, command: "systemctl is-active nginx"}
    recovery:              # tried in order when a machine turns unhealthy
      - {action: command, command: "systemctl restart nginx", attempts: 2, backoff: 10s}
      - {action: reboot}
      - {action: restart}
      - {action: restore-from-backup}
      - {action: replace}

`checks` may also be just the list of probes (every other setting its default); a
probe without settings may be just its kind. Pure: models and their checks only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from provisor.core.blueprint._model import _Model
from provisor.core.regex import RegexError, compile_regex
from provisor.core.timespec import parse_duration

MAX_PROBES = 20
"""The most probes one node may have."""

MAX_STEPS = 10
"""The most actions one recovery ladder may have."""

MAX_COMMAND = 4096
"""The longest command of a `command` probe or action, in characters."""

PROBE_KINDS = ("provider", "ssh", "tcp", "http", "command")
ACTIONS = ("command", "reboot", "restart", "restore-from-backup", "replace")


def _seconds(low: float, high: float) -> BeforeValidator:
    """A duration: a number of seconds, or text like 10s, 5m, 1h; within bounds."""

    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a duration like 10s, 5m or 1h")
        if isinstance(value, str):
            try:
                value = parse_duration(value, units="smh").total_seconds()
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(value, int | float):
            if not low <= value <= high:
                raise ValueError(f"must be between {low:g}s and {high:g}s")
            return float(value)
        raise ValueError("expected a duration like 10s, 5m or 1h")

    return BeforeValidator(convert)


def _seconds_schema(low: float, high: float) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": low, "maximum": high},
                {"type": "string", "pattern": "^\\s*[0-9]+\\s*[smh]\\s*$"},
            ]
        }
    )


Interval = Annotated[float, _seconds(1, 3600), _seconds_schema(1, 3600)]
ProbeTimeout = Annotated[float, _seconds(1, 300), _seconds_schema(1, 300)]
ActionTimeout = Annotated[float, _seconds(1, 3600), _seconds_schema(1, 3600)]
Backoff = Annotated[float, _seconds(0, 3600), _seconds_schema(0, 3600)]


def _command(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError("a command cannot be empty")
    if len(value) > MAX_COMMAND:
        raise ValueError(f"a command is at most {MAX_COMMAND} characters")
    if "\0" in value:
        raise ValueError("a command cannot contain a NUL character")
    return value


def _path(value: str) -> str:
    if not value.startswith("/") or len(value) > 2048:
        raise ValueError("a path starts with / (at most 2048 characters), e.g. /health")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a path has no spaces or control characters (percent-encode them)")
    return value


def _pattern(value: str | None) -> str | None:
    if value is not None:
        try:
            compile_regex(value)
        except RegexError as exc:
            raise ValueError(exc.message) from None
    return value


def _kind_only(value: Any) -> Any:
    """`- ssh` is `- {kind: ssh}`."""
    return {"kind": value} if isinstance(value, str) else value


def _action_only(value: Any) -> Any:
    """`- reboot` is `- {action: reboot}`."""
    return {"action": value} if isinstance(value, str) else value


Command = Annotated[str | None, AfterValidator(_command)]


class Probe(_Model):
    """One check of a machine; which settings apply depends on its kind."""

    kind: Literal["provider", "ssh", "tcp", "http", "command"] = Field(
        description="provider (runs), ssh (answers), tcp (port open), http (URL answers), "
        "command (exits 0 on the machine)"
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="tcp and http")
    path: Annotated[str, AfterValidator(_path)] = Field(default="/", description="http")
    scheme: Literal["http", "https"] = Field(
        default="http", description="http; https is not verified (a machine's own certificate)"
    )
    status: int = Field(default=200, ge=100, le=599, description="http: the status expected")
    body: Annotated[str | None, AfterValidator(_pattern)] = Field(
        default=None, description="http: a regular expression (RE2) the body must contain"
    )
    command: Command = Field(default=None, description="command: run on the machine over SSH")

    @model_validator(mode="after")
    def _settings_of_kind(self) -> Self:
        given = self.model_fields_set - {"kind"}
        allowed = {
            "provider": set(),
            "ssh": set(),
            "tcp": {"port"},
            "http": {"port", "path", "scheme", "status", "body"},
            "command": {"command"},
        }[self.kind]
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(
                f"{', '.join(extra)} does not apply to a {self.kind} check"
                + (f" (it takes: {', '.join(sorted(allowed))})" if allowed else "")
            )
        if self.kind in ("tcp", "http") and self.port is None:
            raise ValueError(f"a {self.kind} check needs a port")
        if self.kind == "command" and self.command is None:
            raise ValueError("a command check needs a command")
        return self


class Checks(_Model):
    """A node's health checks: what is checked, how often, and when it counts."""

    interval: Interval = Field(default=30.0, description="seconds between rounds")
    timeout: ProbeTimeout = Field(
        default=10.0, description="each probe's limit (by default 10s, or the interval if shorter)"
    )
    failures: int = Field(
        default=3, ge=1, le=100, description="consecutive failed rounds before unhealthy"
    )
    successes: int = Field(
        default=2, ge=1, le=100, description="consecutive good rounds before healthy again"
    )
    probes: tuple[Annotated[Probe, BeforeValidator(_kind_only)], ...] = Field(
        min_length=1, max_length=MAX_PROBES, description="all pass for a round to pass"
    )

    @model_validator(mode="before")
    @classmethod
    def _list_is_probes(cls, data: Any) -> Any:
        return {"probes": data} if isinstance(data, list | tuple) else data

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if "timeout" not in self.model_fields_set and self.timeout > self.interval:
            object.__setattr__(self, "timeout", self.interval)  # the default fits the interval
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) is longer than the interval ({self.interval:g}s)"
            )
        return self


class RecoveryStep(_Model):
    """One rung of a recovery ladder: an action, how often it is tried, the pause between."""

    action: Literal["command", "reboot", "restart", "restore-from-backup", "replace"] = Field(
        description="command (run on the machine), reboot, restart (stop + start), "
        "restore-from-backup, replace (relaunch from the blueprint, run its scripts)"
    )
    command: Command = Field(default=None, description="command: what to run on the machine")
    timeout: ActionTimeout = Field(default=120.0, description="command: how long it may run")
    attempts: int = Field(default=1, ge=1, le=10, description="tries of this action")
    backoff: Backoff = Field(
        default=10.0, description="pause after a failed try (doubling after each)"
    )

    @model_validator(mode="after")
    def _command_for_command(self) -> Self:
        if self.action == "command" and self.command is None:
            raise ValueError("a command action needs a command")
        if self.action != "command":
            extra = sorted(self.model_fields_set & {"command", "timeout"})
            if extra:
                raise ValueError(f"{', '.join(extra)} applies only to a command action")
        return self


__all__ = ["ACTIONS", "MAX_PROBES", "MAX_STEPS", "PROBE_KINDS", "Checks", "Probe", "RecoveryStep"]
