"""Deployments: request one (`up`), decide on it, follow it, and remove it (`down`).

States and the changes allowed between them (any other is refused, naming the state):

    [scheduled ->] requested -> awaiting_approval -> deploying -> ready | failed
                                    |  (approve)
                                    +-> rejected (reject)
    ready | failed -> stopping -> stopped -> starting -> ready   (`stop`, `start`:
                                                                 services/lifecycle.py)
    any state -> terminating -> removed (`down`; the row is deleted)

`down` of a deployment that is `terminating` finishes an interrupted removal. A
deployment requested with `--at` is `scheduled` until then (the worker's lease tick,
orchestrator/lease_schedule.py, starts it); one with a lease is stopped or terminated
when it ends.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, selectinload

from provisor.core.access import Action
from provisor.core.blueprint import Blueprint, expand, load_blueprint, resolve_inputs
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.core.lease import lease_terms, seconds_left
from provisor.core.masking import MASK
from provisor.core.names import check_deployment_name, deployment_group
from provisor.events import EventView, query_events
from provisor.orchestrator import deployment_lock, reports, secrets, worker
from provisor.services import backups
from provisor.services.blueprints import load_stored_blueprint
from provisor.services.context import Context, audited
from provisor.services.providers import provider_names
from provisor.settings import Settings
from provisor.store.models import Event, Group, Host, Job, JobResult
from provisor.store.orchestration import Deployment, ParameterWait, RuntimeParameter

ACTIVE = ("requested", "awaiting_approval", "deploying")
DOWN_TIMEOUT = 900.0  # how long `down` waits for a step in progress (a launch) to end


class MachineView(BaseModel):
    name: str
    node: str
    index: int
    hostname: str
    address: str | None
    state: str
    provider_id: str | None
    error: str | None
    health: str | None = None  # with checks: healthy, degraded, unhealthy, recovering, failed


class DeploymentView(BaseModel):
    name: str
    blueprint: str
    blueprint_version: str
    provider: str
    owner: str
    state: str
    step: str
    error: str | None
    outputs: dict[str, Any]
    inputs: dict[str, Any]  # secrets shown as "********"
    machines: list[MachineView]
    created_at: datetime
    updated_at: datetime
    starts_at: datetime | None = None  # a scheduled deployment's start
    lease_expires_at: datetime | None = None
    lease_end: str | None = None  # stop | terminate, at the end of the lease
    lease_seconds_left: int | None = None  # when it was looked at


class JobLine(BaseModel):
    """A fleet job that worked on a deployment's machines."""

    id: int
    kind: str
    command: str
    state: str
    actor: str
    summary: dict[str, int]
    created_at: datetime


class DeploymentDetail(DeploymentView):
    """A deployment's whole picture: `DeploymentView` and its tenant, latest events,
    latest fleet jobs, backups and health. `jobs` and `backups` are None for a caller
    whose role may not read them (a requester)."""

    tenant: str
    history: list[EventView] = Field(description="its latest events, oldest first")
    jobs: list[JobLine] | None = Field(description="latest fleet jobs on its machines")
    backups: backups.BackupSummary | None
    health: dict[str, int] = Field(description="checked machines by health state")


class ParameterView(BaseModel):
    key: str
    value: str
    set_by: str


class WaitView(BaseModel):
    key: str
    waiter: str
    since: datetime


class ParametersView(BaseModel):
    deployment: str
    values: list[ParameterView]
    waiting: list[WaitView]


def _view(deployment: Deployment, health: dict[str, str] | None = None) -> DeploymentView:
    return DeploymentView(
        name=deployment.name,
        blueprint=deployment.blueprint,
        blueprint_version=deployment.blueprint_version,
        provider=deployment.provider,
        owner=deployment.owner,
        state=deployment.state,
        step=deployment.step,
        error=deployment.error,
        outputs=dict(deployment.outputs),
        inputs={k: MASK if secrets.is_sealed(v) else v for k, v in deployment.inputs.items()},
        machines=[
            MachineView(
                name=m.name,
                node=m.node,
                index=m.index,
                hostname=m.hostname,
                address=m.address,
                state=m.state,
                provider_id=m.provider_id,
                error=m.error,
                health=(health or {}).get(m.name),
            )
            for m in sorted(deployment.machines, key=lambda m: (m.node, m.index))
        ],
        created_at=deployment.created_at,
        updated_at=deployment.updated_at,
        starts_at=deployment.starts_at,
        lease_expires_at=deployment.lease_expires_at,
        lease_end=deployment.lease_policy if deployment.lease_expires_at else None,
        lease_seconds_left=seconds_left(deployment.lease_expires_at, datetime.now(UTC)),
    )


def _sees_all(ctx: Context) -> bool:
    """Whether the caller sees every deployment of the tenant, or only its own (a
    requester); one who may do neither is refused here."""
    if ctx.allows(Action.deployments_read):
        return True
    ctx.require(Action.deployments_request)
    return False


def _find(session: Session, ctx: Context, name: str) -> Deployment:
    """The tenant's deployment `name`; a requester's own only (another's is not found)."""
    deployment = session.scalar(
        select(Deployment)
        .where(Deployment.tenant_id == ctx.tenant_id(), Deployment.name == name)
        .options(selectinload(Deployment.machines))
    )
    if deployment is None or not (_sees_all(ctx) or deployment.owner == ctx.actor):
        raise NotFound(f"no deployment named {name!r}{_removed(session, ctx, name)}", field="name")
    return deployment


def _removed(session: Session, ctx: Context, name: str) -> str:
    """`(removed at TIME by ACTOR)` when the audit log says the name was removed last
    (for who may see every deployment of the tenant; empty otherwise)."""
    if not ctx.allows(Action.deployments_read):
        return ""
    last = query_events(
        session, tenant=ctx.tenant, kinds=["deployment.terminated"], subject=name, limit=1
    )
    if not last or last[0].outcome != "ok":
        return ""
    return f" (removed {last[0].time:%Y-%m-%d %H:%M:%S} UTC by {last[0].actor})"


def _sealed_inputs(ctx: Context, blueprint: Blueprint, inputs: dict[str, Any]) -> dict[str, Any]:
    sealed: dict[str, Any] = {}
    for key, value in inputs.items():
        parameter = blueprint.parameters.get(key)
        if parameter is not None and parameter.type == "secret":
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            sealed[key] = secrets.seal(ctx.home, raw)
        else:
            sealed[key] = value
    return sealed


def _check_provider(ctx: Context, provider: str) -> None:
    """`local`, or a provider configured for the deployment's tenant."""
    names = provider_names(ctx)
    if provider not in names:
        raise InvalidInput(
            f"no provider named {provider!r}: use one of {', '.join(names)} "
            "(`provisor providers add` configures one)",
            field="provider",
        )


def request_deployment(
    ctx: Context,
    settings: Settings,
    text: str,
    *,
    source: str,
    parameters: dict[str, str],
    name: str | None = None,
    completion: str | None = None,
    provider: str | None = None,
    lease: str | None = None,
    at: str | None = None,
    lease_end: str | None = None,
) -> DeploymentView:
    """Validate everything, record the deployment and queue its workflow (or, with `at`,
    schedule it: the worker's lease tick queues it then). `lease` (else the blueprint's)
    counts from the start; `lease_end` (else the blueprint's) says what happens then."""
    ctx.require(Action.deployments_request)
    blueprint = load_blueprint(text, source=source)
    terms = lease_terms(
        now=datetime.now(UTC),
        lease=lease,
        default=blueprint.lease_duration,
        at=at,
        policy=lease_end,
        default_policy=blueprint.lease_end,
    )
    deployment_name = check_deployment_name(name or blueprint.name, field="name")
    inputs = resolve_inputs(blueprint, parameters)
    plans = expand(blueprint, inputs, deployment=deployment_name, completion=completion)
    provider = provider or blueprint.provider or "local"  # --provider, the blueprint's, local
    _check_provider(ctx, provider)
    backups.check_policy_stores(ctx, blueprint)
    with audited(ctx, "deployment.requested", deployment_name) as (session, audit):
        taken = session.scalar(
            select(Deployment.id).where(
                Deployment.tenant_id == ctx.tenant_id(), Deployment.name == deployment_name
            )
        )
        if taken is not None:
            raise Conflict(
                f"a deployment named {deployment_name!r} exists; pick another --name "
                f"or remove it with `provisor down {deployment_name}`",
                field="name",
            )
        deployment = Deployment(
            tenant_id=ctx.tenant_id(),
            name=deployment_name,
            owner=ctx.actor,
            blueprint=blueprint.name,
            blueprint_version=blueprint.version,
            blueprint_text=text,
            inputs=_sealed_inputs(ctx, blueprint, inputs),
            completion=completion,
            provider=provider,
            state="scheduled" if terms.starts_at else "requested",
            step=f"starts at {terms.starts_at:%Y-%m-%d %H:%M:%S} UTC"
            if terms.starts_at
            else "queued",
            outputs={},
            machines=[],
            starts_at=terms.starts_at,
            lease_expires_at=terms.expires_at,
            lease_policy=terms.policy,
        )
        session.add(deployment)
        session.flush()
        deployment.workflow_id = workflow_id = f"deploy-{deployment.instance}"
        audit.details = {
            "blueprint": f"{blueprint.name} {blueprint.version}",
            "machines": len(plans),
            "provider": provider,
            "instance": deployment.instance,
            **({"starts_at": terms.starts_at.isoformat()} if terms.starts_at else {}),
            **({"lease_expires_at": terms.expires_at.isoformat()} if terms.expires_at else {}),
        }
        view = _view(deployment)
        deployment_id = deployment.id
    if terms.starts_at is None:
        worker.enqueue_deployment(settings, deployment_id, workflow_id)
    return view


def get_deployment(ctx: Context, name: str) -> DeploymentView:
    with ctx.store.session() as session:
        deployment = _find(session, ctx, name)
        return _view(deployment, _health(session, deployment.id))


HISTORY = 10  # events `describe_deployment` gives
RECENT_JOBS = 5  # fleet jobs it gives
_CLOCK_SLACK = timedelta(seconds=2)  # its first event may be stamped just before the row


def describe_deployment(ctx: Context, name: str) -> DeploymentDetail:
    """Everything about one deployment, for `provisor deployments show` and
    `GET /deployments/{name}/detail`: whoever may see it sees its state, inputs (secrets
    masked), machines, outputs, latest events and health; backups and jobs are added
    for the roles that may read them."""
    with ctx.store.session() as session:
        deployment = _find(session, ctx, name)
        view = _view(deployment, _health(session, deployment.id))
        machines = [m.name for m in deployment.machines]
        history = _history(session, ctx, deployment, machines)
        jobs = _jobs(session, ctx, deployment, machines)
        summary = (
            backups.backup_summary(session, deployment.tenant_id, deployment.instance)
            if ctx.allows(Action.backups_read)
            else None
        )
    return DeploymentDetail(
        **view.model_dump(),
        tenant=ctx.tenant,
        history=history,
        jobs=jobs,
        backups=summary,
        health=dict(Counter(m.health for m in view.machines if m.health)),
    )


def _history(
    session: Session, ctx: Context, deployment: Deployment, machines: list[str]
) -> list[EventView]:
    """The latest events about this deployment or its machines, of this instance only
    (an earlier deployment of the same name had another); refused requests left out, and
    a blueprint's events (a blueprint may bear the deployment's name)."""
    subjects = [deployment.name, *machines]
    rows = session.scalars(
        select(Event)
        .where(
            Event.tenant == ctx.tenant,
            Event.time >= deployment.created_at - _CLOCK_SLACK,
            or_(
                Event.subject.in_(subjects),
                Event.subject.startswith(f"{deployment.name}/", autoescape=True),
            ),
            ~Event.kind.startswith("access.", autoescape=True),
            ~Event.kind.startswith("blueprint.", autoescape=True),
        )
        .order_by(Event.id.desc())
        .limit(HISTORY * 2)  # room for those of another instance, dropped below
    ).all()
    ours = [
        EventView.model_validate(row, from_attributes=True)
        for row in rows
        if row.details.get("instance", deployment.instance) == deployment.instance
    ]
    return ours[:HISTORY][::-1]


def _jobs(
    session: Session, ctx: Context, deployment: Deployment, machines: list[str]
) -> list[JobLine] | None:
    """The latest fleet jobs with a result on one of its machines (for who may read jobs)."""
    if not ctx.allows(Action.jobs_read):
        return None
    if not machines:
        return []
    touched = (
        select(JobResult.job_id).where(JobResult.host.in_(machines)).distinct().scalar_subquery()
    )
    rows = session.scalars(
        select(Job)
        .where(
            Job.tenant_id == deployment.tenant_id,
            Job.created_at >= deployment.created_at,
            Job.id.in_(touched),
        )
        .order_by(Job.id.desc())
        .limit(RECENT_JOBS)
    ).all()
    return [
        JobLine(
            id=j.id,
            kind=j.kind,
            command=j.command,
            state=j.state,
            actor=j.actor,
            summary=dict(j.summary),
            created_at=j.created_at,
        )
        for j in rows
    ]


def _health(session: Session, deployment_id: int) -> dict[str, str]:
    """Each checked machine's health state, by machine name."""
    from provisor.store.health import MachineHealth

    return {
        machine: state
        for machine, state in session.execute(
            select(MachineHealth.machine, MachineHealth.state).where(
                MachineHealth.deployment_id == deployment_id
            )
        )
    }


def list_deployments(ctx: Context) -> list[DeploymentView]:
    """The tenant's deployments (a requester's own only)."""
    statement = select(Deployment).where(Deployment.tenant_id == ctx.tenant_id())
    if not _sees_all(ctx):
        statement = statement.where(Deployment.owner == ctx.actor)
    with ctx.store.session() as session:
        rows = session.scalars(
            statement.options(selectinload(Deployment.machines)).order_by(Deployment.id)
        ).all()
        return [_view(d) for d in rows]


def _not_awaiting(name: str, deployment: Deployment, verb: str) -> Conflict:
    why = f": {deployment.error}" if deployment.state in ("rejected", "failed") else ""
    return Conflict(
        f"cannot {verb} deployment {name!r}: it is {deployment.state} ({deployment.step}{why}); "
        "only a deployment awaiting approval can be approved or rejected",
        field="name",
    )


def decide(
    ctx: Context, settings: Settings, name: str, *, approved: bool, reason: str | None = None
) -> DeploymentView:
    """Approve or reject a deployment that waits for approval.

    The state changes here, at once and only from `awaiting_approval` (a compare-and-set:
    of two decisions at the same time one wins, the other is refused); the workflow
    is told after."""
    ctx.require(Action.deployments_decide)
    kind = "deployment.approve" if approved else "deployment.reject"
    verb = "approve" if approved else "reject"
    with audited(ctx, kind, name) as (session, audit):
        deployment = _find(session, ctx, name)
        if deployment.state != "awaiting_approval":
            raise _not_awaiting(name, deployment, verb)
        if not approved and not reason:
            raise InvalidInput("say why it is rejected (--reason)", field="reason")
        audit.details = {"reason": reason} if reason else {}
        audit.details["instance"] = deployment.instance
        decided = (
            {"state": "deploying", "step": f"approved by {ctx.actor}"}
            if approved
            else {"state": "rejected", "step": "rejected", "error": reason}
        )
        changed = session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id, Deployment.state == "awaiting_approval")
            .values(**decided)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]  # decided meanwhile
            session.refresh(deployment)
            raise _not_awaiting(name, deployment, verb)
        session.refresh(deployment)
        workflow_id = deployment.workflow_id
        view = _view(deployment)
        assert workflow_id is not None
        # Before the commit: if the workflow cannot be told, the state stays as it was.
        worker.send_decision(
            settings, workflow_id, {"approved": approved, "by": ctx.actor, "reason": reason}
        )
    return view


def parameters(ctx: Context, name: str) -> ParametersView:
    """The deployment's runtime parameters, with its secrets masked: a machine may publish
    one (the other machines need it as it is, so it is kept as it is)."""
    with ctx.store.session() as session:
        deployment = _find(session, ctx, name)
        masker = secrets.inputs_masker(ctx.home, deployment.inputs)
        values = session.scalars(
            select(RuntimeParameter)
            .where(RuntimeParameter.deployment_id == deployment.id)
            .order_by(RuntimeParameter.key)
        ).all()
        waits = session.scalars(
            select(ParameterWait)
            .where(ParameterWait.deployment_id == deployment.id)
            .order_by(ParameterWait.since)
        ).all()
        return ParametersView(
            deployment=name,
            values=[
                ParameterView(
                    key=v.key,
                    value=MASK if secrets.is_sealed(v.value) else masker.text(v.value),
                    set_by=v.set_by,
                )
                for v in values
            ],
            waiting=[WaitView(key=w.key, waiter=w.waiter, since=w.since) for w in waits],
        )


async def remove_deployment(
    ctx: Context,
    settings: Settings,
    name: str,
    *,
    waiting: Callable[[str], None] | None = None,
) -> DeploymentView:
    """Stop its workflow, terminate every machine it has (even unrecorded), forget it and
    its machines' host keys.

    It is marked `terminating` first (no step starts after that), its workflow is
    cancelled (a step in progress is stopped, a launch in progress finishes), and
    then, holding the deployment's lock, everything at the provider tagged with its
    instance is removed: machines whose launch was never recorded too. `waiting(step)`
    is called when a step in progress must end first. An interrupted `down` is
    finished by the next one.

    An operator or admin removes any of the tenant's; a requester its own."""
    from provisor.fleet.knownhosts import forget_host_keys
    from provisor.fleet.transport import machine_trust_id
    from provisor.orchestrator.runtime import Runtime

    view = await asyncio.to_thread(get_deployment, ctx, name)
    if not ctx.allows(Action.deployments_manage) and view.owner != ctx.actor:
        raise ctx.deny(
            f"role {ctx.role} in tenant {ctx.tenant!r} may not remove deployment {name!r}: "
            "only its owner or an operator may",
            name,
        )

    def mark() -> tuple[str, str | None]:
        with ctx.store.session() as session:
            deployment = _find(session, ctx, name)
            deployment.state, deployment.step = "terminating", "terminating machines"
            return deployment.instance, deployment.workflow_id

    instance, workflow_id = await asyncio.to_thread(mark)
    lock_name = workflow_id or f"deploy-{instance}"
    if workflow_id:
        await asyncio.to_thread(worker.cancel, settings, workflow_id)
    rt = Runtime(
        ctx.store,
        ctx.home,
        local_network=settings.local_network,
        parameter_address=settings.parameter_address,
    )
    provider = rt.provider(view.provider, ctx.tenant_id())
    tags = {"provisor:deployment": instance}
    async with deployment_lock.hold(
        ctx.home,
        lock_name,
        timeout=DOWN_TIMEOUT,
        waiting=(lambda: waiting(view.step)) if waiting is not None else None,
    ):
        # Recorded and tagged both: a launch cut short by a crash left only the tag.
        recorded = await asyncio.to_thread(get_deployment, ctx, name)
        found = await provider.describe(tags=tags)
        ids = {m.provider_id for m in recorded.machines if m.provider_id} | {m.id for m in found}
        await asyncio.gather(*(provider.terminate(machine_id) for machine_id in sorted(ids)))
        # What launches made for the deployment besides machines (key pairs, firewall groups).
        await provider.clean_up(tags)
        with audited(ctx, "deployment.terminated", name) as (session, audit):
            deployment = _find(session, ctx, name)
            names = [m.name for m in deployment.machines]
            hosts = session.scalars(
                select(Host.id).where(Host.tenant_id == deployment.tenant_id, Host.name.in_(names))
            ).all()
            # The machines are gone: a later machine at one of their addresses is a stranger.
            forget_host_keys(
                session,
                deployment.tenant_id,
                host_ids=hosts,
                subjects=[machine_trust_id(view.provider, machine_id) for machine_id in ids],
            )
            session.execute(delete(Host).where(Host.id.in_(hosts)))
            session.execute(
                delete(Group).where(
                    Group.tenant_id == deployment.tenant_id, Group.name == deployment_group(name)
                )
            )
            audit.details = {"machines": len(ids), "instance": instance}
            session.delete(deployment)
        deployment_lock.forget(ctx.home, lock_name)
    launched = {m.id: m.name for m in found}
    machines = [
        m.model_copy(update={"state": "terminated" if m.provider_id else "never launched"})
        for m in recorded.machines
    ]
    known = {m.provider_id for m in recorded.machines}
    machines += [  # launched, never recorded: found by the instance's tag
        MachineView(
            name=launched[i],
            node="",
            index=0,
            hostname="",
            address=None,
            state="terminated",
            provider_id=i,
            error=None,
        )
        for i in sorted(set(launched) - known)
    ]
    return recorded.model_copy(update={"state": "terminated", "machines": machines})


def request_from_catalog(
    ctx: Context,
    settings: Settings,
    blueprint: str,
    *,
    version: str | None = None,
    parameters: dict[str, str],
    name: str | None = None,
    completion: str | None = None,
    provider: str | None = None,
    lease: str | None = None,
    at: str | None = None,
    lease_end: str | None = None,
) -> DeploymentView:
    """`request_deployment` of a blueprint stored in the tenant's catalog."""
    detail, _ = load_stored_blueprint(ctx, blueprint, version)
    return request_deployment(
        ctx,
        settings,
        detail.text,
        source=f"{detail.name}@{detail.version}",
        parameters=parameters,
        name=name,
        completion=completion,
        provider=provider,
        lease=lease,
        at=at,
        lease_end=lease_end,
    )


def deployment_events(ctx: Context, name: str, *, limit: int = 200) -> list[EventView]:
    """What happened to a deployment (its `deployment.*` events), for whoever may see it:
    a requester sees its own deployment's without reading the whole audit log."""
    with ctx.store.session() as session:
        _find(session, ctx, name)
        return query_events(
            session, tenant=ctx.tenant, kinds=["deployment."], subject=name, limit=limit
        )


def report(ctx: Context, name: str, machine: str) -> bytes:
    """A machine's report archive (`tar.gz`: its scripts' output and console log).

    `machine` is looked up among the deployment's machines, never used as a path."""
    with ctx.store.session() as session:
        deployment = _find(session, ctx, name)
        names = [m.name for m in deployment.machines]
        base = reports.deployment_dir(ctx.home, name, deployment.instance)
    if machine not in names:
        raise NotFound(f"deployment {name!r} has no machine {machine!r}", field="machine")
    path = base / "reports" / f"{machine}.tar.gz"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"no report of {machine} yet: reports are written when the deployment ends its run",
            field="machine",
        ) from None


def machine_names(ctx: Context, name: str) -> list[str]:
    with ctx.store.session() as session:
        return [m.name for m in _find(session, ctx, name).machines]


__all__ = [
    "DeploymentDetail",
    "DeploymentView",
    "ParametersView",
    "decide",
    "deployment_events",
    "describe_deployment",
    "get_deployment",
    "list_deployments",
    "machine_names",
    "parameters",
    "remove_deployment",
    "report",
    "request_deployment",
    "request_from_catalog",
]
