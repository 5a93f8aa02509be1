"""Who works on deployments: the background worker, started whenever work is given.

A deployment moves only while some process is the worker of its data directory. In
the embedded default, every command that gives a deployment work (`up`, `approve`,
`reject`, `status --wait`, the API's requests) calls `ensure_worker`: when no worker
runs, it starts a detached supervisor (`provisor worker supervise`), which runs
`provisor worker --until-idle` and starts it again when it dies (backing off, at most
`RESTARTS` times in a row), and ends when no work is left. Both write to worker.log in
the data directory. `provisor worker status|stop` show and stop it.

Two locks say who is there: `worker.lock` (the process running workflows) and
`worker-supervisor.lock` (the supervisor). `ensure_worker` takes the supervisor's lock
itself and hands it to the process it starts, so two commands at once start one
supervisor, and none is started while one is between two workers.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from pydantic import BaseModel
from sqlalchemy import select

from provisor.files import append_private, open_private, private_home
from provisor.polling import poll_until_sync
from provisor.services.context import Context
from provisor.settings import Settings

SUPERVISOR_LOCK = "worker-supervisor.lock"
LOG = "worker.log"
LOG_LIMIT = 10 * 1024 * 1024  # worker.log is moved to worker.log.1 past this size
RESTARTS = 5  # a worker that keeps dying is started again at most this many times in a row
HEALTHY = 60.0  # a worker that ran this long had no start-up problem: the count starts over
STOP_TIMEOUT = 30.0


class DeploymentWork(BaseModel):
    name: str
    tenant: str
    state: str
    step: str
    updated_at: datetime


class WorkerView(BaseModel):
    """The worker of a data directory: running or not, since when, what it works on."""

    running: bool
    pid: int | None  # the process running workflows
    since: str | None
    supervisor_pid: int | None  # the background supervisor, if it was started so
    restarts: int  # how often the supervisor started the worker again
    log: str
    deployments: list[DeploymentWork]  # in progress (and waiting for approval)


class StopView(BaseModel):
    stopped: list[int]  # pids that ended when asked (SIGTERM)
    killed: list[int]  # pids that were still there after the timeout (SIGKILL)
    running: bool  # whether anything was running at all


def log_path(settings: Settings) -> Path:
    return settings.home / LOG


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the lock on `path`, or None when another holds it."""
    fd = open_private(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _held(path: Path) -> bool:
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def worker_running(settings: Settings) -> bool:
    """Whether a worker runs for this data directory (or a supervisor is starting one)."""
    home = private_home(settings.home)
    from provisor.orchestrator.worker import WORKER_LOCK

    return _held(home / WORKER_LOCK) or _held(home / SUPERVISOR_LOCK)


def ensure_worker(settings: Settings) -> bool:
    """Make sure a worker runs; True when this call started one (in the background)."""
    home = private_home(settings.home)
    from provisor.orchestrator.worker import WORKER_LOCK

    if _held(home / WORKER_LOCK):
        return False
    fd = _try_lock(home / SUPERVISOR_LOCK)
    if fd is None:  # a supervisor runs: it is (re)starting the worker
        return False
    try:
        with append_private(_rotated(log_path(settings))) as out:
            subprocess.Popen(
                [sys.executable, "-m", "provisor", "worker", "supervise", "--lock-fd", str(fd)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                pass_fds=(fd,),  # the lock goes with it: held from this moment on
                start_new_session=True,  # outlives this command, and its Ctrl-C
            )
    finally:
        os.close(fd)
    return True


def start_background_worker(settings: Settings) -> bool:
    """`ensure_worker` (the name the API used)."""
    return ensure_worker(settings)


def _rotated(log: Path) -> Path:
    """The log, moved aside (one old copy kept) when it has grown past LOG_LIMIT."""
    with suppress(OSError):
        if log.stat().st_size > LOG_LIMIT:
            log.replace(log.with_name(LOG + ".1"))
    return log


# The supervisor


def _say(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] supervisor pid {os.getpid()}: {message}", flush=True)


def _ended(code: int) -> str:
    if code < 0:
        with suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class _Supervisor:
    settings: Settings
    handle: IO[str]
    since: str
    stopping: threading.Event
    child: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def note(self) -> None:
        from provisor.orchestrator.worker import describe_holder

        describe_holder(
            self.handle,
            self.since,
            restarts=self.restarts,
            worker=self.child.pid if self.child else None,
        )

    def stop(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run_once(self) -> tuple[int, float]:
        started = time.monotonic()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "provisor", "worker", "--until-idle"],
            stdin=subprocess.DEVNULL,
        )
        self.note()
        _say(f"worker pid {self.child.pid} started")
        code = self.child.wait()
        return code, time.monotonic() - started


def supervise(settings: Settings, lock_fd: int | None) -> int:
    """Run `provisor worker --until-idle` until no work is left, starting it again when
    it dies; the exit status: 0, or 1 after giving up."""
    home = private_home(settings.home)
    if lock_fd is None:
        lock_fd = _try_lock(home / SUPERVISOR_LOCK)
        if lock_fd is None:
            _say("another supervisor runs for this data directory")
            return 0
    from provisor.orchestrator.worker import now_text, pending_work

    handle = os.fdopen(lock_fd, "r+")
    boss = _Supervisor(settings, handle, now_text(), threading.Event())
    signal.signal(signal.SIGTERM, boss.stop)
    signal.signal(signal.SIGINT, boss.stop)
    failures = 0
    try:
        while not boss.stopping.is_set():
            code, lasted = boss.run_once()
            if boss.stopping.is_set():
                _say(f"worker pid {boss.child.pid if boss.child else '?'} {_ended(code)}; stopped")
                return 0
            if code == 0:  # no work left
                # Let go first, then look: work given after the worker's last look is seen
                # here, or its giver found no supervisor and started one.
                handle.close()
                if not pending_work(settings):
                    _say("no work left; stopped")
                    return 0
                lock_fd = _try_lock(home / SUPERVISOR_LOCK)
                if lock_fd is None:
                    return 0  # another supervisor took over
                handle = boss.handle = os.fdopen(lock_fd, "r+")
                continue
            if code == 2:  # refused to start (another worker, bad settings): said above
                _say(f"worker {_ended(code)}; not starting it again (see above)")
                return 1
            failures = 1 if lasted >= HEALTHY else failures + 1
            if failures > RESTARTS:
                _say(
                    f"worker {_ended(code)}, {failures} times in a row; giving up "
                    "(`provisor worker start` tries again)"
                )
                return 1
            pause = settings.worker_restart_pause * 2 ** (failures - 1)
            boss.restarts += 1
            boss.note()
            _say(
                f"worker {_ended(code)}; starting it again in {pause:g}s "
                f"(try {failures} of {RESTARTS})"
            )
            boss.stopping.wait(pause)
        return 0
    finally:
        handle.close()


# Status and stop


def _in_progress(ctx: Context) -> list[DeploymentWork]:
    """Every tenant's deployments in progress: the worker of a data directory works for
    all of them (this is its owner's view, from the CLI without a server)."""
    from provisor.services.deployments import ACTIVE
    from provisor.store.models import Tenant
    from provisor.store.orchestration import Deployment

    with ctx.store.session() as session:
        rows = session.execute(
            select(Deployment, Tenant.name)
            .join(Tenant, Tenant.id == Deployment.tenant_id)
            .where(Deployment.state.in_([*ACTIVE, "terminating"]))
            .order_by(Deployment.updated_at)
            .limit(1000)  # bounded: a status, not an export
        ).all()
        return [
            DeploymentWork(
                name=d.name, tenant=t, state=d.state, step=d.step, updated_at=d.updated_at
            )
            for d, t in rows
        ]


def _holders(settings: Settings) -> dict[str, dict[str, object]]:
    """Who holds each lock now, by "supervisor" and "worker" (a lock file left by a
    process that ended says nothing)."""
    from provisor.orchestrator.worker import WORKER_LOCK, read_holder

    home = private_home(settings.home)
    return {
        kind: read_holder(home / name)
        for kind, name in (("supervisor", SUPERVISOR_LOCK), ("worker", WORKER_LOCK))
        if _held(home / name)
    }


def _pid(holder: dict[str, object] | None) -> int | None:
    value = (holder or {}).get("pid")
    return value if isinstance(value, int) and value > 0 else None


def worker_status(ctx: Context, settings: Settings) -> WorkerView:
    holders = _holders(settings)
    worker, supervisor = holders.get("worker"), holders.get("supervisor")
    restarts = (supervisor or {}).get("restarts")
    since = (worker or supervisor or {}).get("since")
    return WorkerView(
        running=bool(holders),
        pid=_pid(worker),
        since=str(since) if since else None,
        supervisor_pid=_pid(supervisor),
        restarts=restarts if isinstance(restarts, int) else 0,
        log=str(log_path(settings)),
        deployments=_in_progress(ctx),
    )


def stop_worker(settings: Settings, *, timeout: float = STOP_TIMEOUT) -> StopView:
    """SIGTERM the supervisor and the worker; SIGKILL what is still there after `timeout`
    seconds. What the worker was doing is checkpointed: the next worker resumes it."""
    holders = _holders(settings)
    pids = [p for p in (_pid(holders.get("supervisor")), _pid(holders.get("worker"))) if p]
    # The supervisor passes SIGTERM on to its worker: one SIGTERM each (a second one
    # would cut the worker's clean exit short).
    for pid in pids[:1]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        return not _holders(settings)

    if poll_until_sync(gone, timeout=timeout, first=0.05, most=0.5):
        return StopView(stopped=pids, killed=[], running=bool(pids))
    still = [p for p in pids if _alive(p)]
    for pid in still:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    poll_until_sync(gone, timeout=10.0, first=0.05, most=0.5)
    return StopView(stopped=[p for p in pids if p not in still], killed=still, running=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: not ours to signal
        return False
    return True


async def serve(settings: Settings, *, until_idle: bool) -> None:
    """Be the worker: resume unfinished workflows, then take new ones from the queue;
    meanwhile, mark interrupted the fleet jobs whose process died."""
    from provisor.orchestrator import lease_schedule, worker
    from provisor.services.jobs import watch_stale_jobs
    from provisor.services.lifecycle import lease_final_backup, lease_terminator
    from provisor.store import Store

    lease_schedule.set_terminator(lease_terminator(settings))  # a lease ending in `down`
    lease_schedule.set_final_backup(lease_final_backup(settings))  # before it stops or ends
    store = Store(settings.effective_database_url)
    watcher = asyncio.create_task(watch_stale_jobs(store, settings.job_stale_after))
    try:
        await worker.serve(settings, until_idle=until_idle)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        store.close()


def hand_over_if_pending(settings: Settings) -> bool:
    """After a worker ended for want of work: if work was given meanwhile (its giver saw
    that worker and started none), start one. True when one was started."""
    from provisor.orchestrator.worker import pending_work

    return pending_work(settings) and ensure_worker(settings)


__all__ = [
    "StopView",
    "WorkerView",
    "ensure_worker",
    "hand_over_if_pending",
    "serve",
    "start_background_worker",
    "stop_worker",
    "supervise",
    "worker_running",
    "worker_status",
]
