"""What a job does on each host once connected: run, copy, fetch, kill."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from provisor._asyncssh import asyncssh
from provisor.fleet import fetching
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint


class Operation(Protocol):
    """One host's share of a job. Raises only for transport trouble."""

    @property
    def kind(self) -> str: ...

    def describe(self) -> str: ...

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult: ...


def _exit_result(endpoint: Endpoint, completed: asyncssh.SSHCompletedProcess) -> HostResult:
    stdout = completed.stdout if isinstance(completed.stdout, bytes) else b""
    stderr = completed.stderr if isinstance(completed.stderr, bytes) else b""
    if completed.exit_status is None and completed.exit_signal is None:
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.error,
            error="connection lost during the command (exit status unknown)",
            stdout=stdout,
            stderr=stderr,
        )
    if completed.exit_signal is not None:
        signal_name = completed.exit_signal[0]
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.failed,
            exit_code=completed.returncode,
            error=f"killed by signal {signal_name}",
            stdout=stdout,
            stderr=stderr,
        )
    code = completed.exit_status
    return HostResult(
        endpoint.name,
        endpoint.address,
        Outcome.ok if code == 0 else Outcome.failed,
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
    )


# Each command carries a token in its environment, inherited by everything it
# starts. OpenSSH refuses "signal" requests for root sessions, so on timeout a
# second channel kills every process whose environment holds the token.
_MARK_VAR = "PROVISOR_RUN"
_KILL_MARKED = (
    "grep -lzsx {marker} /proc/[0-9]*/environ | "
    "sed -n 's|^/proc/\\([0-9]*\\)/environ$|\\1|p' | xargs -r kill -KILL"
)


def _marked(command: str, token: str) -> str:
    return f"{_MARK_VAR}={token}; export {_MARK_VAR}; {command}"


async def run_command(
    connection: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    command: str,
    *,
    stdin: bytes | None = None,
    timeout: float | None = None,
) -> HostResult:
    """Run one command; past `timeout` the remote processes it started are killed."""
    token = secrets.token_hex(8) if timeout is not None else None
    remote = _marked(command, token) if token else command
    process = await connection.create_process(remote, encoding=None)
    if stdin:
        process.stdin.write(stdin)
    process.stdin.write_eof()
    try:
        completed = await process.wait(timeout=timeout)
    except asyncssh.TimeoutError as exc:
        assert token is not None
        killed = await _kill_marked(connection, process, token)
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.timeout,
            error=f"command still running after {timeout:g}s; "
            + ("killed" if killed else "could not kill it"),
            stdout=exc.stdout if isinstance(exc.stdout, bytes) else b"",
            stderr=exc.stderr if isinstance(exc.stderr, bytes) else b"",
        )
    return _exit_result(endpoint, completed)


async def _kill_marked(
    connection: asyncssh.SSHClientConnection,
    process: asyncssh.SSHClientProcess[Any],
    token: str,
) -> bool:
    marker = shlex.quote(f"{_MARK_VAR}={token}")
    try:
        killer = await connection.run(_KILL_MARKED.format(marker=marker), check=False, timeout=10)
        return killer.exit_status == 0
    except (OSError, asyncssh.Error):
        return False
    finally:
        process.close()


@dataclass(frozen=True)
class Run:
    command: str
    stdin: bytes | None = None
    timeout: float | None = None
    sudo: bool = False
    sudo_password: str | None = None
    kind: str = "run"

    def describe(self) -> str:
        return self.command

    def remote_command(self) -> str:
        if not self.sudo:
            return self.command
        if self.sudo_password is None:
            return f"sudo -n -- sh -c {shlex.quote(self.command)}"
        return f"sudo -S -p '' -- sh -c {shlex.quote(self.command)}"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        stdin = self.stdin
        if self.sudo and self.sudo_password is not None:
            stdin = self.sudo_password.encode() + b"\n" + (stdin or b"")
        return await run_command(
            connection, endpoint, self.remote_command(), stdin=stdin, timeout=self.timeout
        )


# Reads the pattern from stdin so it appears in no process's command line
# (otherwise the shell running pkill would match itself), then lists what it
# signalled: "<name> killed (pid N)" per process.
_KILL_SCRIPT = 'IFS= read -r pattern; exec pkill -e -{signal} -f -- "$pattern"'


@dataclass(frozen=True)
class Kill:
    pattern: str
    signal: str = "TERM"
    timeout: float | None = 30.0
    kind: str = "kill"

    def describe(self) -> str:
        return f"kill -{self.signal} {self.pattern}"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        script = _KILL_SCRIPT.format(signal=shlex.quote(self.signal))
        result = await run_command(
            connection,
            endpoint,
            script,
            stdin=self.pattern.encode() + b"\n",
            timeout=self.timeout,
        )
        killed = [line for line in result.text().splitlines() if " killed (pid " in line]
        result.details = {"signalled": len(killed), "signal": self.signal}
        if result.outcome is Outcome.failed and result.exit_code == 1 and not result.stderr:
            # pkill's "no process matched" is not a failure of the job
            result.outcome, result.exit_code = Outcome.ok, 0
        return result


async def _upload(
    connection: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    move: Callable[[asyncssh.SFTPClient], Awaitable[None]],
    sources: tuple[str, ...],
) -> HostResult:
    """One SFTP upload (copy), recursive and keeping modes and times: `ok` with the
    bytes sent, or `failed` with the reason SFTP or the local side gave."""
    try:
        async with connection.start_sftp_client() as sftp:
            await move(sftp)
    except (asyncssh.SFTPError, OSError) as exc:
        return HostResult(endpoint.name, endpoint.address, Outcome.failed, error=str(exc))
    size = await asyncio.to_thread(lambda: sum(_tree_size(Path(p)) for p in sources))
    return HostResult(endpoint.name, endpoint.address, Outcome.ok, details={"bytes": size})


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    kind: str = "copy"
    label: str | None = None  # what the job says it copies, when not the sources' paths

    def describe(self) -> str:
        return f"copy {self.label or ' '.join(self.sources)} -> {self.destination}"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        async def put(sftp: asyncssh.SFTPClient) -> None:
            await sftp.put(list(self.sources), self.destination, recurse=True, preserve=True)

        return await _upload(connection, endpoint, put, self.sources)


@dataclass(frozen=True)
class Fetch:
    """A file or tree of the host into `local_dir/<host>/`, written safely (see
    `fleet.fetching`): nothing lands outside it, no setuid/setgid/sticky bit is kept."""

    remote: str
    local_dir: str
    kind: str = "fetch"

    def describe(self) -> str:
        return f"fetch {self.remote} -> {self.local_dir}/<host>/"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        target = Path(self.local_dir) / endpoint.name
        report = fetching.FetchReport()

        def failed(error: str) -> HostResult:
            return HostResult(endpoint.name, endpoint.address, Outcome.failed, error=error)

        try:
            fetching.local_name(self.remote)  # before anything is made
            await asyncio.to_thread(Path(self.local_dir).mkdir, parents=True, exist_ok=True)
            destination = await asyncio.to_thread(fetching.open_directory, None, str(target))
        except (fetching.FetchRefused, OSError) as exc:
            return failed(str(exc))
        try:
            async with connection.start_sftp_client() as sftp:
                await fetching.fetch(sftp, self.remote, destination, report)
        except (asyncssh.SFTPError, OSError, fetching.FetchRefused) as exc:
            return failed(str(exc))
        finally:
            os.close(destination)
        notes = [f"not fetched: {line}\n" for line in report.skipped]
        if report.more_skipped:
            notes.append(f"not fetched: {report.more_skipped} more\n")
        details: dict[str, Any] = {"bytes": report.bytes, "files": report.files}
        details["path"] = str(target)
        if report.skipped:
            details["skipped"] = report.skipped
        if report.more_skipped:
            details["skipped_more"] = report.more_skipped
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.ok,
            stderr="".join(notes).encode(),
            details=details,
        )


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
