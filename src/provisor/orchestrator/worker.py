"""Running workflows: DBOS in this process, the parameter endpoint, and a work queue.

`provisor worker` (and `provisor up --wait`, and `provisor server`) run this. In
the embedded default one process at a time is the worker (a lock in
PROVISOR_HOME): DBOS resumes that executor's unfinished workflows at launch, and
two processes resuming the same workflow would both act on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from provisor import __version__
from provisor.core.errors import ProvisorError
from provisor.files import file_lock, open_private, private_file, private_home, write_private
from provisor.settings import Settings

QUEUE = "deployments"
PARAMETER_PORT_FILE = "parameter-port"  # in the home: the parameter endpoint's last port
log = logging.getLogger(__name__)


def system_database_url(settings: Settings) -> str:
    """DBOS keeps its checkpoints next to provisor's own data. On SQLite the file is
    made (0600, in the private data directory) before DBOS opens it: SQLite would
    make it, and its -wal and -shm files, readable by everyone."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        private_file(private_home(settings.home) / "orchestrator.db")
        return f"sqlite:///{settings.home / 'orchestrator.db'}"
    return url


def _dbos_migration(settings: Settings) -> AbstractContextManager[None]:
    """One process at a time creates DBOS's tables in a new SQLite file: two at once
    would both try, and one would fail. (PostgreSQL: DBOS's own concern.)"""
    if settings.effective_database_url.startswith("sqlite"):
        return file_lock(settings.home / "orchestrator.db.lock")
    return nullcontext()


def dbos_config(settings: Settings) -> dict[str, Any]:
    return {
        "name": "provisor",
        "system_database_url": system_database_url(settings),
        # A fixed version: workflows started by one build resume under the next.
        "application_version": __version__,
        "executor_id": "local",
        "run_admin_server": False,
        "log_level": os.environ.get("PROVISOR_DBOS_LOG_LEVEL", "WARNING"),
    }


WORKER_LOCK = "worker.lock"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_holder(handle: IO[str], since: str | None = None, **more: object) -> None:
    """Write who holds a lock into its file: pid, since when (UTC), and `more`."""
    handle.seek(0)
    handle.truncate()
    since = since or now_text()
    handle.write(json.dumps({"pid": os.getpid(), "since": since, **more}) + "\n")
    handle.flush()


def read_holder(path: Path) -> dict[str, object]:
    """What `describe_holder` wrote (a bare pid from an older version: just the pid)."""
    try:
        text = path.read_text()[:4096].strip()
    except OSError:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {"pid": int(text)} if text.isdigit() else {}
    return found if isinstance(found, dict) else {}


@contextlib.contextmanager
def worker_lock(home: Path) -> Iterator[IO[str] | None]:
    """Yields the held lock, or None when another process is the worker."""
    private_home(home)
    handle = os.fdopen(open_private(home / WORKER_LOCK, os.O_RDWR), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        yield None
        return
    try:
        describe_holder(handle)
        yield handle
    finally:
        handle.close()


def worker_running(home: Path) -> bool:
    with worker_lock(home) as held:
        return held is None


def pending_work(settings: Settings) -> bool:
    """Whether any workflow is queued or unfinished, or a deployment waits for its start
    or its lease's end (a worker has work)."""
    from dbos import DBOS, DBOSClient

    logging.getLogger("dbos").setLevel(logging.WARNING)
    with _dbos_migration(settings):
        DBOS.migrate(system_database_url(settings))
    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        found = client.list_workflows(
            status=["PENDING", "ENQUEUED"],
            app_version=__version__,
            load_input=False,
            load_output=False,
            limit=1,
        )
    finally:
        client.destroy()
    return bool(found) or _lease_pending(settings)


def workflow_counts(settings: Settings, statuses: list[str], limit: int) -> dict[str, int]:
    """How many workflows have each status (up to `limit` each), for `/metrics`."""
    from dbos import DBOS, DBOSClient

    logging.getLogger("dbos").setLevel(logging.WARNING)
    with _dbos_migration(settings):  # no worker may have run yet
        DBOS.migrate(system_database_url(settings))
    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        return {
            status: len(
                client.list_workflows(
                    status=[status], load_input=False, load_output=False, limit=limit
                )
            )
            for status in statuses
        }
    finally:
        client.destroy()


def _lease_pending(settings: Settings) -> bool:
    """A scheduled start or a lease's end to wait for (orchestrator/lease_schedule.py)."""
    from provisor.orchestrator import lease_schedule
    from provisor.store import Store

    store = Store(settings.effective_database_url)
    try:
        return lease_schedule.pending(store)
    finally:
        store.close()


def enqueue_deployment(settings: Settings, deployment_id: int, workflow_id: str) -> str:
    """Put a deployment's workflow on the durable queue; any worker will take it.

    `workflow_id` must never have been used before (DBOS answers a known id with that
    workflow, finished or not): the deployment's instance makes it so.
    """
    return enqueue(settings, "deploy_workflow", workflow_id, deployment_id)


def enqueue(settings: Settings, workflow_name: str, workflow_id: str, *args: Any) -> str:
    """Put the workflow `workflow_name(*args)` on the durable queue under `workflow_id`;
    an id enqueued before is that workflow again (DBOS answers a known id with it), so
    enqueueing twice runs it once."""
    from dbos import DBOS, DBOSClient, EnqueueOptions

    logging.getLogger("dbos").setLevel(logging.WARNING)
    with _dbos_migration(settings):  # the queue may be used before any worker ran
        DBOS.migrate(system_database_url(settings))
    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        options: EnqueueOptions = {
            "queue_name": QUEUE,
            "workflow_name": workflow_name,
            "workflow_id": workflow_id,
            "app_version": __version__,
        }
        client.enqueue(options, *args)
    finally:
        client.destroy()
    return workflow_id


def send_decision(settings: Settings, workflow_id: str, decision: dict[str, Any]) -> None:
    from dbos import DBOSClient

    from provisor.orchestrator.deploy import APPROVAL_TOPIC

    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        client.send(workflow_id, decision, APPROVAL_TOPIC)
    finally:
        client.destroy()


def cancel(settings: Settings, workflow_id: str) -> None:
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        with contextlib.suppress(Exception):  # unknown or finished: nothing to cancel
            client.cancel_workflow(workflow_id)
    finally:
        client.destroy()


class _CancelledIsNoError(logging.Filter):
    """A workflow cancelled by `down` is no error: one line, not DBOS's error and
    traceback (which would send whoever reads worker.log looking for a fault)."""

    CANCELLED = ("DBOSAwaitedWorkflowCancelledError", "DBOSWorkflowCancelledError")

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__name__ in self.CANCELLED:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"cancelled: {error}", None
            record.exc_info = record.exc_text = None
        return True


def _port(port_file: Path) -> int:
    """The port the parameter endpoint had last time, or 0 (any)."""
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return 0
    return port if 0 < port < 65536 else 0


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a name: where it leads can change
        return False


def _running_here(dbos: Any) -> bool:
    """Whether DBOS runs a workflow in this process now (no query needed to know)."""
    active = getattr(dbos, "_active_workflows_set", None)  # DBOS's own bookkeeping
    try:
        return bool(active.activeList()) if active is not None else False
    except Exception:  # another DBOS version: ask the database instead
        return False


def _pending(dbos: Any) -> int:
    statuses = ["PENDING", "ENQUEUED"]
    # Only whether any is left: neither the inputs nor the outputs are needed.
    found = dbos.list_workflows(
        status=statuses, app_version=__version__, load_input=False, load_output=False, limit=1
    )
    return len(found)


async def _dispatch_alerts(store: Any, settings: Settings, stopping: asyncio.Event) -> None:
    """The alert dispatcher, in the background as long as the worker runs."""
    from provisor.orchestrator.alerts import Dispatcher

    dispatcher = Dispatcher(store, settings.home, retry_seconds=settings.alert_retry_seconds)
    await dispatcher.run(stopping, settings.alert_poll_seconds)


async def serve(settings: Settings, *, until_idle: bool) -> None:
    """Be the worker until stopped (or, with until_idle, until no work is left)."""
    from dbos import DBOS

    from provisor.orchestrator import (  # noqa: F401 - register their workflows
        backup,
        backup_schedule,
        deploy,
        health_monitor,
        lease_schedule,
        lifecycle,
        recovery,
    )
    from provisor.orchestrator.params import ParameterServer
    from provisor.orchestrator.runtime import Runtime, install
    from provisor.store import Store

    with worker_lock(settings.home) as held:
        if held is None:
            holder = read_holder(settings.home / WORKER_LOCK)
            raise ProvisorError(
                f"another provisor worker is running for {settings.home} "
                f"(pid {holder.get('pid', '?')}, since {holder.get('since', '?')}): "
                "`provisor worker status` says more"
            )
        rt = install(
            Runtime(
                Store(settings.effective_database_url),
                settings.home,
                local_network=settings.local_network,
                parameter_address=settings.parameter_address,
            )
        )
        # HTTPS wherever the machines' calls cross a network; on a loopback address
        # they never leave this computer, and a TLS handshake per call costs ~1 ms.
        tls = None if _loopback(settings.parameter_address) else rt.param_tls
        port_file = settings.home / PARAMETER_PORT_FILE
        server = ParameterServer(
            rt.board, rt.signing_key, tls, host=settings.parameter_address, port=_port(port_file)
        )
        rt.param_url = await server.start()
        # The same port after a restart: a machine's first-boot host-key report (in its
        # user data, which cannot change) still finds the controller that resumes.
        write_private(port_file, (rt.param_url.rsplit(":", 1)[1] + "\n").encode())
        dbos = DBOS(config=dbos_config(settings))  # type: ignore[arg-type]
        with _dbos_migration(settings):
            DBOS.launch()
        quiet = _CancelledIsNoError()
        logging.getLogger("dbos").addFilter(quiet)
        await DBOS.register_queue_async(QUEUE, worker_concurrency=16, polling_interval_sec=1.0)
        # What start-up made (modules, DBOS, the endpoint) lives as long as the worker:
        # out of the cycle collector's way, a full collection scans only what work made
        # (it was ~80 ms per collection, a few ms per deployed machine).
        gc.freeze()
        monitor = await health_monitor.start(rt)  # checks machines; stays while it has some
        leases = asyncio.create_task(lease_schedule.tick_forever(settings))
        # SIGTERM (`provisor worker stop`) ends the worker as idleness does; what it was
        # doing is checkpointed, and the next worker resumes it.
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        handles_sigterm = threading.current_thread() is threading.main_thread()
        if handles_sigterm:  # (a worker in another thread leaves signals to its process)
            loop.add_signal_handler(signal.SIGTERM, stopping.set)
        alerts = asyncio.create_task(_dispatch_alerts(rt.store, settings, stopping))
        backups = asyncio.create_task(backup_schedule.run(settings, rt.store, stopping))
        try:
            if not until_idle:
                await stopping.wait()
                return
            idle = ticks = 0
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.5)
                if stopping.is_set():
                    log.warning("worker pid %d stopped by SIGTERM", os.getpid())
                    return
                ticks += 1
                # Busy: the database need not be asked every time. But now and then: a
                # workflow cancelled by `down` while it waits for approval stays in
                # DBOS's wait here, though it is no longer pending.
                if _running_here(dbos) and ticks % 10:
                    continue
                busy = (
                    await asyncio.to_thread(_pending, DBOS)
                    or await asyncio.to_thread(lease_schedule.pending, rt.store)
                    or await asyncio.to_thread(backup_schedule.has_schedules, rt.store)
                    or await monitor.watching()
                )
                idle = 0 if busy else idle + 1
                if idle >= 2:
                    return
        finally:
            for task in (leases, alerts, backups):
                task.cancel()
            await asyncio.gather(leases, alerts, backups, return_exceptions=True)
            await monitor.stop()
            if handles_sigterm:
                loop.remove_signal_handler(signal.SIGTERM)
            gc.unfreeze()
            logging.getLogger("dbos").removeFilter(quiet)
            DBOS.destroy(destroy_registry=False)
            await server.stop()
            rt.board.write_waits()  # the last waits' records (DBOS's threads are gone)
            rt.store.close()
