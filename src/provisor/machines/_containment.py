"""Contained namespace-mode hosts: what the launcher prepares for `_contain.py`.

A contained host's root is uid `UID_BASE` of the machine, in a user namespace of its own
(see `_contain.py` for the boot, docs/testbed.md "Containment" for what it stops). When
the kernel cannot (no user namespaces, no idmapped mounts), hosts fall back to the
uncontained namespace mode, and a warning says so once per process and base dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ._contain import CONFIG, UID_BASE, UID_COUNT
from ._host import OVERLAID_DIRS, Mount

__all__ = ["UID_BASE", "UID_COUNT", "available", "boot_argv", "prepare", "write_config"]

log = logging.getLogger("provisor.machines")

SCRIPT = Path(__file__).with_name("_contain.py")
VIEWS = ".views"  # in the host directory: mount points of the idmapped views
DISK_VIEW = "disk"
# Shown root-owned (idmapped): software, so that /usr/local and the like are the host's
# root's. The other overlaid directories show the machine's files owned by nobody.
IDMAPPED_DIRS = ("/usr",)
# Their first-level directories get a root-owned copy in the upper dir: the host's root
# may add files in /etc/<x> and /var/<x> (e.g. /var/lib/provisor), not change the
# machine's files there.
OWNED_SUBDIRS = ("/etc", "/var")
# Copies the host's root owns, so that useradd and the like work; shadow files are made
# afresh, every account locked: the machine's password hashes are not the host's to read.
_ACCOUNT_FILES = ("passwd", "group", "subuid", "subgid")
# Readable by every user of the computer, and refused by the programs that read them
# unless root owns them (sudo, cron): root-owned copies.
_ROOT_COPIES = ("sudo.conf", "crontab")
# Opened for writing by useradd and its kin: made afresh, empty.
_FRESH_FILES = (".pwd.lock",)
_SHADOW_FILES = {"shadow": "passwd", "gshadow": "group"}
_SUDOERS = """\
# provisor: this machine's own sudo policy (Debian's default)
Defaults\tenv_reset
Defaults\tmail_badpass
Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults\tuse_pty
root\tALL=(ALL:ALL) ALL
%sudo\tALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
"""
OFF_VARIABLE = "PROVISOR_MACHINE_CONTAINMENT"  # "off": never contain (the fallback)

_checked: dict[str, str | None] = {}  # base dir -> None (available) or why not
_lock = threading.Lock()


def available(base_dir: Path) -> bool:
    """Whether hosts under `base_dir` can be contained; warns once when they cannot."""
    key = str(base_dir)
    with _lock:
        if key not in _checked:
            _checked[key] = _why_not(base_dir)
            if _checked[key] is not None:
                log.warning(
                    "sandbox hosts under %s are NOT contained: their root is the real root "
                    "of this computer, in its network (%s). See docs/providers.md, "
                    '"Containment".',
                    base_dir,
                    _checked[key],
                )
        return _checked[key] is None


def _why_not(base_dir: Path) -> str | None:
    if os.environ.get(OFF_VARIABLE, "").lower() in ("off", "0", "no", "false"):
        return f"{OFF_VARIABLE}={os.environ[OFF_VARIABLE]}"
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 1
    if limit == 0:
        return "user namespaces are disabled: /proc/sys/user/max_user_namespaces is 0"
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-S", str(SCRIPT), "probe", str(base_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the containment probe failed: {exc}"
    if probe.returncode != 0:
        detail = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"the kernel refused a user namespace or an idmapped mount: {detail}"
    return None


NETWORKS = ".networks"  # in the base dir: a directory per network, for its holder


def network_directory(base_dir: Path, network: str) -> Path:
    """Where the holder of a network's namespace listens (see `_contain.py`)."""
    return base_dir / NETWORKS / network


def boot_environment() -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }


def boot_argv(directory: Path) -> list[str]:
    return [sys.executable, "-I", "-S", str(SCRIPT), "boot", str(directory)]


def _create(path: Path, data: bytes, model: os.stat_result) -> None:
    """A new file, never through a symbolic link: what is in the upper dirs is the
    machine's to change, and this runs as the computer's root."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, model.st_uid, model.st_gid)
        os.fchmod(fd, model.st_mode & 0o7777)
    finally:
        os.close(fd)


def _read_own(path: Path, limit: int = 1024 * 1024) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def prepare(directory: Path) -> None:
    """Make (idempotently) what a contained boot needs on the host's disk.

    Only what is missing is made: whatever the machine put there (its own files, or
    symbolic links to anywhere) is left alone and never followed.
    """
    for lower in OWNED_SUBDIRS:
        if not os.path.isdir(lower):
            continue
        upper = directory / "upper" / lower.lstrip("/")
        for entry in os.scandir(lower):
            target = upper / entry.name
            if entry.is_dir(follow_symlinks=False) and not os.path.lexists(target):
                target.mkdir()
                model = entry.stat(follow_symlinks=False)
                os.chown(target, model.st_uid, model.st_gid, follow_symlinks=False)
                os.chmod(target, model.st_mode & 0o7777)
    etc = directory / "upper" / "etc"
    for name in (*_ACCOUNT_FILES, *_ROOT_COPIES):
        source, target = Path("/etc") / name, etc / name
        if source.is_file() and not os.path.lexists(target):
            _create(target, source.read_bytes(), source.stat())
    for name in _FRESH_FILES:
        source, target = Path("/etc") / name, etc / name
        if source.is_file() and not os.path.lexists(target):
            _create(target, b"", source.stat())
    for name, accounts in _SHADOW_FILES.items():
        source, target = Path("/etc") / name, etc / name
        if not source.is_file() or os.path.lexists(target):
            continue
        try:
            text = _read_own(etc / accounts).decode("utf-8", "replace")
        except OSError:
            continue
        names = [line.split(":", 1)[0] for line in text.splitlines()]
        if name == "shadow":
            lines = [f"{n}:*:19000:0:99999:7:::" for n in names if n]
        else:
            lines = [f"{n}:*::" for n in names if n]
        _create(target, ("\n".join(lines) + "\n").encode(), source.stat())
    for name in (*_ACCOUNT_FILES, *_SHADOW_FILES):
        # The backups (passwd- and the like) useradd replaces: the machine's own too.
        source, target = Path("/etc") / f"{name}-", etc / f"{name}-"
        if source.is_file() and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                _create(target, _read_own(etc / name), source.stat())
    _own_sudoers(etc)


def _own_sudoers(etc: Path) -> None:
    """sudo reads only root-owned policy, and the computer's (0440) is not the machine's
    to read: the machine gets Debian's default, and the computer's drop-ins are hidden
    (overlayfs whiteouts) from its /etc/sudoers.d, which it may fill itself."""
    host = Path("/etc/sudoers")
    if host.is_file() and not os.path.lexists(etc / "sudoers"):
        _create(etc / "sudoers", _SUDOERS.encode(), host.stat())
    drop_ins = etc / "sudoers.d"
    if not drop_ins.is_dir() or drop_ins.is_symlink():
        return
    for entry in os.scandir("/etc/sudoers.d"):
        target = drop_ins / entry.name
        if not os.path.lexists(target):
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))


def _views(directory: Path, mounts: Sequence[Mount]) -> list[tuple[str, str, str, bool]]:
    """(key, source, mount point, writable) of each idmapped view; the host directory's first."""
    views = directory / VIEWS
    found = [(DISK_VIEW, str(directory), str(views / DISK_VIEW), True)]
    found += [(d, d, str(views / d.lstrip("/")), False) for d in IDMAPPED_DIRS if os.path.isdir(d)]
    for index, mount in enumerate(mounts):
        if mount.kind == "loop":
            key = f"volume-{index}"
            found.append((key, str(views / f"loop-{index}"), str(views / key), True))
    return found


def _view_path(views: Sequence[tuple[str, str, str, bool]], key: str) -> str:
    return next(view[2] for view in views if view[0] == key)


def fstab(directory: Path, name: str, mounts: Sequence[Mount]) -> str:
    """The host's own mounts, made by its root inside its user namespace (`mount -a`).

    Where the host directory's views are mounted (under it) is hidden afterwards, by the
    fresh /run or the read-only host directory bound over it (see `_contain.py`).
    """
    views = _views(directory, mounts)
    disk = _view_path(views, DISK_VIEW)
    lines = [f"# provisor sandbox host {name} (contained): mounted by its root"]
    for lower in OVERLAID_DIRS:
        rel = lower.lstrip("/")
        if not (directory / "upper" / rel).is_dir():
            continue
        if (directory / "lower" / rel).is_dir():
            below = f"{disk}/lower/{rel}"
        elif lower in IDMAPPED_DIRS:
            below = _view_path(views, lower)
        else:
            below = lower
        options = f"lowerdir={below},upperdir={disk}/upper/{rel},workdir={disk}/work/{rel}"
        # In a user namespace overlayfs keeps its marks (opaque directories) in user.*
        # extended attributes: trusted.* ones are for the computer's root alone.
        lines.append(f"provisor-{name} {lower} overlay {options},userxattr 0 0")
    for index, mount in enumerate(mounts):
        mkdir = ",X-mount.mkdir" if _in_overlay(mount.target) else ""
        if mount.kind == "loop":
            source = _view_path(views, f"volume-{index}")
        else:
            source = _in_view(directory, disk, mount.source)
        lines.append(f"{source} {mount.target} none bind{mkdir} 0 0")
    lines += [
        f"provisor-{name}-run /run tmpfs mode=0755,nosuid,nodev,size=64m 0 0",
        # The host directory, read-only, over its views (and back at its path under the
        # fresh /run): its sshd reads its config and host key there.
        f". {directory} none bind,ro,X-mount.mkdir 0 0",
        f"provisor-{name}-sshd /run/sshd tmpfs mode=0755,size=64k,X-mount.mkdir 0 0",
        "devpts /dev/pts devpts newinstance,ptmxmode=0666,mode=0620,gid=5 0 0",
        "/dev/pts/ptmx /dev/ptmx none bind 0 0",
        f"provisor-{name}-shm /dev/shm tmpfs mode=1777,nosuid,nodev,size=64m 0 0",
    ]
    return "\n".join(lines) + "\n"


def _in_overlay(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in OVERLAID_DIRS)


def _in_view(directory: Path, disk: str, source: Path) -> str:
    """A bind source below the host directory, seen through its idmapped view."""
    try:
        rel = source.relative_to(directory)
    except ValueError:
        return str(source)  # elsewhere on the machine: shown as it is (owned by nobody)
    return f"{disk}/{rel}"


def write_config(
    directory: Path,
    *,
    address: str,
    port: int,
    hostname: str,
    mounts: Sequence[Mount],
    cgroup: Path | None,
    init_script: Path | None,
    log: Path,
    console: Path,
    sshd: str,
    sshd_config: Path,
    fstab_path: Path,
    network: str = "",
    publish: Sequence[int] = (),
    relays: Sequence[tuple[str, int]] = (),
) -> None:
    views = _views(directory, mounts)
    loops = []
    for index, mount in enumerate(mounts):
        if mount.kind == "loop":
            loops.append([str(mount.source), str(directory / VIEWS / f"loop-{index}")])
    for _, _, target, _ in views:
        Path(target).mkdir(parents=True, exist_ok=True)
    for _, target in loops:
        Path(target).mkdir(exist_ok=True)
    config = {
        "directory": str(directory),
        "address": address,
        "port": port,
        "hostname": hostname,
        "log": str(log),
        "console": str(console),
        "cgroup": str(cgroup) if cgroup is not None else None,
        "loops": loops,
        "views": [[source, target, writable] for _, source, target, writable in views],
        "disk_view": str(directory / VIEWS / DISK_VIEW),
        "fstab": str(fstab_path),
        "sshd": sshd,
        "sshd_config": str(sshd_config),
        "init_script": str(init_script) if init_script is not None else None,
        "network": str(network_directory(directory.parent, network)) if network else None,
        "publish": list(publish),
        "relays": [[host, port] for host, port in relays],
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
