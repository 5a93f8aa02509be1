"""Process bookkeeping on the machine, read from /proc: liveness, trees, namespaces, ports."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from provisor.core.errors import ProvisorError
from provisor.polling import poll_until

from ._host import SandboxHost, log_tail

T = TypeVar("T")

# Popen objects of the hosts this process started, so that it reaps them itself:
# the machine's PID 1 may not reap orphans (it does not in some VMs and containers).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn_detached(
    argv: Sequence[str], *, log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start a process in its own session that outlives this one; output goes to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


async def in_thread(fn: Callable[[], T], undo: Callable[[T], Awaitable[None]]) -> T:
    """Run blocking `fn` in a thread; if the caller is cancelled meanwhile, `undo` its result.

    A thread cannot be interrupted: without this, a cancelled start would leave a host
    running that nobody knows about.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await undo(await future)
        raise


async def boot(
    launch: Callable[[], SandboxHost],
    stop: Callable[[SandboxHost], Awaitable[None]],
    *,
    log: str,
    timeout: float,
) -> SandboxHost:
    """Launch a host (its file work off the event loop, so many hosts starting at once
    overlap), then wait until it answers SSH; a host that never does is stopped."""
    host = await in_thread(launch, stop)
    directory, pid = host.directory, host.pid
    try:
        await wait_for_ssh(
            host.address,
            host.port,
            alive=lambda: is_alive(pid, directory),
            log=directory / log,
            what=f"sandbox host {host.name}",
            timeout=timeout,
        )
    except BaseException:
        await stop(host)
        raise
    return host


def _own_child_state(pid: int) -> bool | None:
    """Whether a child this process started still runs (reaping it if not); None if not ours."""
    proc = _children.get(pid)
    if proc is None:
        return None
    if proc.poll() is None:
        return True
    del _children[pid]
    return False


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def cmdline(pid: int) -> str:
    return " ".join(_argv(pid))


def _names(argv: list[str], directory: Path) -> bool:
    """Whether an argument is `directory` or a path below it (not a sibling sharing a prefix)."""
    prefix = str(directory)
    return any(a == prefix or prefix + "/" in a or a.endswith("=" + prefix) for a in argv)


def is_alive(pid: int, directory: Path | None = None) -> bool:
    """Whether `pid` runs (zombies do not count) and, if given, names `directory` in its argv.

    The directory check guards against pid reuse: a host's top process always names it.
    """
    if pid <= 0:
        return False
    own = _own_child_state(pid)
    if own is not None:
        # Trusted without looking at its argv, which is empty for a moment after the
        # spawn (the parent resumes before the new program's arguments are in place).
        return own
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return directory is None or _names(_argv(pid), directory)


def pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(task.path, "children").read_text().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    result: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop(0)
        result.append(child)
        todo += children(child)
    return result


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def in_pid_namespace(namespace: str) -> list[int]:
    """Live processes of a pid namespace, as seen from the machine."""
    return [p for p in pids() if pid_namespace(p) == namespace and is_alive(p)]


def _read_all(path: str) -> bytes | None:
    """A /proc file's content (os-level calls: this runs over every process of the machine)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Process:
    pid: int
    cmdline: bytes  # NUL-separated arguments
    cwd: str | None


def _process_table() -> list[_Process]:
    """Command line and working directory of every process but this one."""
    me = os.getpid()
    table = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        raw = _read_all(f"/proc/{entry.name}/cmdline")
        if raw is None:
            continue
        try:
            cwd: str | None = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            cwd = None
        table.append(_Process(int(entry.name), raw, cwd))
    return table


def _referring(table: Sequence[_Process], directory: Path) -> list[int]:
    prefix = str(directory)
    below = prefix + "/"
    needle = os.fsencode(prefix)
    found = []
    for proc in table:
        # Cheap byte search first, then the exact test on the arguments.
        named = needle in proc.cmdline and _names(
            [a.decode("utf-8", "replace") for a in proc.cmdline.split(b"\0") if a], directory
        )
        cwd = proc.cwd
        if (named or (cwd is not None and (cwd == prefix or cwd.startswith(below)))) and (
            is_alive(proc.pid)
        ):
            found.append(proc.pid)
    return found


def referring_to(directory: Path) -> list[int]:
    """Live processes whose command line or working directory points into `directory`."""
    return _referring(_process_table(), directory)


# Scans of the process table that concurrent callers share, per event loop.
_pending_scans: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, asyncio.Future[list[_Process]]
] = weakref.WeakKeyDictionary()
_scan_tasks: set[asyncio.Task[None]] = set()


async def _shared_process_table() -> list[_Process]:
    """A process table read after this call began, shared with concurrent callers.

    Reading every process costs ~0.1 s of CPU on a busy machine (seconds under load):
    fifty hosts stopping at once share one pass (in a thread) instead of making fifty.
    """
    loop = asyncio.get_running_loop()
    future = _pending_scans.get(loop)
    if future is None:
        future = _pending_scans[loop] = loop.create_future()

        async def scan(batch: asyncio.Future[list[_Process]]) -> None:
            await asyncio.sleep(0.01)  # callers arriving meanwhile join this batch
            del _pending_scans[loop]  # later callers need a later scan: the next batch
            try:
                batch.set_result(await asyncio.to_thread(_process_table))
            except BaseException as exc:
                batch.set_exception(exc)

        task = loop.create_task(scan(future))
        _scan_tasks.add(task)
        task.add_done_callback(_scan_tasks.discard)
    return await asyncio.shield(future)


async def referring_to_async(directory: Path) -> list[int]:
    """`referring_to` off the event loop, sharing its scan with concurrent callers."""
    return _referring(await _shared_process_table(), directory)


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- listening sockets -------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


def _decode(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/tcp6 prints four host-order (little-endian) 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(words)


def parse_listeners(text: str) -> list[Listener]:
    """Listening sockets from the text of /proc/net/tcp or /proc/net/tcp6."""
    result = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
            continue
        hex_addr, hex_port = fields[1].split(":")
        result.append(Listener(_decode(hex_addr), int(hex_port, 16), int(fields[9])))
    return result


def listeners() -> list[Listener]:
    found: list[Listener] = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            found += parse_listeners(Path(name).read_text())
    return found


def blocking_listeners(address: str, port: int, found: Sequence[Listener]) -> list[Listener]:
    """The listeners that keep `address:port` from being bound: same address or wildcard."""
    ip = ipaddress.IPv4Address(address)
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    return [
        sock
        for sock in found
        if sock.port == port and (sock.address in (ip, mapped) or sock.address.is_unspecified)
    ]


def socket_owners(inode: int) -> list[int]:
    target = f"socket:[{inode}]"
    owners = []
    for pid in pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    owners.append(pid)
                    break
            except OSError:
                continue
    return owners


def check_port_free(address: str, port: int) -> None:
    """Raise a clear error, naming the holder, when `address:port` cannot be bound."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # sshd and asyncssh both set SO_REUSEADDR, so TIME_WAIT leftovers do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
        return
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise ProvisorError(f"cannot listen on {address}:{port}: {exc.strerror}") from exc
    finally:
        probe.close()
    holders = []
    for sock in blocking_listeners(address, port, listeners()):
        where = f"[{sock.address}]" if sock.address.version == 6 else str(sock.address)
        owners = socket_owners(sock.inode)
        who = ", ".join(f"pid {p} ({cmdline(p)[:120] or '?'})" for p in owners) or "unknown"
        wildcard = " (wildcard: it holds the port on every 127.x address)" * (
            sock.address.is_unspecified
        )
        holders.append(f"{where}:{port}{wildcard} held by {who}")
    detail = "; ".join(holders) or "no listener found in /proc/net/tcp*"
    raise ProvisorError(
        f"cannot listen on {address}:{port}: address already in use: {detail}. "
        "Stop that process (for a system sshd: systemctl stop ssh, or kill the pid)."
    )


# --- readiness -----------------------------------------------------------------------------


async def _banner(address: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        return await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_for_ssh(
    address: str,
    port: int,
    *,
    alive: Callable[[], bool],
    log: Path,
    what: str,
    timeout: float,
) -> None:
    """Return once `address:port` sends an SSH banner; fail fast if the process died."""

    async def answered() -> bool:
        try:
            if (await _banner(address, port)).startswith(b"SSH-"):
                return True
        except (TimeoutError, OSError):
            pass
        if not alive():
            raise ProvisorError(
                f"{what} exited before answering SSH on {address}:{port}; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        return False

    if not await poll_until(answered, timeout=timeout, first=0.01, factor=1.5):
        raise ProvisorError(
            f"{what} did not answer SSH on {address}:{port} within {timeout:g} s; "
            f"last lines of {log}:\n{log_tail(log)}"
        )


async def wait_for_log(log: Path, offset: int, marker: str, *, timeout: float) -> bool:
    """Wait until `marker` appears in `log` past byte `offset`."""

    def seen() -> bool:
        try:
            with log.open("rb") as f:
                f.seek(offset)
                return marker.encode() in f.read()
        except OSError:
            return False

    return bool(await poll_until(seen, timeout=timeout))


def smaps_rollup(pid: int) -> dict[str, int]:
    """Memory totals of a process in kB (Rss, Pss, ...), empty when it is gone."""
    totals: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return totals
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            totals[key] = int(parts[0])
    return totals
