"""The loopback blocks testbed hosts live in: 127.X.0.0/16, X from `BLOCKS`."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

BLOCKS = range(64, 251)  # second octet of the 127.X.0.0/16 blocks tests may use
ROOT_TEST_DIR = Path("/run/provisor-test")  # as root: test sessions' hosts, block locks


def busy_blocks() -> set[int]:
    """The X of every 127.X.0.0/16 block something listens in now."""
    from provisor.machines import procs

    busy = set()
    for sock in procs.listeners():
        if isinstance(sock.address, ipaddress.IPv4Address) and sock.address.is_loopback:
            busy.add(sock.address.packed[1])
    return busy


def claim_block(
    lock_dir: Path = ROOT_TEST_DIR / ".blocks", blocks: Iterable[int] = BLOCKS
) -> tuple[int, IO[str]]:
    """A free 127.X.0.0/16 block (X from `blocks`, nothing listening in it), held by a lock
    file in `lock_dir` until the returned file is closed: concurrent test sessions and
    benchmarks that claim through here never share one."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    busy = busy_blocks()
    candidates = [x for x in blocks if x not in busy]
    random.shuffle(candidates)
    for x in candidates:
        lock = (lock_dir / f"127.{x}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return x, lock
    raise RuntimeError(f"every 127.X.0.0/16 block (X in {min(blocks)}..{max(blocks)}) is in use")


def claim_test_block(blocks: Iterable[int] = BLOCKS) -> tuple[int, IO[str]]:
    """`claim_block` in the lock directory every test session of this user shares."""
    if os.geteuid() == 0:
        return claim_block(ROOT_TEST_DIR / ".blocks", blocks)
    return claim_block(Path(tempfile.gettempdir()) / f"provisor-test-blocks-{os.geteuid()}", blocks)
