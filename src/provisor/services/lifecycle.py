"""Stop a deployment (its machines powered off, disks and addresses kept) and start it.

    ready | failed -> stopping -> stopped      (`stop`)
    stopped        -> starting -> ready        (`start`)

The state changes here, at once, by a compare-and-set (of two actions at the same time
one wins, the other is refused naming the state); a durable workflow does the work (a
worker killed meanwhile resumes it). The same command on a deployment already
`stopping` (`starting`) enqueues the same workflow again: one run, never two.
A deployment on its way (`deploying`), being removed or waiting is refused.

`extend_lease` moves the end of a deployment's lease (orchestrator/lease_schedule.py
acts on it: a notice before, stop or terminate at the end).

Who may: an operator or admin any of the tenant's deployments; a requester its own
(the rules of `down`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update

from provisor.core.access import Action
from provisor.core.errors import Conflict, NotFound
from provisor.core.lease import extended
from provisor.orchestrator import lease_schedule, lifecycle, worker
from provisor.services.context import Context, audited
from provisor.services.deployments import DeploymentView, _find, _view, remove_deployment
from provisor.settings import Settings
from provisor.store import Store, Tenant
from provisor.store.orchestration import Deployment

# action -> the states it may start from
FROM = {"stop": lifecycle.STOPPABLE, "start": ("stopped",)}
_NOUN = {"stop": "stopped", "start": "started"}


def may_manage(ctx: Context, deployment: Deployment, verb: str) -> None:
    """An operator or admin acts on any of the tenant's deployments; a requester on its
    own only (it sees no other: `_find` answers not found)."""
    if not ctx.allows(Action.deployments_manage) and deployment.owner != ctx.actor:
        raise ctx.deny(
            f"role {ctx.role} in tenant {ctx.tenant!r} may not {verb} deployment "
            f"{deployment.name!r}: only its owner or an operator may",
            deployment.name,
        )


def _refused(name: str, deployment: Deployment, action: str) -> Conflict:
    why = f": {deployment.error}" if deployment.state == "failed" and deployment.error else ""
    allowed = " or ".join(FROM[action])
    return Conflict(
        f"cannot {action} deployment {name!r}: it is {deployment.state} "
        f"({deployment.step}{why}); only a deployment that is {allowed} can be {_NOUN[action]}",
        field="name",
    )


def change(ctx: Context, settings: Settings, name: str, action: str) -> DeploymentView:
    """Mark the deployment `stopping`/`starting` and enqueue the workflow that does it."""
    during = lifecycle.ACTIONS[action][0]
    with audited(ctx, f"deployment.{action}", name) as (session, audit):
        deployment = _find(session, ctx, name)
        may_manage(ctx, deployment, action)
        audit.details = {"instance": deployment.instance}
        if deployment.state == during and deployment.lifecycle_workflow_id:
            workflow_id = deployment.lifecycle_workflow_id  # interrupted: the same one again
        else:
            if deployment.state not in FROM[action]:
                raise _refused(name, deployment, action)
            workflow_id = f"{action}-{deployment.instance}-{uuid.uuid4().hex[:12]}"
            changed = session.execute(
                update(Deployment)
                .where(Deployment.id == deployment.id, Deployment.state == deployment.state)
                .values(
                    state=during,
                    step=f"{during} machines",
                    error=None,
                    lifecycle_workflow_id=workflow_id,
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]  # changed meanwhile
                session.refresh(deployment)
                raise _refused(name, deployment, action)
            session.refresh(deployment)
        view = _view(deployment)
        # Before the commit: if it cannot be enqueued, the state stays as it was.
        worker.enqueue(
            settings,
            lifecycle.workflow_name(action),
            workflow_id,
            deployment.id,
            deployment.instance,
            f"{action} by {ctx.actor}",
        )
    return view


def stop_deployment(ctx: Context, settings: Settings, name: str) -> DeploymentView:
    """Power the deployment's machines off; their disks, addresses and hosts are kept."""
    return change(ctx, settings, name, "stop")


def start_deployment(ctx: Context, settings: Settings, name: str) -> DeploymentView:
    """Power a stopped deployment's machines on; `ready` once every one answers SSH."""
    return change(ctx, settings, name, "start")


def extend_lease(
    ctx: Context, name: str, *, by: str | None = None, until: str | None = None
) -> DeploymentView:
    """End the lease `by` later (after its current end, or now) or `until` a time; a
    deployment without a lease gets one. The lease tick notices the new end: a notice
    and an end already under way for the old one do not happen (their ids name it)."""
    with audited(ctx, "lease.extended", name) as (session, audit):
        deployment = _find(session, ctx, name)
        may_manage(ctx, deployment, "extend the lease of")
        if deployment.state == "terminating":
            raise Conflict(
                f"cannot extend the lease of deployment {name!r}: it is being removed",
                field="name",
            )
        previous = deployment.lease_expires_at
        end = extended(now=datetime.now(UTC), expires_at=previous, by=by, until=until)
        noticed = previous is not None and deployment.lease_noticed_for == previous
        deployment.lease_expires_at = end
        deployment.lease_policy = deployment.lease_policy or "stop"
        audit.details = {
            "severity": "info",
            "deployment": name,
            "instance": deployment.instance,
            "expires_at": end.isoformat(),
            "previous": previous.isoformat() if previous else None,
            # the notice given for the old end is answered
            **(
                {"incident": f"lease:{deployment.instance}", "incident_state": "resolved"}
                if noticed
                else {}
            ),
        }
        session.flush()
        return _view(deployment)


def lease_terminator(settings: Settings) -> lease_schedule.Terminator:
    """How the worker terminates a deployment whose lease ends with `terminate`: `down`,
    as the data directory's owner, in the deployment's tenant."""

    async def terminate(tenant: str, name: str) -> None:
        store = Store(settings.effective_database_url)
        ctx = Context(store=store, actor="lease", tenant=tenant, home=settings.home)
        try:
            # No final backup here: lease_end_workflow took it before (lease_final_backup).
            await remove_deployment(ctx, settings, name)
        except NotFound:
            pass  # removed meanwhile: what the lease asked for is done
        finally:
            store.close()

    return terminate


FINAL_BACKUP_TIMEOUT = 6 * 3600.0


def lease_final_backup(settings: Settings) -> lease_schedule.FinalBackup:
    """How the worker backs up every machine of a deployment whose lease ends, before it
    stops or removes it: `down --final-backup`'s verified backups, as the data
    directory's owner, in the deployment's tenant; raises when one failed."""

    async def back_up(deployment_id: int) -> None:
        from provisor.services.backups import final_backup

        store = Store(settings.effective_database_url)
        try:
            with store.session() as session:
                found = session.execute(
                    select(Deployment.name, Tenant.name)
                    .join(Tenant, Tenant.id == Deployment.tenant_id)
                    .where(Deployment.id == deployment_id)
                ).first()
            if found is None:
                return  # removed meanwhile: nothing is left to back up
            ctx = Context(store=store, actor="lease", tenant=found[1], home=settings.home)
            await asyncio.to_thread(
                final_backup, ctx, settings, found[0], timeout=FINAL_BACKUP_TIMEOUT
            )
        finally:
            store.close()

    return back_up


__all__ = [
    "extend_lease",
    "lease_final_backup",
    "lease_terminator",
    "may_manage",
    "start_deployment",
    "stop_deployment",
]
