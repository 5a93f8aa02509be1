"""Health of deployments' machines: `provisor health`, the API, `status`, and /metrics.

Reads what the worker's health monitor records (store.health); sets a deployment's
overrides of its blueprint's checks (`provisor health set`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisor.core.access import Action
from provisor.core.blueprint import load_blueprint
from provisor.core.blueprint.health import Checks
from provisor.core.errors import InvalidInput, NotFound
from provisor.core.health import HealthState
from provisor.services.context import Context
from provisor.services.deployments import _find, _sees_all
from provisor.store.health import (
    HealthOverride,
    HealthTransition,
    InfrastructureHealth,
    MachineHealth,
)
from provisor.store.models import Event
from provisor.store.orchestration import Deployment

HISTORY_SHOWN = 20  # transitions shown per machine
MAX_LISTED = 1000  # deployments in one `provisor health` (a view, not an export)
OVERRIDABLE = ("interval", "timeout", "failures", "successes")


class ProbeView(BaseModel):
    probe: str
    ok: bool
    detail: str


class TransitionView(BaseModel):
    time: datetime
    from_state: str
    to_state: str
    incident: int
    detail: str


class MachineHealthView(BaseModel):
    name: str  # webapp-app-1
    machine: str  # app.1
    node: str
    state: str  # healthy, degraded, unhealthy, recovering, failed; "unchecked" before any
    since: datetime | None
    checked_at: datetime | None
    failures: int
    successes: int
    incident: int
    last: list[ProbeView]
    history: list[TransitionView]


class InfrastructureView(BaseModel):
    key: str
    state: str
    since: datetime
    detail: str


class DeploymentHealthView(BaseModel):
    deployment: str
    state: str  # the deployment's own
    checked: bool  # whether any of its nodes has checks
    overrides: dict[str, dict[str, Any]]
    machines: list[MachineHealthView]
    infrastructure: list[InfrastructureView]  # what is down now (checks paused)


class HealthCounts(BaseModel):
    """For /metrics: machines by health state, per deployment; what infrastructure is
    down; recoveries by how they ended (from the events)."""

    machines: dict[str, dict[str, int]]  # deployment -> state -> machines
    infrastructure_down: list[str]
    recoveries: dict[str, int]  # succeeded, failed, started


def _checked_nodes(deployment: Deployment) -> set[str]:
    try:
        blueprint = load_blueprint(deployment.blueprint_text, source=deployment.name)
    except ValueError:
        return set()
    return {name for name, node in blueprint.nodes.items() if node.checks is not None}


def _overrides(session: Session, deployment_id: int) -> dict[str, dict[str, Any]]:
    return {
        node: dict(settings)
        for node, settings in session.execute(
            select(HealthOverride.node, HealthOverride.settings).where(
                HealthOverride.deployment_id == deployment_id
            )
        )
    }


def _infrastructure(session: Session) -> list[InfrastructureView]:
    return [
        InfrastructureView(key=row.key, state=row.state, since=row.since, detail=row.detail)
        for row in session.scalars(
            select(InfrastructureHealth)
            .where(InfrastructureHealth.state == "down")
            .order_by(InfrastructureHealth.key)
        )
    ]


def _machine_views(
    session: Session, deployment: Deployment, checked: set[str]
) -> list[MachineHealthView]:
    rows = {
        row.machine: row
        for row in session.scalars(
            select(MachineHealth).where(MachineHealth.deployment_id == deployment.id)
        )
    }
    views = []
    for machine in sorted(deployment.machines, key=lambda m: (m.node, m.index)):
        if machine.node not in checked:
            continue
        row = rows.get(machine.name)
        history = session.scalars(
            select(HealthTransition)
            .where(
                HealthTransition.deployment_id == deployment.id,
                HealthTransition.machine == machine.name,
            )
            .order_by(HealthTransition.id.desc())
            .limit(HISTORY_SHOWN)
        ).all()
        probes = (row.results or {}).get("probes", []) if row is not None else []
        views.append(
            MachineHealthView(
                name=machine.name,
                machine=f"{machine.node}.{machine.index}",
                node=machine.node,
                state=row.state if row is not None else "unchecked",
                since=row.since if row is not None else None,
                checked_at=row.checked_at if row is not None else None,
                failures=row.failures if row is not None else 0,
                successes=row.successes if row is not None else 0,
                incident=row.incident if row is not None else 0,
                last=[
                    ProbeView(probe=str(p["probe"]), ok=bool(p["ok"]), detail=str(p["detail"]))
                    for p in probes[:20]
                ],
                history=[
                    TransitionView(
                        time=t.time,
                        from_state=t.from_state,
                        to_state=t.to_state,
                        incident=t.incident,
                        detail=t.detail,
                    )
                    for t in reversed(history)
                ],
            )
        )
    return views


def _view(session: Session, deployment: Deployment) -> DeploymentHealthView:
    checked = _checked_nodes(deployment)
    return DeploymentHealthView(
        deployment=deployment.name,
        state=deployment.state,
        checked=bool(checked),
        overrides=_overrides(session, deployment.id),
        machines=_machine_views(session, deployment, checked),
        infrastructure=_infrastructure(session),
    )


def deployment_health(ctx: Context, name: str) -> DeploymentHealthView:
    """The health of a deployment's machines (tenant-scoped; a requester's own only)."""
    with ctx.store.session() as session:
        return _view(session, _find(session, ctx, name))


def all_health(ctx: Context) -> list[DeploymentHealthView]:
    """Every deployment of the tenant that has checks (a requester's own only)."""
    statement = select(Deployment).where(Deployment.tenant_id == ctx.tenant_id())
    if not _sees_all(ctx):
        statement = statement.where(Deployment.owner == ctx.actor)
    with ctx.store.session() as session:
        rows = session.scalars(statement.order_by(Deployment.id).limit(MAX_LISTED))
        views = [_view(session, d) for d in rows]
        return [v for v in views if v.checked]


def set_override(
    ctx: Context, name: str, node: str, settings: dict[str, Any], *, reset: bool = False
) -> DeploymentHealthView:
    """Change a deployment's checks of `node` ("*": every node with checks) from its
    blueprint's: interval, timeout, failures, successes, `checks` and `recovery` on or
    off. Checked against every node's checks as the monitor will apply them."""
    ctx.require(Action.deployments_manage, name)
    unknown = sorted(set(settings) - {*OVERRIDABLE, "checks", "recovery"})
    if unknown:
        raise InvalidInput(f"cannot override {', '.join(unknown)}", field="settings")
    with ctx.store.session() as session:
        deployment = _find(session, ctx, name)
        checked = _checked_nodes(deployment)
        if node != "*" and node not in checked:
            known = ", ".join(sorted(checked)) or "none"
            raise NotFound(
                f"{name} has no node {node!r} with checks (nodes with checks: {known})",
                field="node",
            )
        row = session.scalar(
            select(HealthOverride).where(
                HealthOverride.deployment_id == deployment.id, HealthOverride.node == node
            )
        )
        merged = {} if reset or row is None else dict(row.settings)
        merged.update(settings)
        _validate(deployment, checked, node, merged, _overrides(session, deployment.id))
        if row is None:
            row = HealthOverride(deployment_id=deployment.id, node=node, settings=merged)
            session.add(row)
        else:
            row.settings = merged
        session.flush()
        from provisor.events import record_event

        record_event(
            session,
            actor=ctx.actor,
            tenant=ctx.tenant,
            kind="health.settings",
            subject=name,
            details={"severity": "info", "deployment": name, "node": node, "settings": merged},
        )
        return _view(session, deployment)


def _validate(
    deployment: Deployment,
    checked: set[str],
    node: str,
    merged: dict[str, Any],
    others: dict[str, dict[str, Any]],
) -> None:
    blueprint = load_blueprint(deployment.blueprint_text, source=deployment.name)
    overrides = {**others, node: merged}
    for name in sorted(checked):
        checks = blueprint.nodes[name].checks
        assert checks is not None
        changes = {**overrides.get("*", {}), **overrides.get(name, {})}
        values = {k: v for k, v in changes.items() if k in OVERRIDABLE}
        try:
            Checks.model_validate({**checks.model_dump(exclude_unset=True), **values})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "checks"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise InvalidInput(f"node {name}: {where}: {message}", field=where) from None


def counts(ctx: Context) -> HealthCounts:
    """Machines by health state per deployment of the tenant, infrastructure down, and
    recoveries by how they ended: what /metrics shows of health."""
    ctx.require(Action.deployments_read)
    with ctx.store.session() as session:
        machines: dict[str, dict[str, int]] = {}
        for deployment, state, number in session.execute(
            select(Deployment.name, MachineHealth.state, func.count())
            .join(Deployment, Deployment.id == MachineHealth.deployment_id)
            .where(Deployment.tenant_id == ctx.tenant_id())
            .group_by(Deployment.name, MachineHealth.state)
        ):
            machines.setdefault(deployment, {s.value: 0 for s in HealthState})[state] = number
        recoveries = {
            kind.removeprefix("recovery."): number
            for kind, number in session.execute(
                select(Event.kind, func.count())
                .where(
                    Event.tenant == ctx.tenant,
                    Event.kind.in_(["recovery.started", "recovery.succeeded", "recovery.failed"]),
                )
                .group_by(Event.kind)
            )
        }
        return HealthCounts(
            machines=machines,
            infrastructure_down=[v.key for v in _infrastructure(session)],
            recoveries={k: recoveries.get(k, 0) for k in ("started", "succeeded", "failed")},
        )


__all__ = [
    "DeploymentHealthView",
    "HealthCounts",
    "MachineHealthView",
    "all_health",
    "counts",
    "deployment_health",
    "set_override",
]
