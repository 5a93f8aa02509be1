"""What happened on one host: exactly one outcome, with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from provisor.core.masking import Masker


class Outcome(StrEnum):
    ok = "ok"
    failed = "failed"  # the command ran and exited non-zero (or died of a signal)
    timeout = "timeout"  # the command outlived -t and was killed
    unreachable = "unreachable"  # refused, no route, or no SSH handshake in time
    auth = "auth"  # the server rejected every key or password offered
    hostkey = "hostkey"  # the host key differs from the one trusted for this host
    error = "error"  # anything else, with the message


@dataclass
class HostResult:
    host: str
    address: str
    outcome: Outcome
    exit_code: int | None = None
    error: str | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    details: dict[str, Any] = field(default_factory=dict)
    connect_seconds: float | None = None
    run_seconds: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.ok

    def masked(self, masker: Masker) -> HostResult:
        """This result with every secret of `masker` replaced, in all it reports."""
        if not masker:
            return self
        return replace(
            self,
            error=None if self.error is None else masker.text(self.error),
            stdout=masker.data(self.stdout),
            stderr=masker.data(self.stderr),
            details=masker.value(self.details),
        )

    def text(self, stream: str = "stdout") -> str:
        data = self.stdout if stream == "stdout" else self.stderr
        return data.decode("utf-8", errors="replace")


def result_json(result: HostResult) -> dict[str, Any]:
    """A host result as JSON: what `--output json` prints and the API streams."""
    return {
        "host": result.host,
        "address": result.address,
        "outcome": result.outcome.value,
        "exit_code": result.exit_code,
        "error": result.error,
        "stdout": result.text("stdout"),
        "stderr": result.text("stderr"),
        "details": result.details,
        "connect_seconds": result.connect_seconds,
        "run_seconds": result.run_seconds,
    }
