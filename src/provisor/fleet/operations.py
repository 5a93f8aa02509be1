"""What a job does on each host once connected: run, copy, fetch, kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from provisor._asyncssh import asyncssh
from provisor.fleet import fetching
from provisor.fleet.output import Capture, OutputFileError, OutputPolicy
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint

KEEP_DEFAULT = OutputPolicy()  # the default limit, no files, no secrets
DEFAULT_STALL_TIMEOUT = 60.0  # copy, fetch: seconds without data moving before giving up
_ABORT_WAIT = 5.0  # seconds a stalled transfer gets to stop before its connection is cut


class Operation(Protocol):
    """One host's share of a job. Raises only for transport trouble."""

    @property
    def kind(self) -> str: ...

    def describe(self) -> str: ...

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult: ...


def _exit_result(
    endpoint: Endpoint,
    channel: asyncssh.SSHClientChannel[bytes],
    out: Capture,
    err: Capture,
) -> HostResult:
    output = _output(out, err)
    exit_status, exit_signal = channel.get_exit_status(), channel.get_exit_signal()
    if exit_status is None and exit_signal is None:
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.error,
            error="connection lost during the command (exit status unknown)",
            **output,
        )
    if exit_signal is not None:
        signal_name = exit_signal[0]
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.failed,
            exit_code=channel.get_returncode(),
            error=f"killed by signal {signal_name}",
            **output,
        )
    return HostResult(
        endpoint.name,
        endpoint.address,
        Outcome.ok if exit_status == 0 else Outcome.failed,
        exit_code=exit_status,
        **output,
    )


def _output(out: Capture, err: Capture) -> dict[str, Any]:
    return {
        "stdout": out.head,
        "stderr": err.head,
        "stdout_dropped": out.dropped,
        "stderr_dropped": err.dropped,
        "output_saved": out.saved and err.saved,
    }


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


class _Streams(asyncssh.SSHClientSession[bytes]):
    """A command's channel as callbacks: each piece of output goes straight to its
    capture as it arrives (no reader tasks, no buffer in between; a warm pool's commands
    are mostly this bookkeeping). `ended` resolves when the channel closes, with the
    exception that closed it, if any; a capture that cannot write stops the command."""

    def __init__(self, out: Capture, err: Capture, ended: asyncio.Future[Exception | None]):
        self._captures = {None: out, asyncssh.EXTENDED_DATA_STDERR: err}
        self._ended = ended
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.failure: OutputFileError | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.failure is not None:
            return
        try:
            self._captures[datatype].write(data)
        except OutputFileError as exc:
            self.failure = exc
            if self._channel is not None:
                self._channel.close()

    def eof_received(self) -> bool:
        return True  # stay open for the exit status, which may come after the EOF

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._ended.done():
            self._ended.set_result(exc)


async def run_command(
    connection: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    command: str,
    *,
    stdin: bytes | None = None,
    timeout: float | None = None,
    output: OutputPolicy = KEEP_DEFAULT,
) -> HostResult:
    """Run one command; past `timeout` the remote processes it started are killed.

    Its output is read as it arrives, kept and written as `output` says: memory holds at
    most `output.max_output` bytes of each stream, whatever the host prints.
    """
    token = secrets.token_hex(8) if timeout is not None else None
    remote = _marked(command, token) if token else command
    out = output.capture(endpoint.name, "stdout")
    err = output.capture(endpoint.name, "stderr")
    ended: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    streams = _Streams(out, err, ended)
    try:
        channel, _ = await connection.create_session(lambda: streams, remote, encoding=None)
        if stdin:
            channel.write(stdin)
        channel.write_eof()
        try:
            async with asyncio.timeout(timeout):
                lost = await ended
            if streams.failure is not None:
                raise streams.failure
            if lost is not None:
                raise lost  # the connection went away under the command
            out.close()
            err.close()
        except TimeoutError:
            assert token is not None and timeout is not None
            killed = await _kill_marked(connection, channel, token)
            _close_quietly(out, err)
            return HostResult(
                endpoint.name,
                endpoint.address,
                Outcome.timeout,
                error=f"command timeout: still running after {timeout:g}s (-t); "
                + ("killed" if killed else "could not kill it"),
                details={"limit": "command", "seconds": timeout},
                **_output(out, err),
            )
        except OutputFileError as exc:
            channel.close()
            _close_quietly(out, err)
            return HostResult(
                endpoint.name,
                endpoint.address,
                Outcome.error,
                error=f"output not saved, command stopped: {exc}",
                **_output(out, err),
            )
        return _exit_result(endpoint, channel, out, err)
    finally:
        _close_quietly(out, err)


def _close_quietly(*captures: Capture) -> None:
    """Close captures whose file errors no longer matter (the result says what did)."""
    for capture in captures:
        with contextlib.suppress(OutputFileError):
            capture.close()


async def _kill_marked(
    connection: asyncssh.SSHClientConnection,
    channel: asyncssh.SSHClientChannel[bytes],
    token: str,
) -> bool:
    marker = shlex.quote(f"{_MARK_VAR}={token}")
    try:
        killer = await connection.run(_KILL_MARKED.format(marker=marker), check=False, timeout=10)
        return killer.exit_status == 0
    except (OSError, asyncssh.Error):
        return False
    finally:
        channel.close()


@dataclass(frozen=True)
class Run:
    command: str
    stdin: bytes | None = None
    timeout: float | None = None
    sudo: bool = False
    sudo_password: str | None = None
    output: OutputPolicy = KEEP_DEFAULT
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
            connection,
            endpoint,
            self.remote_command(),
            stdin=stdin,
            timeout=self.timeout,
            output=self.output,
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
    output: OutputPolicy = KEEP_DEFAULT
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
            output=self.output,
        )
        killed = [line for line in result.text().splitlines() if " killed (pid " in line]
        result.details = {"signalled": len(killed), "signal": self.signal}
        if result.outcome is Outcome.failed and result.exit_code == 1 and not result.stderr:
            # pkill's "no process matched" is not a failure of the job
            result.outcome, result.exit_code = Outcome.ok, 0
        return result


Move = Callable[[asyncssh.SFTPClient, Callable[..., None]], Awaitable[None]]


async def _transfer(
    connection: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    move: Move,
    stall_timeout: float,
    what: str,
    **details: Any,
) -> HostResult | None:
    """One SFTP transfer (copy or fetch): None once it is done, else a `failed` result
    with the reason SFTP or the local side gave, or `timeout` when no data moved for
    `stall_timeout` seconds (a large transfer that keeps moving is never cut short)."""
    last_progress = [time.monotonic()]

    def moved(*_: object) -> None:
        last_progress[0] = time.monotonic()

    async def session() -> None:
        async with connection.start_sftp_client() as sftp:
            moved()
            await move(sftp, moved)

    task = asyncio.ensure_future(session())
    try:
        while not task.done():
            left = last_progress[0] + stall_timeout - time.monotonic()
            if left <= 0:
                await _stop(task, connection)
                return HostResult(
                    endpoint.name,
                    endpoint.address,
                    Outcome.timeout,
                    error=f"no progress: no data moved for {stall_timeout:g}s "
                    "(--stall-timeout); transfer stopped",
                    details={"limit": "progress", "seconds": stall_timeout, **details},
                )
            await asyncio.wait({task}, timeout=left)
        task.result()
    except (asyncssh.SFTPError, OSError, fetching.FetchRefused) as exc:
        reason = str(exc.reason if isinstance(exc, asyncssh.SFTPError) else exc)
        if isinstance(exc, asyncssh.SFTPError) and exc.code == asyncssh.FX_NO_SUCH_FILE:
            reason = f"{reason} (a path on the host that does not exist)"
        return HostResult(
            endpoint.name, endpoint.address, Outcome.failed, error=f"{what}: {reason}"
        )
    finally:
        if not task.done():  # this host's work was cancelled from outside
            task.cancel()
    return None


async def _stop(task: asyncio.Future[None], connection: asyncssh.SSHClientConnection) -> None:
    """End a stalled transfer by cutting its connection (a stuck link is no use to later
    work either): SFTP then fails every request it has in flight and returns. Cancelling
    it instead would leave asyncssh's own request tasks failing unheard."""
    connection.abort()
    done, _ = await asyncio.wait({task}, timeout=_ABORT_WAIT)
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_ABORT_WAIT)
    if done and not task.cancelled():
        task.exception()  # what the cut connection raised: the timeout says it all


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    kind: str = "copy"
    label: str | None = None  # what the job says it copies, when not the sources' paths
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

    def describe(self) -> str:
        return f"copy {self.label or ' '.join(self.sources)} -> {self.destination}"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        async def put(sftp: asyncssh.SFTPClient, moved: Callable[..., None]) -> None:
            await sftp.put(
                list(self.sources),
                self.destination,
                recurse=True,
                preserve=True,
                progress_handler=moved,
            )

        failure = await _transfer(
            connection, endpoint, put, self.stall_timeout, f"copy to {self.destination}"
        )
        if failure is not None:
            return failure
        size = await asyncio.to_thread(lambda: sum(_tree_size(Path(p)) for p in self.sources))
        return HostResult(endpoint.name, endpoint.address, Outcome.ok, details={"bytes": size})


@dataclass(frozen=True)
class Fetch:
    """A file or tree of the host into `local_dir/<host>/`, written safely (see
    `fleet.fetching`): nothing lands outside it, no setuid/setgid/sticky bit is kept."""

    remote: str
    local_dir: str
    kind: str = "fetch"
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

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

        async def get(sftp: asyncssh.SFTPClient, moved: Callable[..., None]) -> None:
            report.on_progress = moved
            await fetching.fetch(sftp, self.remote, destination, report)

        try:
            failure = await _transfer(
                connection,
                endpoint,
                get,
                self.stall_timeout,
                f"fetch {self.remote}",
                path=str(target),
            )
        finally:
            os.close(destination)
        if failure is not None:
            return failure
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
