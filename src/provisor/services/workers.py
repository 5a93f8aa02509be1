"""Who works on deployments: is a worker running, start one, or be one.

A deployment moves only while some process is its worker (`provisor worker`, the
server, or a CLI following it). The CLI asks here rather than reaching into the
orchestrator.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from provisor.files import append_private, private_home
from provisor.settings import Settings


def worker_running(settings: Settings) -> bool:
    """Whether some process is the worker for this data directory."""
    from provisor.orchestrator import worker

    return worker.worker_running(settings.home)


def start_background_worker(settings: Settings) -> None:
    """A detached `provisor worker --until-idle` that outlives this command; its output
    goes to worker.log in the data directory."""
    log = private_home(settings.home) / "worker.log"
    with append_private(log) as out:
        subprocess.Popen(
            [sys.executable, "-m", "provisor", "worker", "--until-idle"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # outlives this command
        )


def ensure_worker(settings: Settings, *, here: bool) -> bool:
    """Make sure a worker runs; True when none does and this process must be it (`here`),
    otherwise one is started in the background when needed."""
    if worker_running(settings):
        return False
    if here:
        return True
    start_background_worker(settings)
    return False


async def serve(settings: Settings, *, until_idle: bool) -> None:
    """Be the worker: resume unfinished workflows, then take new ones from the queue;
    meanwhile, mark interrupted the fleet jobs whose process died."""
    from provisor.orchestrator import worker
    from provisor.services.jobs import watch_stale_jobs
    from provisor.store import Store

    store = Store(settings.effective_database_url)
    watcher = asyncio.create_task(watch_stale_jobs(store, settings.job_stale_after))
    try:
        await worker.serve(settings, until_idle=until_idle)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        store.close()


__all__ = ["ensure_worker", "serve", "start_background_worker", "worker_running"]
