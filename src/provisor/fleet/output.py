"""A command's output as it arrives: a bounded head in memory, every byte in files.

A host printing 100 MB must not cost 100 MB of memory: each stream keeps its first
`max_output` bytes for the result (and so for the terminal, the job record and the
API), counts the rest, and writes all of it, masked, to the stream's files (the job's
directory, pssh's -o/-e directories) while it arrives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from provisor.core.errors import ProvisorError
from provisor.core.masking import NO_SECRETS, Masker
from provisor.files import open_private

Stream = Literal["stdout", "stderr"]
DEFAULT_MAX_OUTPUT = 1024 * 1024  # bytes of each stream kept per host
MAX_MAX_OUTPUT = 64 * 1024 * 1024  # the largest a job may ask to keep


class OutputFileError(Exception):
    """A stream's file could not be written (disk full, permissions)."""


@dataclass(frozen=True)
class OutputPolicy:
    """What becomes of a command's output: how much of each stream is kept, the files
    that get all of it (`files(host, stream)`; none when None), and the secrets masked
    before anything is kept or written."""

    max_output: int = DEFAULT_MAX_OUTPUT
    files: Callable[[str, Stream], Sequence[Path]] | None = None
    masker: Masker = NO_SECRETS

    def capture(self, host: str, stream: Stream) -> Capture:
        paths = self.files(host, stream) if self.files is not None else ()
        return Capture(self.max_output, paths, self.masker)


class Capture:
    """One stream of one host: the head kept, the rest counted, all of it written."""

    def __init__(self, limit: int, paths: Sequence[Path], masker: Masker) -> None:
        self._limit = limit
        self._head = bytearray()
        self.dropped = 0
        self._paths = list(paths)
        self._had_paths = bool(paths)
        self._failed = False
        self._files: list[BinaryIO] | None = None  # opened with the first byte
        self._mask = masker.stream()

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def saved(self) -> bool:
        """Whether every byte so far is in files (none to write to, or one failed: no)."""
        return self._had_paths and not self._failed

    def write(self, piece: bytes) -> None:
        self._take(self._mask.feed(piece))

    def close(self) -> None:
        """The stream ended (or was cut off): pass on what masking held back, close files."""
        try:
            self._take(self._mask.end())
            for file, path in zip(self._files or [], self._paths, strict=False):  # none unopened
                try:
                    file.flush()
                except OSError as exc:
                    self._failed = True
                    raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            self._stop_writing()

    def _take(self, data: bytes) -> None:
        if not data:
            return
        room = self._limit - len(self._head)
        if room > 0:
            self._head += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))
        if self._paths:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._files is None:
            self._files = []
            for path in self._paths:
                try:
                    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
                except ProvisorError as exc:  # its message names the file
                    self._failed = True
                    self._stop_writing()
                    raise OutputFileError(exc.message) from None
                self._files.append(os.fdopen(fd, "wb"))
        for file, path in zip(self._files, self._paths, strict=True):
            try:
                file.write(data)
            except OSError as exc:
                self._failed = True
                self._stop_writing()
                raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _stop_writing(self) -> None:
        for file in self._files or []:
            with contextlib.suppress(OSError):  # already reported, or nothing left to lose
                file.close()
        self._files, self._paths = [], []


__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "MAX_MAX_OUTPUT",
    "Capture",
    "OutputFileError",
    "OutputPolicy",
    "Stream",
]
