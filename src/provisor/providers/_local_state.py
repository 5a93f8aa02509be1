"""The local provider's registry: machines, tokens and snapshots in one JSON file.

Every change is a transaction: an exclusive `fcntl.flock` on `registry.lock`, read,
change, write to a temporary file, fsync, rename. Readers need no lock (a rename is
atomic). Two processes, or two threads with their own open file, never interleave
changes, so an address or a token is never handed out twice. Changes asked for at
the same time by threads of one process are committed together (one read, one
write and one fsync for all, in the order they were asked); each caller returns
once its change is on disk, as with a transaction of its own.

Operations on one machine (booting, stopping, snapshotting, terminating) also hold that
machine's lock (`locks/<id>.lock`) for their whole duration; the kernel releases it when
the process holding it dies, so a crashed call never blocks the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from provisor.files import open_private, private_dir
from provisor.polling import poll_until
from provisor.providers.base import ProviderError

T = TypeVar("T")

Phase = Literal["pending", "created", "terminated"]
PHASES: tuple[Phase, ...] = ("pending", "created", "terminated")
VolumeKind = Literal["dir", "loop"]
VOLUME_KINDS: tuple[VolumeKind, ...] = ("dir", "loop")

REGISTRY = "registry.json"
REGISTRY_LOCK = "registry.lock"
LOCKS = "locks"
FORMAT = 1
_LOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # a lock file per machine id
MACHINE_LOCK_TIMEOUT = 300.0  # seconds a call waits for another call on the same machine


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class VolumeRecord:
    index: int
    size_gb: int
    mount: str
    kind: VolumeKind
    device: str | None = None

    @property
    def file_name(self) -> str:
        """Its name under the machine's `volumes/` directory."""
        return f"v{self.index}.img" if self.kind == "loop" else f"v{self.index}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeRecord:
        kind = data["kind"]
        if kind not in VOLUME_KINDS:
            raise ValueError(f"unknown volume kind {kind!r}")
        return cls(
            index=int(data["index"]),
            size_gb=int(data["size_gb"]),
            mount=str(data["mount"]),
            kind=cast(VolumeKind, kind),
            device=data.get("device"),
        )


@dataclass
class MachineRecord:
    """What the provider remembers of one machine (the sandbox host keeps the rest)."""

    id: str
    token: str
    name: str
    hostname: str
    address: str
    image: str
    ssh_public_key: str
    cpu: int
    memory_mb: int
    flavor: str | None
    volumes: list[VolumeRecord]
    tags: dict[str, str]
    phase: Phase = "pending"
    snapshot: str | None = None  # the snapshot its disk started from
    user_data: str | None = None  # kept until the machine is created (its boot script has it)
    host_key: str | None = None
    cgroup: str | None = None  # its memory cgroup, when limits are enforced
    error: str | None = None  # why the last attempt to boot it failed
    ports: list[int] = field(default_factory=list)  # TCP ports its ingress opens
    created_at: str = field(default_factory=now)
    terminated_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineRecord:
        phase = data["phase"]
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        values = dict(data)
        values["phase"] = cast(Phase, phase)
        values["volumes"] = [VolumeRecord.from_json(v) for v in data.get("volumes", [])]
        values["tags"] = {str(k): str(v) for k, v in (data.get("tags") or {}).items()}
        values["ports"] = list(data.get("ports") or [])  # its own list, never the cache's
        return cls(**values)


@dataclass
class SnapshotRecord:
    id: str
    name: str
    machine_id: str
    location: str
    size: int
    sha256: str
    image: str  # the image of the machine it was taken from
    volumes: list[VolumeRecord]
    created_at: str = field(default_factory=now)
    deleted: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotRecord:
        values = dict(data)
        values["volumes"] = [VolumeRecord.from_json(v) for v in data.get("volumes", [])]
        return cls(**values)


def _plain(value: Any) -> Any:
    """Records as JSON-ready values; `dataclasses.asdict` deep-copies and is slow here."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class RegistryData:
    machines: dict[str, MachineRecord] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "machines": {k: _plain(v) for k, v in self.machines.items()},
            "tokens": dict(self.tokens),
            "snapshots": {k: _plain(v) for k, v in self.snapshots.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegistryData:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown registry format {data.get('format')!r}")
        return cls(
            machines={k: MachineRecord.from_json(v) for k, v in data["machines"].items()},
            tokens={str(k): str(v) for k, v in data["tokens"].items()},
            snapshots={k: SnapshotRecord.from_json(v) for k, v in data["snapshots"].items()},
        )


class _Change:
    """A change waiting for the next group commit, then its outcome."""

    __slots__ = ("change", "done", "error", "result")

    def __init__(self, change: Callable[[RegistryData], Any]) -> None:
        self.change = change
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Registry:
    """The registry file of one state dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / REGISTRY
        self._queue: list[_Change] = []
        self._queue_lock = threading.Lock()
        self._committer = threading.Lock()  # one group commit at a time in this process
        self._locks_made = False
        # The file's text as last parsed, and what it parsed to (never handed out: each
        # reader builds its own records from it). Parsing is most of a read's CPU, and
        # many reads in a row (a deployment's console logs) find the file unchanged.
        self._parsed: tuple[str, dict[str, Any]] | None = None
        self._parsed_lock = threading.Lock()

    def _ensure_dir(self) -> None:
        private_dir(self.directory)

    def _raw(self) -> dict[str, Any] | None:
        """The registry file as JSON (None when there is none yet); parsed again only when
        its text changed. Callers must not change what it returns."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ProviderError(
                f"cannot read the local provider's registry {self.path}: {exc}"
            ) from exc
        with self._parsed_lock:
            parsed = self._parsed
        if parsed is not None and parsed[0] == text:
            return parsed[1]
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise self._malformed(exc) from exc
        if not isinstance(raw, dict):
            raise self._malformed(ValueError("not a JSON object"))
        with self._parsed_lock:
            self._parsed = (text, raw)
        return raw

    def _malformed(self, exc: Exception) -> ProviderError:
        return ProviderError(f"the local provider's registry {self.path} is malformed: {exc}")

    def read(self) -> RegistryData:
        """The registry as last written (no lock: writes are atomic renames)."""
        raw = self._raw()
        if raw is None:
            return RegistryData()
        try:
            return RegistryData.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._malformed(exc) from exc

    def machine(self, machine_id: str) -> MachineRecord | None:
        """One machine's record as last written: `read().machines.get(machine_id)`
        without making every other machine's record."""
        return self._record(self._raw(), machine_id)

    def machine_of_token(self, token: str) -> MachineRecord | None:
        """The record of the machine launched for `token`, if any (as `machine`)."""
        raw = self._raw()
        if raw is None:
            return None
        try:
            machine_id = raw["tokens"].get(token)
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._malformed(exc) from exc
        return None if machine_id is None else self._record(raw, str(machine_id))

    def _record(self, raw: dict[str, Any] | None, machine_id: str) -> MachineRecord | None:
        if raw is None:
            return None
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown registry format {raw.get('format')!r}")
            found = raw["machines"].get(machine_id)
            return None if found is None else MachineRecord.from_json(found)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._malformed(exc) from exc

    def _write(self, data: RegistryData) -> None:
        tmp = self.path.with_name(f".{REGISTRY}.{os.getpid()}.{threading.get_ident()}")
        raw = data.to_json()  # containers of its own: `data` may change after
        # No indent: json's C encoder only runs without one, and the file is
        # rewritten on every change of every machine.
        text = json.dumps(raw, sort_keys=True, separators=(",", ":")) + "\n"
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        with self._parsed_lock:  # the next read of what was just written parses nothing
            self._parsed = (text, raw)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir()
        fd = os.open(self.directory / REGISTRY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the file releases the lock

    def transact_sync(self, change: Callable[[RegistryData], T]) -> T:
        """Run `change` on the registry under the lock and write the result (blocking).

        A change that raises leaves the registry as it was (the others committed with
        it are applied again, from the file, without it).
        """
        item = _Change(change)
        with self._queue_lock:
            self._queue.append(item)
        with self._committer:
            if not item.done:  # nobody committed it meanwhile: commit what is queued
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    def _commit(self, batch: list[_Change]) -> None:
        try:
            with self._locked():
                pending = list(batch)
                while pending:
                    data = self.read()
                    for item in pending:
                        try:
                            item.result = item.change(data)
                        except Exception as exc:
                            item.error = exc
                            pending.remove(item)  # and again without it, from the file
                            break
                    else:
                        self._write(data)
                        break
        except BaseException as exc:
            for item in batch:
                if item.error is None:
                    item.error = exc
            raise
        finally:
            seen: set[int] = set()
            for item in batch:
                if id(item.result) in seen and is_dataclass(item.result):
                    item.result = copy.deepcopy(item.result)  # each caller its own record
                seen.add(id(item.result))
                item.done = True

    async def transact(self, change: Callable[[RegistryData], T]) -> T:
        """`transact_sync` in a thread: the lock may be held by another process a while.

        If the caller is cancelled meanwhile the transaction still completes (it is short
        and leaves the registry consistent); only its result is lost.
        """
        return await asyncio.shield(asyncio.to_thread(self.transact_sync, change))

    @contextlib.asynccontextmanager
    async def machine_lock(self, machine_id: str, call: str) -> AsyncIterator[None]:
        """Hold the machine's lock: one call at a time on a machine, across processes.

        Polled (non-blocking flock) rather than waited for in a thread, so that a
        cancelled caller never leaves a thread that later takes the lock and keeps it.
        """
        if not _LOCK_NAME.fullmatch(machine_id):
            raise ProviderError("not a machine id", machine=machine_id, call=call)
        locks = self.directory / LOCKS
        if not self._locks_made:  # once (and again should the directory be removed)
            await asyncio.to_thread(private_dir, locks)
            self._locks_made = True
        try:
            fd = os.open(locks / f"{machine_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            await asyncio.to_thread(private_dir, locks)
            fd = os.open(locks / f"{machine_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def locked() -> bool:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            if not await poll_until(locked, timeout=MACHINE_LOCK_TIMEOUT):
                raise ProviderError(
                    f"busy: another call has held this machine for more than "
                    f"{MACHINE_LOCK_TIMEOUT:g} s",
                    machine=machine_id,
                    call=call,
                )
            yield
        finally:
            os.close(fd)
