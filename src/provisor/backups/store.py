"""The backup store interface: put an object (streamed), read it back (streamed), delete.

Keys are relative paths of safe characters (`instance/machine/backup/object`); a store
never resolves anything else. Objects are already encrypted when they reach a store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from provisor.core.errors import ProvisorError

CHUNK = 1024 * 1024  # bytes read or written at a time: nothing bigger is held in memory
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")


class StoreError(ProvisorError):
    """A store call failed; says which store, which object and why."""

    status = 502

    def __init__(self, store: str, message: str, *, key: str | None = None) -> None:
        where = f"backup store {store}" + (f", object {key}" if key else "")
        super().__init__(f"{where}: {message}", field="store")


@dataclass(frozen=True)
class Written:
    """What a store wrote: its size and SHA-256 as stored."""

    size: int
    sha256: str


def check_key(store: str, key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise StoreError(store, f"invalid object key {key[:80]!r}")
    return key


class Hashing:
    """Counts and hashes the chunks that pass through it."""

    def __init__(self) -> None:
        self.size = 0
        self._digest = hashlib.sha256()

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self._digest.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


@runtime_checkable
class BackupStore(Protocol):
    """Where backups are kept. Blocking calls (run them in threads)."""

    name: str
    kind: str

    def put(self, key: str, chunks: Iterable[bytes]) -> Written:
        """Store the chunks under `key` (replacing any object there), as a whole or not at
        all; its size and SHA-256 as written."""
        ...

    def get(self, key: str) -> Iterator[bytes]:
        """The stored object, in chunks of at most CHUNK bytes; StoreError if missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; a no-op for a missing one."""
        ...

    def check(self) -> str:
        """Reachability and credentials: a one-line description, or a StoreError."""
        ...


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The same bytes in pieces of exactly `size` (the last one shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def read_back(store: BackupStore, key: str) -> Written:
    """Read a stored object whole, as a verification does: its size and SHA-256."""
    hashing = Hashing()
    for _ in hashing.through(store.get(key)):
        pass
    return Written(hashing.size, hashing.sha256)
