"""What happened on one host: exactly one outcome, with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from provisor.core.masking import Masker
from provisor.core.sizes import format_size


class Outcome(StrEnum):
    ok = "ok"
    failed = "failed"  # the command ran and exited non-zero (or died of a signal)
    timeout = "timeout"  # a limit was reached (details["limit"]: connect, command, progress)
    unreachable = "unreachable"  # refused, no route, or the connection lost in the handshake
    auth = "auth"  # the server rejected every key or password offered
    hostkey = "hostkey"  # the host key differs from the one trusted for this host
    error = "error"  # anything else, with the message
    unknown = "unknown"  # the process running the job stopped before this host answered
    skipped = "skipped"  # not worked on: the rollout stopped before this host's turn


@dataclass
class HostResult:
    host: str
    address: str
    outcome: Outcome
    exit_code: int | None = None
    error: str | None = None
    stdout: bytes = b""  # the first bytes, up to the job's --max-output
    stderr: bytes = b""
    stdout_dropped: int = 0  # bytes printed past the limit: counted, not kept here
    stderr_dropped: int = 0
    output_saved: bool = False  # all of stdout and stderr went to files too
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

    @property
    def truncated(self) -> bool:
        return bool(self.stdout_dropped or self.stderr_dropped)

    def size(self, stream: str = "stdout") -> int:
        """Bytes the stream printed in all, kept or not."""
        if stream == "stdout":
            return len(self.stdout) + self.stdout_dropped
        return len(self.stderr) + self.stderr_dropped

    def text(self, stream: str = "stdout") -> str:
        """The stream as text, ending in a truncation marker when bytes were dropped."""
        data, dropped = (
            (self.stdout, self.stdout_dropped)
            if stream == "stdout"
            else (self.stderr, self.stderr_dropped)
        )
        text = data.decode("utf-8", errors="replace")
        if dropped:
            text += truncation_marker(stream, len(data), dropped, saved=self.output_saved)
        return text


def truncation_marker(stream: str, kept: int, dropped: int, *, saved: bool) -> str:
    """The line that stands for the bytes of a stream not kept."""
    where = "; the job's output files hold all of it" if saved else ""
    return (
        f"\n[provisor: {stream} truncated: {dropped:,} more bytes not kept after the first "
        f"{format_size(kept)} (--max-output){where}]\n"
    )


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
        "stdout_bytes": result.size("stdout"),
        "stderr_bytes": result.size("stderr"),
        "truncated": result.truncated,
        "details": result.details,
        "connect_seconds": result.connect_seconds,
        "run_seconds": result.run_seconds,
    }
