"""provisor's own files: private to their owner from the moment they exist.

Directories are 0700 and files 0600, whatever the umask: each is created with at most
that mode (never wider, not even for an instant) and then set to exactly it. One found
with another mode (an install from before, a hand-made file) is set right when next used.
Two processes making the same file or directory at once both succeed, and both see it
private.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from provisor.core.errors import ProvisorError

DIR_MODE = 0o700
FILE_MODE = 0o600
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _exact(path: Path, mode: int, fd: int | None = None) -> None:
    """Set `mode` unless it is already that; an error names the file and says why."""
    try:
        current = stat.S_IMODE(os.fstat(fd).st_mode if fd is not None else os.stat(path).st_mode)
        if current == mode:
            return
        if fd is not None:
            os.fchmod(fd, mode)
        else:
            os.chmod(path, mode)
    except FileNotFoundError:
        raise  # the caller decides whether a missing file matters
    except OSError as exc:
        raise ProvisorError(
            f"cannot make {path} private (mode {mode:04o}): {exc.strerror or exc}", field="home"
        ) from None


def make_dirs(path: Path) -> Path:
    """`path` as a directory: what is missing of it is made 0700 (as the XDG base
    directory specification asks of a data directory's parents); what exists is left."""
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise ProvisorError(
                    f"{directory} is a file; provisor needs a directory there", field="home"
                ) from None
        except OSError as exc:
            raise ProvisorError(
                f"cannot create the directory {directory}: {exc.strerror or exc}", field="home"
            ) from None
        _exact(directory, DIR_MODE)
    return path


def private_dir(path: Path) -> Path:
    """`path` as a directory of mode 0700 (made if missing, set to 0700 if not)."""
    _exact(make_dirs(path), DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """An fd of `path` opened with `flags` (created if missing), the file set to 0600."""
    try:
        fd = os.open(path, flags | os.O_CREAT | _CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise ProvisorError(f"cannot open {path}: {exc.strerror or exc}", field="home") from None
    try:
        _exact(path, FILE_MODE, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """`path` as a file of mode 0600: an empty one when missing (SQLite takes an empty file
    as an empty database, and gives its -wal and -shm files the database's mode)."""
    os.close(open_private(path, os.O_RDONLY))
    return path


def keep_private(path: Path) -> None:
    """Set an existing file to 0600; a missing one stays missing (another program's
    file, such as SQLite's -wal, that it makes and removes itself)."""
    with contextlib.suppress(FileNotFoundError):
        _exact(path, FILE_MODE)


def _beside(path: Path) -> Path:
    """A temporary file's name in `path`'s directory, this process's and unguessable."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (replacing it), mode 0600. A reader sees the old contents or
    the new, never an empty or partial file (one written beside it is renamed over it): the
    server's certificate, say, read by a client while the server starts again."""
    tmp = _beside(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise ProvisorError(f"cannot write {path}: {exc.strerror or exc}", field="home") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _exact(path, FILE_MODE, f.fileno())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def append_private(path: Path) -> BinaryIO:
    """`path` opened for appending, mode 0600 (a log)."""
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab")


def create_once(path: Path, data: bytes) -> bool:
    """Create `path` with `data` if it does not exist, atomically: whoever reads it sees
    all of `data` or no file. False when another process (or an earlier run) made it."""
    private_dir(path.parent)
    tmp = _beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: the first one made stays
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def tighten_tree(root: Path) -> None:
    """Take group and other permissions off everything under `root` (an install made
    before provisor kept its files private). Symbolic links are left as they are."""
    for directory, subdirectories, names in os.walk(root):
        for name in (*subdirectories, *names):
            path = Path(directory) / name
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
                    continue
                _exact(path, stat.S_IMODE(info.st_mode) & 0o700)


def private_home(home: Path) -> Path:
    """The data directory, 0700. Found open to others, it is from an install that did not
    keep its files private: everything in it is made private too, once."""
    if home.is_dir() and stat.S_IMODE(home.stat().st_mode) & 0o077:
        _exact(home, DIR_MODE)  # first: nothing is reachable while the tree is tightened
        tighten_tree(home)
    return private_dir(home)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a private file made for it) while the block runs."""
    fd = open_private(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "append_private",
    "create_once",
    "file_lock",
    "keep_private",
    "make_dirs",
    "open_private",
    "private_dir",
    "private_file",
    "private_home",
    "tighten_tree",
    "write_private",
]
