"""Memory limits for local machines, with cgroups when the computer lets us.

A machine's cgroup is made *below the cgroup of the process that launches it*
(`<own cgroup>/provisor-local/<machine id>`), never at the top of the hierarchy: a limit
set on the caller (a systemd unit, a container) then still covers its machines, which
escape nothing. cgroup v2 is used when the memory controller can be enabled there
(`memory.max`); otherwise cgroup v1's memory hierarchy (`memory.limit_in_bytes`); when
neither is writable the size is only recorded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provisor.polling import poll_until_sync

log = logging.getLogger("provisor.providers.local")

GROUP = "provisor-local"


@dataclass(frozen=True)
class MemoryCgroups:
    version: Literal[1, 2]
    parent: Path  # machines' cgroups are made here

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    def path_for(self, machine_id: str) -> Path:
        """Where the machine's cgroup is (once made)."""
        return self.parent / machine_id

    def create(self, machine_id: str, memory_mb: int) -> Path:
        """The machine's cgroup with its limit set (made if missing)."""
        path = self.path_for(machine_id)
        for _ in range(3):
            try:
                # The parent goes away with the last machine (see `remove`): make it again.
                self.parent.mkdir(exist_ok=True)
                if self.version == 2:
                    (self.parent / "cgroup.subtree_control").write_text("+memory\n")
                path.mkdir(exist_ok=True)
                break
            except FileNotFoundError:
                continue  # removed by `remove` of another machine meanwhile
        (path / self.limit_file).write_text(f"{memory_mb * 1024 * 1024}\n")
        return path


def apply_limit(path: Path, memory_mb: int) -> bool:
    """Set the limit again on an existing machine cgroup; False if it is gone."""
    for name in ("memory.max", "memory.limit_in_bytes"):
        limit = path / name
        if limit.exists():
            with contextlib.suppress(OSError):
                limit.write_text(f"{memory_mb * 1024 * 1024}\n")
                return True
    return False


def remove(path: Path, timeout: float = 5.0) -> None:
    """Remove a machine's cgroup once its processes are gone (best effort)."""

    def gone() -> bool:
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.EBUSY:  # the kernel still accounts its last processes
                return False
            log.warning("cannot remove cgroup %s: %s", path, exc)
        else:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the provider's group, once its last machine is gone
        return True

    if not poll_until_sync(gone, timeout=timeout, first=0.05, factor=1.0):
        log.warning("cannot remove cgroup %s: still busy after %g s", path, timeout)


def _mount_points() -> tuple[Path | None, Path | None]:
    """(cgroup2 mount point, cgroup v1 memory mount point) from /proc/self/mountinfo."""
    v2: Path | None = None
    v1_memory: Path | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
        elif tail[0] == "cgroup" and "memory" in tail[2].split(",") and v1_memory is None:
            v1_memory = Path(fields[4])
    return v2, v1_memory


def _own_paths() -> tuple[str | None, str | None]:
    """(own cgroup v2 path, own v1 memory cgroup path) from /proc/self/cgroup."""
    v2: str | None = None
    memory: str | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                v2 = path
            elif "memory" in controllers.split(","):
                memory = path
    return v2, memory


def _try_v2(mount: Path, own: str) -> MemoryCgroups | None:
    base = mount / own.lstrip("/")
    parent = base / GROUP
    try:
        if "memory" not in (base / "cgroup.controllers").read_text().split():
            return None
        parent.mkdir(exist_ok=True)
        # Controllers reach a child only when enabled in every ancestor's subtree_control;
        # a cgroup with processes of its own refuses that (EBUSY), except the root.
        (base / "cgroup.subtree_control").write_text("+memory\n")
        (parent / "cgroup.subtree_control").write_text("+memory\n")
        return MemoryCgroups(2, parent)
    except OSError as exc:
        log.debug("cgroup v2 memory limits unavailable under %s: %s", base, exc)
        with contextlib.suppress(OSError):
            parent.rmdir()
        return None


def _try_v1(mount: Path, own: str) -> MemoryCgroups | None:
    parent = mount / own.lstrip("/") / GROUP
    try:
        parent.mkdir(exist_ok=True)
        if not (parent / "memory.limit_in_bytes").exists():
            return None
        return MemoryCgroups(1, parent)
    except OSError as exc:
        log.debug("cgroup v1 memory limits unavailable under %s: %s", parent, exc)
        return None


def detect() -> MemoryCgroups | None:
    """Where machines' memory cgroups can be made, or None (sizes are then only recorded)."""
    if os.geteuid() != 0:
        return None
    v2_mount, v1_mount = _mount_points()
    v2_own, v1_own = _own_paths()
    if v2_mount is not None and v2_own is not None:
        found = _try_v2(v2_mount, v2_own)
        if found is not None:
            return found
    if v1_mount is not None and v1_own is not None:
        found = _try_v1(v1_mount, v1_own)
        if found is not None:
            return found
    log.info("no writable memory cgroup: machine memory sizes are recorded, not enforced")
    return None
