"""Fetching a file or a tree from a host into a local directory, safely.

What a host sends is not trusted: its names and file types decide nothing outside
the destination. Everything is written relative to open directory descriptors, with
`O_NOFOLLOW`, so:

- a name is one path component: `..`, `.`, empty names or names with `/` or NUL are
  refused, and the path named on the host must end in a name of its own;
- a symbolic link on the host is not followed and not recreated (it is listed as
  not fetched); a symbolic link already at the destination is not written through;
- a file is written under a temporary name and renamed over the old one, so a
  hard link or a symbolic link there is replaced, never written into;
- modes are kept without the setuid, setgid and sticky bits, times are kept;
- devices, FIFOs and sockets are listed as not fetched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from provisor._asyncssh import asyncssh

MAX_DEPTH = 128
"""How deep a fetched tree may be."""

_KEPT_MODE = 0o777  # permission bits only: no setuid, setgid or sticky bit
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class FetchRefused(Exception):
    """A name or a file that would take the fetch outside its destination."""


MAX_SKIPPED = 100
"""Entries not fetched that a report names; the rest are counted."""


@dataclass
class FetchReport:
    """What one host's fetch wrote, and what it did not (named up to `MAX_SKIPPED`)."""

    bytes: int = 0
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # "PATH: why", one per entry
    more_skipped: int = 0
    # Called on every answer from the host (an entry listed, a block read): the stall
    # timeout of the transfer counts from the last one.
    on_progress: Callable[[], None] = lambda: None

    def skip(self, entry: str) -> None:
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append(entry)
        else:
            self.more_skipped += 1


def local_name(remote: str) -> str:
    """The name the fetched path gets locally: its last component."""
    name = posixpath.basename(posixpath.normpath(remote))
    if name in ("", ".", "..", "/"):
        raise FetchRefused(
            f"{remote!r} has no name of its own to fetch into: name a file or a "
            "directory, e.g. /var/log/nginx"
        )
    return name


def open_directory(parent: int | None, name: str | bytes) -> int:
    """A descriptor of the directory `name` (in `parent`, or from the working directory),
    made private when missing; refused when it is a symbolic link or not a directory."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symbolic link, or a file
            raise FetchRefused(
                f"{os.fsdecode(name)} at the destination is a symbolic link or not a "
                "directory: not written through"
            ) from None
        raise


def _checked(name: bytes, where: str) -> str | None:
    """Why a name from the host is refused, or None when it is one plain component."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        return f"{where}/{os.fsdecode(name)!r}: not a plain file name"
    return None


async def fetch(
    sftp: asyncssh.SFTPClient, remote: str, destination: int, report: FetchReport
) -> None:
    """Fetch `remote` (followed if it is a symbolic link itself: the user named it) into
    the directory open as `destination`, under its own name."""
    name = local_name(remote)
    attrs = await sftp.stat(remote)
    await _entry(sftp, remote.encode(), attrs, destination, name.encode(), report, 0)


async def _entry(
    sftp: asyncssh.SFTPClient,
    path: bytes,
    attrs: asyncssh.SFTPAttrs,
    parent: int,
    name: bytes,
    report: FetchReport,
    depth: int,
) -> None:
    report.on_progress()
    shown = os.fsdecode(path)
    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
        if depth >= MAX_DEPTH:
            raise FetchRefused(f"{shown}: more than {MAX_DEPTH} directories deep")
        await _directory(sftp, path, attrs, parent, name, report, depth)
    elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
        await _file(sftp, path, attrs, parent, name, report)
    elif attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
        report.skip(f"{shown}: a symbolic link, not followed")
    else:
        report.skip(f"{shown}: not a regular file or a directory")


async def _directory(
    sftp: asyncssh.SFTPClient,
    path: bytes,
    attrs: asyncssh.SFTPAttrs,
    parent: int,
    name: bytes,
    report: FetchReport,
    depth: int,
) -> None:
    fd = open_directory(parent, name)
    try:
        async for entry in sftp.scandir(path):
            child = entry.filename
            assert isinstance(child, bytes)  # asked with a bytes path
            if child in (b".", b".."):
                continue
            problem = _checked(child, os.fsdecode(path))
            if problem:
                report.skip(problem)
                continue
            # readdir gives what lstat would: a symbolic link is seen as one.
            await _entry(sftp, path + b"/" + child, entry.attrs, fd, child, report, depth + 1)
        _keep_attributes(fd, attrs)
    finally:
        os.close(fd)


async def _file(
    sftp: asyncssh.SFTPClient,
    path: bytes,
    attrs: asyncssh.SFTPAttrs,
    parent: int,
    name: bytes,
    report: FetchReport,
) -> None:
    temporary = b".%s.provisor-%s" % (name[:200], secrets.token_hex(4).encode())
    fd = os.open(temporary, _NEW_FILE, 0o600, dir_fd=parent)
    try:
        try:
            async with sftp.open(path, "rb") as remote:
                async for offset, data in await remote.read_parallel():
                    os.pwrite(fd, data, offset)
                    report.bytes += len(data)
                    report.on_progress()
            _keep_attributes(fd, attrs)
        finally:
            os.close(fd)
        os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=parent)
        raise
    report.files += 1


def _keep_attributes(fd: int, attrs: asyncssh.SFTPAttrs) -> None:
    """The host's permission bits (never setuid, setgid or sticky) and times."""
    if attrs.permissions is not None:
        os.fchmod(fd, stat.S_IMODE(attrs.permissions) & _KEPT_MODE)
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(fd, (attrs.atime, attrs.mtime))
