"""The lease tick: scheduled deployments start, leases give notice and end.

The worker runs `tick_forever` beside its queue. Every TICK seconds it looks (a bounded
query each) for:

- a `scheduled` deployment whose start has come: its deploy workflow is started (its id,
  `deploy-<instance>`, is the one the request recorded) and it becomes `requested`;
- a lease ending within the notice (Settings.lease_notice): `lease_notice_workflow`,
  id `lease-notice:<instance>:<end>`, records `lease.expiring`;
- a lease that has ended: `lease_end_workflow`, id `lease-end:<instance>:<end>`, records
  `lease.ended`, takes the final backup (when the backup feature wired it:
  `set_final_backup`), then stops the deployment (lifecycle's stop step) or terminates
  it (`set_terminator`: the services' `down`), per its policy.

The ids are deterministic: DBOS answers a known id with that workflow, so a worker
restarted across the end neither misses it (the next tick starts it, or DBOS resumes
the one under way) nor doubles it. An extension changes the end, hence the ids: the
new end is noticed and acted on afresh, and a workflow of the old end that had not run
yet finds the end moved and does nothing. Each step also marks what it did for which
end (`lease_noticed_for`, `lease_ended_for`), in the transaction that records its event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from provisor.core.lease import seconds_left
from provisor.events import record_event
from provisor.orchestrator import lifecycle
from provisor.orchestrator.runtime import runtime
from provisor.settings import Settings
from provisor.store import Store
from provisor.store.models import Tenant
from provisor.store.orchestration import Deployment

TICK = 1.0  # seconds between looks
BATCH = 100  # deployments acted on per look at most; the next look takes the rest
log = logging.getLogger(__name__)

# (tenant name, deployment name) -> None: remove the deployment as `down` does. Set by
# the services layer (services/lifecycle.py), which owns `down`.
Terminator = Callable[[str, str], Awaitable[None]]
# deployment id -> None: take and verify a backup of every machine, raising if it fails.
# Set by the services layer (services/lifecycle.py lease_final_backup): `down
# --final-backup`'s promise, taken before a stop and before a terminate.
FinalBackup = Callable[[int], Awaitable[None]]
_hooks: dict[str, Any] = {"terminator": None, "final_backup": None, "notice": 86400.0}


def set_terminator(terminate: Terminator) -> None:
    _hooks["terminator"] = terminate


def set_final_backup(backup: FinalBackup | None) -> None:
    _hooks["final_backup"] = backup


def _unsettled(now: datetime | None = None) -> Any:
    """A lease with an end not acted on yet (before `now`, when given)."""
    open_end = and_(
        Deployment.lease_expires_at.is_not(None),
        or_(
            Deployment.lease_ended_for.is_(None),
            Deployment.lease_ended_for != Deployment.lease_expires_at,
        ),
        Deployment.state != "terminating",
    )
    return open_end if now is None else and_(open_end, Deployment.lease_expires_at <= now)


def pending(store: Store) -> bool:
    """Whether a deployment waits for its scheduled start or its lease's end: a worker
    that works until idle must not end meanwhile."""
    with store.session() as session:
        return bool(
            session.scalar(
                select(exists().where(or_(Deployment.state == "scheduled", _unsettled())))
            )
        )


def _key(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _due(session: Session, now: datetime, notice: float) -> dict[str, list[tuple[Any, ...]]]:
    starts = session.execute(
        select(Deployment.id, Deployment.instance, Deployment.workflow_id)
        .where(Deployment.state == "scheduled", Deployment.starts_at <= now)
        .limit(BATCH)
    ).all()
    notices = (
        session.execute(
            select(Deployment.id, Deployment.instance, Deployment.lease_expires_at)
            .where(
                _unsettled(),
                Deployment.lease_expires_at > now,
                Deployment.lease_expires_at <= now + timedelta(seconds=notice),
                or_(
                    Deployment.lease_noticed_for.is_(None),
                    Deployment.lease_noticed_for != Deployment.lease_expires_at,
                ),
            )
            .limit(BATCH)
        ).all()
        if notice > 0
        else []
    )
    ends = session.execute(
        select(Deployment.id, Deployment.instance, Deployment.lease_expires_at)
        .where(_unsettled(now))
        .limit(BATCH)
    ).all()
    return {"starts": list(starts), "notices": list(notices), "ends": list(ends)}


async def _start(workflow_id: str, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Start the workflow under `workflow_id`: a known id is that workflow, not a new one."""
    with SetWorkflowID(workflow_id):
        await DBOS.start_workflow_async(func, *args)  # type: ignore[arg-type]


def _scheduled_started(deployment_id: int) -> None:
    with runtime().store.session() as session:
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id, Deployment.state == "scheduled")
            .values(state="requested", step="queued")
            .execution_options(synchronize_session=False)
        )


async def tick(now: datetime | None = None) -> int:
    """One look; how many workflows it started (or found started)."""
    from provisor.orchestrator.deploy import deploy_workflow

    now = now or datetime.now(UTC)
    store = runtime().store

    def due() -> dict[str, list[tuple[Any, ...]]]:
        with store.session() as session:
            return _due(session, now, float(_hooks["notice"]))

    found = await asyncio.to_thread(due)
    for deployment_id, instance, workflow_id in found["starts"]:
        # The workflow first, then the state: a crash between leaves it `scheduled`, and
        # the next look starts the same workflow (its id) again, which is no second one.
        await _start(workflow_id or f"deploy-{instance}", deploy_workflow, deployment_id)
        await asyncio.to_thread(_scheduled_started, deployment_id)
    for deployment_id, instance, end in found["notices"]:
        key = _key(end)
        await _start(f"lease-notice:{instance}:{key}", lease_notice_workflow, deployment_id, key)
    for deployment_id, instance, end in found["ends"]:
        key = _key(end)
        await _start(f"lease-end:{instance}:{key}", lease_end_workflow, deployment_id, key)
    return sum(len(rows) for rows in found.values())


async def tick_forever(settings: Settings) -> None:
    """`tick` every TICK seconds until cancelled; a failed look is logged, not fatal."""
    _hooks["notice"] = settings.lease_notice
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:  # the database away for a moment: the next look tries again
            log.exception("lease tick failed")
        await asyncio.sleep(TICK)


# The workflows


def _event(session: Session, deployment: Deployment, kind: str, details: dict[str, Any]) -> None:
    tenant = session.get(Tenant, deployment.tenant_id)
    record_event(
        session,
        actor="lease",
        tenant=tenant.name if tenant else "default",
        kind=kind,
        subject=deployment.name,
        details={
            "deployment": deployment.name,
            "instance": deployment.instance,
            "incident": f"lease:{deployment.instance}",
            **details,
        },
    )


def _current(session: Session, deployment_id: int, key: str) -> Deployment | None:
    """The deployment if its lease still ends at `key` (not extended since)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.lease_expires_at is None:
        return None
    return deployment if _key(deployment.lease_expires_at) == key else None


@DBOS.step()
async def notice_step(deployment_id: int, key: str) -> bool:
    def notice() -> bool:
        with runtime().store.session() as session:
            deployment = _current(session, deployment_id, key)
            if deployment is None or deployment.lease_noticed_for == deployment.lease_expires_at:
                return False
            end = deployment.lease_expires_at
            assert end is not None
            deployment.lease_noticed_for = end
            _event(
                session,
                deployment,
                "lease.expiring",
                {
                    "severity": "warning",
                    "incident_state": "open",
                    "expires_at": end.isoformat(),
                    "seconds_left": seconds_left(end, datetime.now(UTC)),
                    "lease_end": deployment.lease_policy or "stop",
                },
            )
            return True

    return await asyncio.to_thread(notice)


@DBOS.workflow()
async def lease_notice_workflow(deployment_id: int, key: str) -> bool:
    return await notice_step(deployment_id, key)


@DBOS.step()
async def end_step(deployment_id: int, key: str) -> dict[str, str]:
    """Decide what the end does (per the policy and the state it finds), and record the
    end once: run again after a crash, it decides again and records nothing twice."""

    def end() -> dict[str, str]:
        with runtime().store.session() as session:
            deployment = _current(session, deployment_id, key)
            if deployment is None:
                return {"action": "none"}
            expires = deployment.lease_expires_at
            assert expires is not None  # `_current` says so
            policy = deployment.lease_policy or "stop"
            action, note = policy, ""
            if policy == "stop" and deployment.state in ("stopped", "stopping"):
                action, note = "none", f"it was {deployment.state} already"
            elif policy == "stop" and deployment.state not in lifecycle.STOPPABLE:
                action, note = "none", f"it was {deployment.state}, which cannot be stopped"
            if deployment.lease_ended_for != expires:
                deployment.lease_ended_for = expires
                _event(
                    session,
                    deployment,
                    "lease.ended",
                    {
                        "severity": "info",
                        "incident_state": "resolved",
                        "expires_at": expires.isoformat(),
                        "lease_end": policy,
                        "action": action,
                        **({"note": note} if note else {}),
                        "final_backup": "yes" if _hooks["final_backup"] else "not available",
                    },
                )
            tenant = session.get(Tenant, deployment.tenant_id)
            decided = {
                "action": action,
                "instance": deployment.instance,
                "tenant": tenant.name if tenant else "default",
                "name": deployment.name,
            }
        # A crash point for tests (provisor.testing.crash): recorded, not checkpointed.
        sys.audit("provisor.step", f"lease-ended:{decided['name']}")
        return decided

    return await asyncio.to_thread(end)


@DBOS.step()
async def final_backup_step(deployment_id: int) -> str | None:
    """The final backup, when the backup feature is there; why it failed, if it did."""
    backup = _hooks["final_backup"]
    if backup is None:
        return None
    try:
        await backup(deployment_id)
    except Exception as exc:  # the backup feature records its own events
        return str(exc) or type(exc).__name__
    return None


@DBOS.step()
async def mark_stopping_step(deployment_id: int, key: str) -> bool:
    """`stopping` now, if it still may be stopped (someone may have acted meanwhile)."""

    def mark() -> bool:
        with runtime().store.session() as session:
            changed = session.execute(
                update(Deployment)
                .where(
                    Deployment.id == deployment_id,
                    Deployment.state.in_(lifecycle.STOPPABLE),
                )
                .values(
                    state="stopping",
                    step="stopping machines (lease ended)",
                    error=None,
                    lifecycle_workflow_id=DBOS.workflow_id,
                )
                .execution_options(synchronize_session=False)
            )
            return bool(changed.rowcount)  # type: ignore[attr-defined]

    return await asyncio.to_thread(mark)


@DBOS.step()
async def end_refused_step(deployment_id: int, key: str, error: str) -> None:
    """The final backup failed: the deployment is left as it is, and someone told."""

    def record() -> None:
        with runtime().store.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None:
                _event(
                    session,
                    deployment,
                    "lease.end_refused",
                    {
                        "severity": "critical",
                        "incident_state": "open",
                        "expires_at": key,
                        "error": f"the final backup failed: {error}"[:2000],
                    },
                )

    await asyncio.to_thread(record)


@DBOS.step()
async def terminate_step(tenant: str, name: str) -> None:
    terminate = _hooks["terminator"]
    if terminate is None:  # the worker is started by services.workers, which sets it
        raise RuntimeError("no terminator is set: start the worker with `provisor worker`")
    await terminate(tenant, name)


@DBOS.workflow()
async def lease_end_workflow(deployment_id: int, key: str) -> str:
    decided = await end_step(deployment_id, key)
    action = decided["action"]
    if action == "none":
        return "none"
    failed = await final_backup_step(deployment_id)
    if failed is not None:  # as `down --final-backup`: nothing is stopped or removed
        await end_refused_step(deployment_id, key, failed)
        return "refused"
    if action == "stop":
        if not await mark_stopping_step(deployment_id, key):
            return "none"
        return await lifecycle.run(deployment_id, decided["instance"], "stop", "lease ended")
    await terminate_step(decided["tenant"], decided["name"])
    return "terminated"


__all__ = [
    "lease_end_workflow",
    "lease_notice_workflow",
    "pending",
    "set_final_backup",
    "set_terminator",
    "tick",
    "tick_forever",
]
