"""One deployment, one actor at a time: its workflow's steps, or `down`.

Every step of a deployment's workflow holds the deployment's lock while it runs, and
`down` holds it while it removes what the deployment has at the provider. So `down`
never sweeps while a launch is on its way (it waits for the launch to be recorded, then
finds its machines), and a step never acts on a deployment `down` has begun to remove.
The lock is named by the workflow id, which is bound to the deployment's instance and
never reused: a lock of a removed deployment is never the lock of a new one by the
same name.

It is a file lock in the data directory: the workers and CLIs sharing that directory
share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from provisor.core.errors import Conflict
from provisor.files import open_private, private_dir
from provisor.polling import poll_until


def lock_path(home: Path, workflow_id: str) -> Path:
    return home / "locks" / f"{workflow_id}.lock"


@contextlib.asynccontextmanager
async def hold(
    home: Path,
    workflow_id: str,
    *,
    timeout: float,
    waiting: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Hold the deployment's lock while the block runs; `waiting` is called once if it is
    held by another, and Conflict raised when it is still held after `timeout` seconds.

    Waits without blocking the event loop (a thread blocked in flock could not be
    cancelled, and would take the lock after its waiter gave up)."""
    private_dir(home / "locks")
    fd = open_private(lock_path(home, workflow_id), os.O_RDWR)
    try:

        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not take():
            if waiting is not None:
                waiting()
            if not await poll_until(take, timeout=timeout, first=0.05, most=0.5):
                raise Conflict(
                    f"the deployment is still busy after {timeout:g}s (its worker is in a "
                    "step that does not end): try again, or see `provisor worker status`"
                )
        yield
    finally:
        os.close(fd)  # closing releases the lock


def forget(home: Path, workflow_id: str) -> None:
    """Remove the lock file of a deployment that is gone (while its lock is held: a step
    that opens the path afterwards gets a new file, and finds the deployment gone)."""
    lock_path(home, workflow_id).unlink(missing_ok=True)


__all__ = ["forget", "hold", "lock_path"]
