"""A local machine's disk: volumes, and snapshots of it as tar.gz archives.

The disk of a machine is its sandbox host's overlay upper dirs (`upper/`: everything
it changed in /etc /root /home /var /usr /opt /srv /tmp) plus its volumes
(`volumes/v<N>`: a directory, or `v<N>.img`: a sparse ext4 image loop-mounted at boot).
A snapshot archives both with GNU tar (ownership, modes, overlay whiteouts and their
`trusted.overlay.*` attributes, holes of sparse images kept) in name order, compressed
without a timestamp, next to a manifest `provisor-snapshot.json`.

Everything here blocks: the provider runs it in threads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from provisor import machines
from provisor.files import open_private, private_dir
from provisor.polling import poll_until_sync
from provisor.providers._local_state import VolumeRecord
from provisor.providers.base import ProviderError

VOLUMES = "volumes"
UPPER = "upper"
MANIFEST = "provisor-snapshot.json"
CHUNK = 1024 * 1024
GIB = 1024**3
_XATTRS = ["--xattrs", "--xattrs-include=user.*", "--xattrs-include=trusted.*"]
_XATTRS += ["--xattrs-include=security.*"]


def volume_path(directory: Path, volume: VolumeRecord) -> Path:
    return directory / VOLUMES / volume.file_name


def make_volumes(directory: Path, volumes: Sequence[VolumeRecord], machine_id: str) -> None:
    """Create the volumes a machine does not have yet (a restored disk has some)."""
    if not volumes:
        return
    (directory / VOLUMES).mkdir(parents=True, exist_ok=True)
    for volume in volumes:
        path = volume_path(directory, volume)
        if path.exists():
            continue
        if volume.kind == "dir":
            path.mkdir(mode=0o755)
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            f.truncate(volume.size_gb * GIB)  # sparse: takes no space until written
        result = subprocess.run(
            ["mkfs.ext4", "-F", "-q", "-m", "0", "-L", f"v{volume.index}",
             "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(tmp)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise ProviderError(
                f"mkfs.ext4 of volume {volume.mount} failed: {result.stderr.strip()}",
                machine=machine_id,
                call="launch",
            )
        tmp.replace(path)


def mounts(directory: Path, volumes: Sequence[VolumeRecord]) -> list[machines.Mount]:
    return [
        machines.Mount(volume_path(directory, v), v.mount, "loop" if v.kind == "loop" else "bind")
        for v in volumes
    ]


def loop_devices(paths: Iterable[Path]) -> list[str]:
    """Loop devices whose backing file is one of `paths` (deleted files included)."""
    wanted = {str(p) for p in paths}
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            name = backing.read_text().strip().removesuffix(" (deleted)")
            if name in wanted:
                found.append(backing.parent.parent.name)
    return found


def wait_loops_released(paths: Sequence[Path], timeout: float = 10.0) -> list[str]:
    """Wait until no loop device uses `paths`; returns those still attached.

    When a machine's last process exits its mount namespace goes away and the kernel
    detaches the loop devices of its volumes (mount sets them to auto-clear), shortly
    after: booting it again before that would attach a second device to the same image.
    """
    if poll_until_sync(lambda: not loop_devices(paths), timeout=timeout, first=0.01, most=0.2):
        return []
    return loop_devices(paths)


class _HashingWriter:
    """A binary sink that writes through to a file and hashes and counts what it wrote."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def create_archive(
    directory: Path, manifest: dict[str, Any], destination: Path, machine_id: str
) -> tuple[int, str]:
    """Archive a machine's disk to `destination`; returns (size in bytes, SHA-256 hex).

    A running machine is archived as it is (crash-consistent): everything it wrote is
    flushed first (sync(2) reaches the filesystems of its volumes too) and files that
    change while tar reads them are taken as they are.
    """
    os.sync()
    members = [m for m in (UPPER, VOLUMES) if (directory / m).exists()]
    private_dir(destination.parent)  # a machine's disk: its secrets too
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="provisor-snapshot-") as scratch:
        (Path(scratch) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.utime(Path(scratch) / MANIFEST, (0, 0))
        argv = [
            "tar", "--create", "--file=-", "--sort=name", "--numeric-owner",
            "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--sparse", *_XATTRS, "--warning=no-file-changed", "--warning=no-file-removed",
            "-C", scratch, MANIFEST, "-C", str(directory), *members,
        ]  # fmt: skip
        try:
            # tar's complaints go to a file: a pipe nobody reads while the archive streams
            # could fill up and stall it.
            with (
                os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as raw,
                tempfile.TemporaryFile() as stderr,
            ):
                sink = _HashingWriter(raw)
                with (
                    subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr) as tar,
                    gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, compresslevel=6) as gz,
                ):
                    assert tar.stdout is not None
                    while chunk := tar.stdout.read(CHUNK):
                        gz.write(chunk)
                    status = tar.wait()
                stderr.seek(0)
                errors = stderr.read()[-4000:].decode(errors="replace").strip()
                raw.flush()
                os.fsync(raw.fileno())
            # 1: "some files differ" (changed while read): fine for a running machine.
            if status not in (0, 1):
                raise ProviderError(
                    f"tar of the machine's disk failed (exit status {status}): {errors}",
                    machine=machine_id,
                    call="snapshot",
                )
            tmp.replace(destination)
        finally:
            tmp.unlink(missing_ok=True)
    return sink.size, sink.sha256.hexdigest()


def file_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify_archive(path: Path, size: int, sha256: str, snapshot_id: str) -> None:
    """Refuse a snapshot archive that is missing or not the one recorded."""
    try:
        actual_size, actual = file_sha256(path)
    except FileNotFoundError:
        raise ProviderError(
            f"snapshot {snapshot_id}: its archive {path} is missing", call="launch"
        ) from None
    if actual != sha256 or actual_size != size:
        raise ProviderError(
            f"snapshot {snapshot_id} is corrupted: {path} has SHA-256 {actual} "
            f"({actual_size} bytes), {sha256} ({size} bytes) was recorded; "
            "refusing to launch from it",
            call="launch",
        )


def extract_archive(archive: Path, directory: Path, machine_id: str) -> None:
    """Unpack a snapshot's disk into a new machine's (empty) directory."""
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        "tar", "--extract", f"--file={archive}", "--gzip", "--numeric-owner",
        "--same-owner", "--preserve-permissions", *_XATTRS,
        "--exclude", MANIFEST, "-C", str(directory),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProviderError(
            f"cannot unpack snapshot archive {archive}: {result.stderr.strip()}",
            machine=machine_id,
            call="launch",
        )


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest a snapshot archive starts with (its first member)."""
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST or not member.isfile():
                raise ProviderError(f"{archive} is not a provisor snapshot archive")
            handle = tar.extractfile(member)
            assert handle is not None
            found = json.loads(handle.read(1024 * 1024))
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ProviderError(f"cannot read snapshot archive {archive}: {exc}") from None
    if not isinstance(found, dict) or found.get("format") != "provisor-local-snapshot/1":
        raise ProviderError(f"{archive} is not a provisor snapshot archive")
    return found


def replace_disk(archive: Path, directory: Path, machine_id: str) -> None:
    """A stopped machine's disk and volumes replaced by a snapshot's."""
    for member in (UPPER, VOLUMES):
        remove_tree(directory / member)
    extract_archive(archive, directory, machine_id)
