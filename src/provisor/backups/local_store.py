"""A backup store in a local directory (the default `local` store: under the data
directory). Folders 0700, files 0600; an object is written to a temporary file, synced,
then renamed, so a reader sees all of it or nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from provisor.backups.store import CHUNK, Hashing, StoreError, Written, check_key
from provisor.files import open_private, private_dir


class DirectoryStore:
    kind = "directory"

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = Path(os.path.abspath(root))

    def __repr__(self) -> str:
        return f"DirectoryStore({self.name!r}, {str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(self.name, key)

    def put(self, key: str, chunks: Iterable[bytes]) -> Written:
        path = self._path(key)
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        hashing = Hashing()
        try:
            with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as out:
                for chunk in hashing.through(chunks):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)
        except OSError as exc:
            raise StoreError(self.name, exc.strerror or str(exc), key=key) from None
        finally:
            tmp.unlink(missing_ok=True)
        return Written(hashing.size, hashing.sha256)

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise StoreError(self.name, "missing", key=key) from None
        except OSError as exc:
            raise StoreError(self.name, exc.strerror or str(exc), key=key) from None
        return _chunks(handle)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in list(path.parents)[:3]:  # empty folders of the backup, machine
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def check(self) -> str:
        private_dir(self.root)
        if not os.access(self.root, os.W_OK):
            raise StoreError(self.name, f"{self.root} is not writable")
        return f"directory {self.root}"


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk
