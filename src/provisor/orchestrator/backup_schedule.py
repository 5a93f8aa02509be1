"""Scheduled backups: the worker's tick that starts the backups that are due.

Each machine whose node has a schedule (the blueprint's, or the deployment's override)
has a mark: the last scheduled time a backup was started for. A tick finds the latest
scheduled time after the mark and not in the future, starts the backup with the
workflow id of that time, then moves the mark. DBOS answers a known workflow id with
that workflow, so a tick repeated after a crash between the two starts nothing twice;
runs missed while no worker ran collapse into one, started at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select

from provisor.core.blueprint.backup import due_time
from provisor.settings import Settings
from provisor.store import Store
from provisor.store.backups import BackupMark, BackupOverride
from provisor.store.orchestration import Deployment

TICK = 10.0  # seconds between looks for due backups (cron has minutes)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scheduled:
    instance: str
    machine: str
    schedule: str
    since: datetime  # no run before this is due (the deployment's creation)


def schedules(store: Store) -> list[Scheduled]:
    """Every machine of a ready deployment with a backup schedule."""
    from provisor.orchestrator.backup import policy_for

    found = []
    with store.session() as session:
        overrides = {
            (o.instance, o.node): o.schedule for o in session.scalars(select(BackupOverride))
        }
        for deployment in session.scalars(select(Deployment).where(Deployment.state == "ready")):
            policies: dict[str, str | None] = {}
            for machine in deployment.machines:
                if machine.provider_id is None:
                    continue
                if machine.node not in policies:
                    override = overrides.get((deployment.instance, machine.node))
                    policies[machine.node] = (
                        (None if override == "off" else override)
                        if override is not None
                        else policy_for(deployment, machine.node).schedule
                    )
                schedule = policies[machine.node]
                if schedule:
                    found.append(
                        Scheduled(
                            deployment.instance, machine.name, schedule, deployment.created_at
                        )
                    )
    return found


def has_schedules(store: Store) -> bool:
    """Whether a worker has scheduled backups to start some day (it stays up for them)."""
    return bool(schedules(store))


def due(store: Store, now: datetime) -> list[tuple[Scheduled, datetime]]:
    """The machines with a run due now, and the scheduled time of that run."""
    with store.session() as session:
        marks = {(m.instance, m.machine): m.last_due for m in session.scalars(select(BackupMark))}
    runs = []
    for item in schedules(store):
        after = marks.get((item.instance, item.machine), item.since)
        when = due_time(item.schedule, after, now)
        if when is not None:
            runs.append((item, when))
    return runs


def _mark(store: Store, item: Scheduled, when: datetime) -> None:
    with store.session() as session:
        mark = session.scalar(
            select(BackupMark).where(
                BackupMark.instance == item.instance, BackupMark.machine == item.machine
            )
        )
        if mark is None:
            session.add(BackupMark(instance=item.instance, machine=item.machine, last_due=when))
        elif mark.last_due < when:
            mark.last_due = when


def forget_removed(store: Store) -> None:
    """Marks and overrides of deployments removed since: a later one never has their
    instance, so they would only pile up."""
    with store.session() as session:
        live = select(Deployment.instance)
        session.execute(delete(BackupMark).where(BackupMark.instance.not_in(live)))
        session.execute(delete(BackupOverride).where(BackupOverride.instance.not_in(live)))


def tick(settings: Settings, store: Store, now: datetime | None = None) -> list[str]:
    """Start every backup that is due; their workflow ids."""
    from provisor.orchestrator.backup import WORKFLOW, workflow_id
    from provisor.orchestrator.worker import enqueue

    forget_removed(store)
    started = []
    for item, when in due(store, now or datetime.now(UTC)):
        run = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
        wid = workflow_id(item.instance, item.machine, run)
        request = {
            "instance": item.instance,
            "machine": item.machine,
            "trigger": "schedule",
            "scheduled_for": when.isoformat(),
        }
        enqueue(settings, WORKFLOW, wid, request)  # a known id: nothing new
        # A step boundary (see deploy._boundary): started, its mark not moved yet.
        sys.audit("provisor.step", "backup-scheduled")
        _mark(store, item, when)
        started.append(wid)
        log.info("scheduled backup %s started", wid)
    return started


async def run(settings: Settings, store: Store, stopping: asyncio.Event) -> None:
    """Tick until `stopping` is set (the worker's life)."""
    while not stopping.is_set():
        try:
            await asyncio.to_thread(tick, settings, store)
        except Exception:  # one bad tick is logged; the next one tries again
            log.exception("backup schedule tick failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), TICK)
