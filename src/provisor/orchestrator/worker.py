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
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
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


@contextlib.contextmanager
def worker_lock(home: Path) -> Iterator[IO[str] | None]:
    """Yields the held lock, or None when another process is the worker."""
    private_home(home)
    handle = os.fdopen(open_private(home / "worker.lock", os.O_RDWR), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        yield None
        return
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()


def worker_running(home: Path) -> bool:
    with worker_lock(home) as held:
        return held is None


def enqueue_deployment(settings: Settings, deployment_id: int, workflow_id: str) -> str:
    """Put a deployment's workflow on the durable queue; any worker will take it.

    `workflow_id` must never have been used before (DBOS answers a known id with that
    workflow, finished or not): the deployment's instance makes it so.
    """
    from dbos import DBOS, DBOSClient, EnqueueOptions

    logging.getLogger("dbos").setLevel(logging.WARNING)
    with _dbos_migration(settings):  # the queue may be used before any worker ran
        DBOS.migrate(system_database_url(settings))
    client = DBOSClient(system_database_url=system_database_url(settings))
    try:
        options: EnqueueOptions = {
            "queue_name": QUEUE,
            "workflow_name": "deploy_workflow",
            "workflow_id": workflow_id,
            "app_version": __version__,
        }
        client.enqueue(options, deployment_id)
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


async def serve(settings: Settings, *, until_idle: bool) -> None:
    """Be the worker until stopped (or, with until_idle, until no work is left)."""
    from dbos import DBOS

    from provisor.orchestrator import deploy  # noqa: F401 - registers the workflow
    from provisor.orchestrator.params import ParameterServer
    from provisor.orchestrator.runtime import Runtime, install
    from provisor.store import Store

    with worker_lock(settings.home) as held:
        if held is None:
            raise ProvisorError(
                f"another provisor worker is running for {settings.home} "
                f"(pid {(settings.home / 'worker.lock').read_text().strip()})"
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
        await DBOS.register_queue_async(QUEUE, worker_concurrency=16, polling_interval_sec=1.0)
        # What start-up made (modules, DBOS, the endpoint) lives as long as the worker:
        # out of the cycle collector's way, a full collection scans only what work made
        # (it was ~80 ms per collection, a few ms per deployed machine).
        gc.freeze()
        try:
            if not until_idle:
                await asyncio.Event().wait()  # until the worker is stopped (cancelled)
            idle = 0
            while True:
                await asyncio.sleep(0.5)
                if _running_here(dbos):  # busy: the database need not be asked
                    idle = 0
                    continue
                idle = idle + 1 if await asyncio.to_thread(_pending, DBOS) == 0 else 0
                if idle >= 2:
                    return
        finally:
            gc.unfreeze()
            DBOS.destroy(destroy_registry=False)
            await server.stop()
            rt.board.write_waits()  # the last waits' records (DBOS's threads are gone)
            rt.store.close()
