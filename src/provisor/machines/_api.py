"""The public, isolation-independent API: each call picks the backend the host uses."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from provisor.core.errors import Conflict, InvalidInput, ProvisorError

from . import _namespaces, _processmode
from ._host import (
    CONSOLE_LOG,
    ISOLATIONS,
    OVERLAID_DIRS,
    STATE_FILE,
    BootOptions,
    Isolation,
    Mount,
    SandboxHost,
    check_namespace_base_dir,
    default_base_dir,
    default_isolation,
    read_state,
    validate_address,
    validate_hostname,
    validate_mount,
    validate_name,
    validate_network,
    validate_port,
)

START_TIMEOUT = 10.0  # seconds until a host must answer SSH
DEFAULT_PORTS: dict[Isolation, int] = {"namespaces": 22, "process": 2222}


def _base(base_dir: Path | str | None) -> Path:
    return Path(os.path.abspath(base_dir if base_dir is not None else default_base_dir()))


async def start(
    name: str,
    address: str,
    *,
    base_dir: Path | None = None,
    port: int | None = None,
    isolation: Isolation | None = None,
    hostname: str | None = None,
    authorized_keys: Sequence[str] = (),
    mounts: Sequence[Mount] | None = None,
    cgroup: Path | None = None,
    init_script: str | None = None,
    contain: bool = False,
    network: str | None = None,
    publish: Sequence[int] | None = None,
    relays: Sequence[tuple[str, int]] | None = None,
    password_login: bool | None = None,
) -> SandboxHost:
    """Start (boot) a sandbox host; returns once its SSH port sends a banner.

    An existing stopped host of that name boots again from its disk, with the hostname,
    mounts and cgroup it had unless new ones are given.

    - `hostname`: what the host's `hostname` answers (default: `name`).
    - `authorized_keys`: OpenSSH public keys that may log in as the host's user besides
      the base dir's client key; written when the host's disk is made (first boot).
    - `mounts` (namespace mode): directories bound or ext4 images loop-mounted in the
      host's mount namespace at every boot.
    - `cgroup` (namespace mode): an existing cgroup directory the host's processes join
      at every boot (the caller sets its limits).
    - `init_script` (namespace mode): a shell script the host runs at every boot, in the
      background once its filesystems are mounted, detached, with its output appended
      to `console_log_path(host)`; its argument is the host directory.
    - `contain` (namespace mode): the host's root is an unprivileged uid of this computer,
      in a user namespace of its own (docs/testbed.md, "Containment"); where the kernel
      cannot, a warning says so and the host boots uncontained.
    - `network` (contained hosts): the name of a network namespace the host shares with
      the other contained hosts of that name under `base_dir`, with only a loopback
      interface: every 127.x address is local there, nothing of this computer's is
      reachable. `publish`: TCP ports of the host's address forwarded from this
      computer's network into it (besides its SSH port); `relays`: (address, port)
      endpoints of this computer reachable from inside at the same address and port.
      The three are kept across boots unless new ones are given.
    - `password_login` (namespace mode): sshd accepts password logins too (users with a
      password in the host's /etc/shadow); root still logs in with keys only. Kept
      across boots unless given.
    """
    validate_name(name)
    address = validate_address(address)
    mode = isolation if isolation is not None else default_isolation()
    if mode not in ISOLATIONS:
        raise InvalidInput(
            f"unknown isolation {mode!r}: expected one of {', '.join(ISOLATIONS)}",
            field="isolation",
        )
    port = validate_port(port if port is not None else DEFAULT_PORTS[mode])
    base = _base(base_dir)
    if mode == "namespaces":
        base = check_namespace_base_dir(base)
    existing = read_state(base / name)
    if hostname is None:
        hostname = existing.effective_hostname if existing is not None else name
    validate_hostname(hostname)
    if mounts is None:
        mounts = existing.mounts if existing is not None else ()
    for mount in mounts:
        validate_mount(mount)
    if network is None:
        network = existing.network if existing is not None else ""
    if publish is None:
        publish = existing.publish if existing is not None else ()
    if relays is None:
        relays = existing.relays if existing is not None else ()
    if password_login is None:
        password_login = existing.password_login if existing is not None else False
    publish = tuple(sorted(set(publish)))
    relays = tuple((str(h), int(p)) for h, p in relays)
    validate_network(network, publish, relays)
    # The host's cgroup is kept unless it is gone (cgroups do not survive a restart of
    # the machine).
    if (
        cgroup is None
        and existing is not None
        and existing.cgroup is not None
        and (existing.cgroup / "cgroup.procs").is_file()
    ):
        cgroup = existing.cgroup
    if cgroup is not None:
        validate_mount(Mount(cgroup, cgroup.as_posix()))  # a plain absolute path
        if not (cgroup / "cgroup.procs").is_file():
            raise InvalidInput(f"{cgroup} is not a cgroup directory", field="cgroup")
    if mode == "process" and (
        mounts
        or cgroup is not None
        or init_script is not None
        or contain
        or network
        or password_login
    ):
        raise InvalidInput(
            "mounts, cgroup, init_script, contain, network and password_login need "
            "namespace-mode isolation (root)",
            field="isolation",
        )
    keys = tuple(authorized_keys)
    for key in keys:
        if not key.strip() or "\n" in key.strip():
            raise InvalidInput(
                f"invalid authorized key {key[:40]!r}: expected one OpenSSH public key line",
                field="authorized_keys",
            )
    options = BootOptions(
        hostname=hostname,
        authorized_keys=keys,
        mounts=tuple(mounts),
        cgroup=cgroup,
        init_script=init_script,
        contain=contain,
        network=network,
        publish=publish,
        relays=relays,
        password_login=password_login,
    )
    if existing is not None:
        if existing.isolation != mode:
            raise Conflict(
                f"sandbox host {name} exists with isolation {existing.isolation!r}; "
                f"destroy it before starting it with {mode!r}",
                field="name",
            )
        if is_running(existing):
            raise Conflict(
                f"sandbox host {name} is already running (pid {existing.pid}, "
                f"{existing.address}:{existing.port})",
                field="name",
            )
    if mode == "namespaces":
        return await _namespaces.start(name, address, port, base, options, timeout=START_TIMEOUT)
    return await _processmode.start(name, address, port, base, options, timeout=START_TIMEOUT)


async def stop(host: SandboxHost, *, destroy: bool = False) -> None:
    """Power the host off: no process and no mount is left. Idempotent.

    The directory (the host's disk) is kept unless `destroy` is true.
    """
    if host.isolation == "namespaces":
        await _namespaces.stop(host)
    else:
        await _processmode.stop(host)
    if destroy and host.directory.exists():
        try:
            await asyncio.to_thread(shutil.rmtree, host.directory)
        except OSError as exc:
            raise ProvisorError(
                f"sandbox host {host.name}: cannot remove {host.directory}: {exc}"
            ) from exc


async def destroy(host: SandboxHost) -> None:
    """Stop the host and remove its directory."""
    await stop(host, destroy=True)


async def restart(host: SandboxHost) -> SandboxHost:
    """A reboot: every process is gone, files written before are still there."""
    await stop(host)
    return await start(
        host.name,
        host.address,
        base_dir=host.directory.parent,
        port=host.port,
        isolation=host.isolation,
    )


async def rekey(host: SandboxHost) -> SandboxHost:
    """Give the host a new host key and restart its SSH server with it."""
    if host.isolation == "namespaces":
        return await _namespaces.rekey(host, timeout=START_TIMEOUT)
    return await _processmode.rekey(host, timeout=START_TIMEOUT)


def is_running(host: SandboxHost) -> bool:
    if host.isolation == "namespaces":
        return _namespaces.is_running(host)
    return _processmode.is_running(host)


def load(name: str, base_dir: Path | None = None) -> SandboxHost | None:
    """Re-read a host from its directory (hosts outlive the process that started them)."""
    validate_name(name)
    return read_state(_base(base_dir) / name)


def list_hosts(base_dir: Path | None = None) -> list[SandboxHost]:
    """Every host recorded under a base dir, running or not, by name."""
    base = _base(base_dir)
    if not base.is_dir():
        return []
    found = []
    for state in sorted(base.glob(f"*/{STATE_FILE}")):
        host = read_state(state.parent)
        if host is not None:
            found.append(host)
    return found


def authorized_keys_path(host: SandboxHost) -> Path:
    """Machine-side path of the host's root (or user) authorized_keys file.

    For a running namespace-mode host the path goes through the host's own mount
    namespace (/proc/<pid>/root/...), so edits are seen by its sshd at once; for a
    stopped one it is the file in the overlay's upper dir.
    """
    if host.isolation == "namespaces":
        return _namespaces.authorized_keys_path(host)
    return _processmode.authorized_keys_path(host)


def check_mount(mount: Mount) -> Mount:
    """Refuse a mount `start` could not make (see `Mount`); returns it."""
    validate_mount(mount)
    _namespaces.check_mount_target(mount)
    return mount


def host_file(host: SandboxHost, path: str) -> Path:
    """Machine-side path of a file as a namespace-mode host sees it at `path`.

    Running: through the host's own mount namespace (/proc/<pid>/root/...). Stopped:
    the file in its copy-on-write layer, for a path below an overlaid directory.
    """
    if host.isolation != "namespaces":
        raise InvalidInput("host_file needs a namespace-mode host", field="isolation")
    if not path.startswith("/") or os.path.normpath(path) != path:
        raise InvalidInput(f"expected a normalized absolute path, not {path!r}", field="path")
    init = _namespaces.init_pid(host)
    if init is not None:
        return Path(f"/proc/{init}/root{path}")
    if not any(path.startswith(d + "/") for d in OVERLAID_DIRS):
        raise InvalidInput(
            f"{path} of a stopped host: only files below {' '.join(OVERLAID_DIRS)} are on its disk",
            field="path",
        )
    return host.directory / "upper" / path.lstrip("/")


def console_log_path(host: SandboxHost) -> Path:
    """Where a namespace-mode host's init script writes (it appends at every boot)."""
    return host.directory / CONSOLE_LOG


def known_hosts_entry(host: SandboxHost) -> str:
    """A known_hosts line pinning the host's current key."""
    where = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    return f"{where} {host.host_public_key}"
