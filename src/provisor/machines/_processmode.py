"""Process mode: start, stop and rekey hosts served by `_userhost` (no root needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import sys
import time
import weakref
from dataclasses import replace
from pathlib import Path

from provisor.core.errors import ProvisorError
from provisor.polling import poll_until

from . import procs
from ._host import (
    USERHOST_ENV_MARKER,
    USERHOST_LOG,
    BootOptions,
    SandboxHost,
    log_tail,
    write_state,
)
from ._keys import HOST_KEY, client_key, new_host_key

LOG = USERHOST_LOG

# Per event loop (a semaphore belongs to one loop; the pytest fixture runs a loop per call).
_boot_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _boot_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _boot_slots.get(loop)
    if slot is None:
        # Each host is a Python process importing asyncssh (~0.4 s of CPU): booting more
        # at once than the CPUs can carry only makes every one late for its timeout.
        slot = _boot_slots[loop] = asyncio.Semaphore((os.cpu_count() or 2) + 2)
    return slot


# Without a UTS namespace the machine's hostname cannot change; this shim, first in the
# sessions' PATH, makes `hostname` answer the host's name as it does in namespace mode.
_HOSTNAME_SHIM = """\
#!/bin/sh
case "${1-}" in
    ""|-s|--short|-f|--fqdn|--long) printf '%s\\n' "$HOSTNAME" ;;
    *) exec /usr/bin/hostname "$@" ;;
esac
"""


def _prepare_disk(directory: Path, client_public: str, keys: tuple[str, ...]) -> None:
    shim = directory / "bin" / "hostname"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(_HOSTNAME_SHIM)
    shim.chmod(0o755)
    root = directory / "root"
    ssh_dir = root / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    lines = [client_public + " provisor-sandbox-client", *(k.strip() for k in keys)]
    authorized.write_text("\n".join(lines) + "\n")
    authorized.chmod(0o600)


def _launch(
    name: str, address: str, port: int, base_dir: Path, options: BootOptions
) -> SandboxHost:
    """Everything up to the spawn of the host: blocking file work, run in a thread."""
    procs.check_port_free(address, port)
    base_dir.mkdir(parents=True, exist_ok=True)
    key_path, client_public = client_key(base_dir)
    directory = base_dir / name
    directory.mkdir(mode=0o755, exist_ok=True)
    if not (directory / HOST_KEY).exists():
        _prepare_disk(directory, client_public, options.authorized_keys)
        host_public = new_host_key(directory)
    else:
        host_public = (directory / f"{HOST_KEY}.pub").read_text().strip()
    user = pwd.getpwuid(os.geteuid()).pw_name
    log = directory / LOG
    with log.open("a") as f:
        f.write(f"--- provisor: boot {name} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n")
    argv = [
        sys.executable,
        "-m",
        "provisor.machines._userhost",
        "--dir",
        str(directory),
        "--name",
        options.hostname,  # what $HOSTNAME and the `hostname` shim answer
        "--address",
        address,
        "--port",
        str(port),
        "--user",
        user,
    ]
    pid = procs.spawn_detached(argv, log=log, cwd=directory / "root")
    host = SandboxHost(
        name=name,
        address=address,
        port=port,
        user=user,
        directory=directory,
        isolation="process",
        client_key=key_path,
        host_public_key=host_public,
        pid=pid,
        hostname=options.hostname,
    )
    write_state(host)
    return host


async def start(
    name: str, address: str, port: int, base_dir: Path, options: BootOptions, *, timeout: float
) -> SandboxHost:
    async with _boot_slot():
        return await procs.boot(
            lambda: _launch(name, address, port, base_dir, options),
            stop,
            log=LOG,
            timeout=timeout,
        )


def is_running(host: SandboxHost) -> bool:
    return procs.is_alive(host.pid, host.directory)


def _marked(directory: Path) -> list[int]:
    """Processes started by the host that left its directory (they carry its env marker)."""
    marker = f"{USERHOST_ENV_MARKER}={directory}".encode()
    found = []
    for pid in procs.pids():
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if marker in environ and procs.is_alive(pid):
                found.append(pid)
    return found


async def stop(host: SandboxHost) -> None:
    directory = host.directory
    if procs.is_alive(host.pid, directory):
        # SIGTERM lets the host kill and reap what it started (it is their subreaper).
        procs.kill(host.pid, signal.SIGTERM)
        if not await poll_until(lambda: not procs.is_alive(host.pid, directory), timeout=5.0):
            for pid in procs.descendants(host.pid):
                procs.kill(pid)
            procs.kill(host.pid)

    def leftovers() -> list[int]:
        return sorted(set(procs.referring_to(directory)) | set(_marked(directory)))

    left = leftovers()
    for pid in left:
        procs.kill(pid)
    if left and not await poll_until(lambda: not leftovers(), timeout=5.0):
        survivors = ", ".join(str(p) for p in leftovers())
        raise ProvisorError(f"sandbox host {host.name}: processes survived stop: {survivors}")


async def rekey(host: SandboxHost, *, timeout: float) -> SandboxHost:
    log = host.directory / LOG
    offset = log.stat().st_size if log.exists() else 0
    line = new_host_key(host.directory)
    new = replace(host, host_public_key=line)
    write_state(new)
    if is_running(host):
        procs.kill(host.pid, signal.SIGHUP)
        if not await procs.wait_for_log(log, offset, "host key reloaded", timeout=timeout):
            raise ProvisorError(
                f"sandbox host {host.name} did not reload its host key within {timeout:g} s; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
    return new


def authorized_keys_path(host: SandboxHost) -> Path:
    return host.directory / "root" / ".ssh" / "authorized_keys"
