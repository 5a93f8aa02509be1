"""Stop a deployment (its machines powered off, disks and addresses kept) and start it.

    ready | failed -> stopping -> stopped      (`stop`)
    stopped        -> starting -> ready        (`start`)

The state changes here, at once, by a compare-and-set (of two actions at the same time
one wins, the other is refused naming the state); a durable workflow does the work (a
worker killed meanwhile resumes it). The same command on a deployment already
`stopping` (`starting`) enqueues the same workflow again: one run, never two.
A deployment on its way (`deploying`), being removed or waiting is refused.

Who may: an operator or admin any of the tenant's deployments; a requester its own
(the rules of `down`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import update

from provisor.core.access import Action
from provisor.core.errors import Conflict
from provisor.orchestrator import lifecycle, worker
from provisor.services.context import Context, audited
from provisor.services.deployments import DeploymentView, _find, _view
from provisor.settings import Settings
from provisor.store.orchestration import Deployment

# action -> the states it may start from
FROM = {"stop": ("ready", "failed"), "start": ("stopped",)}
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


__all__ = ["may_manage", "start_deployment", "stop_deployment"]
