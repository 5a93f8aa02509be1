"""Moving a backup's data into its store: encrypted on the way, in bounded chunks, its
size and SHA-256 recorded (as stored and as plain data); and reading it back.

Sources are a local file (a provider's snapshot archive) or a command's standard output
on a machine over SSH (a dump). The store's blocking calls run in a thread fed through
a small queue: at most a few chunks are in memory whatever the size.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provisor._asyncssh import asyncssh
from provisor.backups import crypto
from provisor.backups.store import CHUNK, BackupStore, Hashing, Written

_QUEUE = 4  # chunks between the SSH reader and the store's thread
_PUT_WAIT = 1.0  # seconds a full queue is waited for before the writer is looked at
_ABORT = b"abort"  # by identity: tells the store's thread to give the object up


class CopyError(Exception):
    """A copy failed; the message says where and why."""


@dataclass(frozen=True)
class Copied:
    stored: Written  # as in the store (encrypted)
    plain: Written  # the data itself


def copy_file(store: BackupStore, key: str, data_key: bytes, path: Path) -> Copied:
    """A local file into the store (blocking: run it in a thread)."""
    plain = Hashing()

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk

    stored = store.put(key, crypto.encrypt(data_key, plain.through(chunks())))
    return Copied(stored, Written(plain.size, plain.sha256))


def restore_file(store: BackupStore, key: str, data_key: bytes, path: Path) -> Written:
    """A stored object decrypted into a local file; its plain size and SHA-256."""
    plain = Hashing()
    with path.open("wb") as out:
        for chunk in plain.through(crypto.decrypt(data_key, store.get(key))):
            out.write(chunk)
    return Written(plain.size, plain.sha256)


async def copy_command_output(
    store: BackupStore,
    key: str,
    data_key: bytes,
    connection: asyncssh.SSHClientConnection,
    command: str,
    *,
    timeout: float,
) -> Copied:
    """What `command` prints on the machine, into the store; CopyError when it fails."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE)
    plain = Hashing()

    def received() -> Iterator[bytes]:
        while (chunk := chunks.get()) is not None:
            if chunk is _ABORT:  # the put fails: no partial object is kept
                raise CopyError(f"the copy of {key} was given up")
            yield chunk

    writer = asyncio.create_task(
        asyncio.to_thread(store.put, key, crypto.encrypt(data_key, plain.through(received())))
    )

    async def give(chunk: bytes | None) -> None:
        while True:
            try:
                await asyncio.to_thread(chunks.put, chunk, True, _PUT_WAIT)
                return
            except queue.Full:
                if writer.done():  # it failed: nobody takes from the queue any more
                    await writer
                    raise CopyError(f"the store stopped reading {key}") from None

    errors = bytearray()
    try:
        async with asyncio.timeout(timeout):
            process = await connection.create_process(command, encoding=None)
            process.stdin.write_eof()

            async def drain_errors() -> None:
                while chunk := await process.stderr.read(4096):
                    errors.extend(chunk)
                    del errors[:-4096]  # only the end is kept

            draining = asyncio.create_task(drain_errors())
            try:
                while chunk := await process.stdout.read(CHUNK):
                    await give(chunk)
            finally:
                await draining
            await process.wait_closed()
    except BaseException:
        _abandon(chunks)
        raise
    await give(None)
    stored = await writer
    status = process.exit_status
    if status != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-3:]
        raise CopyError(
            f"{command.splitlines()[0][:80]!r} exited {status}"
            + (f": {' | '.join(tail)}" if tail else "")
        )
    return Copied(stored, Written(plain.size, plain.sha256))


def _abandon(chunks: queue.Queue[bytes | None]) -> None:
    """End the store's thread with an error (it may be waiting on the queue)."""
    while True:
        try:
            chunks.get_nowait()
        except queue.Empty:
            break
    chunks.put_nowait(_ABORT)
