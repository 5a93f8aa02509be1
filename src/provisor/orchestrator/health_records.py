"""What the health monitor and the recovery workflow keep: machine health rows, their
bounded history, infrastructure state, and the events (COMMON contract) that say so.

Each function is one transaction, run in a thread; a state change, its history row and
its event commit together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisor.core.blueprint import load_blueprint
from provisor.core.blueprint.health import Checks, RecoveryStep
from provisor.core.errors import InvalidInput
from provisor.core.health import Health, HealthState
from provisor.events import record_event
from provisor.store import Store
from provisor.store.health import (
    HISTORY_LIMIT,
    HealthOverride,
    HealthTransition,
    InfrastructureHealth,
    MachineHealth,
)
from provisor.store.models import Tenant, utcnow
from provisor.store.orchestration import Deployment, Machine

log = logging.getLogger(__name__)

ACTOR = "health"


@dataclass(frozen=True)
class NodeHealth:
    """A node's checks and ladder, with the deployment's overrides applied."""

    checks: Checks
    ladder: tuple[RecoveryStep, ...]
    recovery: bool = True  # the ladder is climbed (an override may turn it off)


@dataclass(frozen=True)
class Watched:
    """A deployment whose machines are checked."""

    id: int
    instance: str
    name: str
    tenant_id: int
    tenant: str
    provider: str
    workflow_id: str
    nodes: dict[str, NodeHealth]


def short_name(machine: Machine) -> str:
    """`app.1`: how events and incident keys name a machine."""
    return f"{machine.node}.{machine.index}"


def incident_key(instance: str, machine: str) -> str:
    return f"health:{instance}:{machine}"


def node_health(
    blueprint_text: str, source: str, overrides: dict[str, dict[str, Any]]
) -> dict[str, NodeHealth]:
    """Each node with checks: the blueprint's checks and ladder, then the overrides of
    every node ("*") and of the node itself; a node whose checks are off is left out."""
    blueprint = load_blueprint(blueprint_text, source=source)
    nodes = {}
    for name, node in blueprint.nodes.items():
        if node.checks is None:
            continue
        changes = {**overrides.get("*", {}), **overrides.get(name, {})}
        if changes.get("checks") is False:
            continue
        settings = {k: v for k, v in changes.items() if k not in ("checks", "recovery")}
        checks = Checks.model_validate({**node.checks.model_dump(exclude_unset=True), **settings})
        nodes[name] = NodeHealth(checks, node.recovery, changes.get("recovery") is not False)
    return nodes


def nodes_of(session: Session, deployment: Deployment) -> dict[str, NodeHealth]:
    """`node_health` of one deployment, its overrides read in `session`."""
    overrides = {
        node: dict(settings)
        for node, settings in session.execute(
            select(HealthOverride.node, HealthOverride.settings).where(
                HealthOverride.deployment_id == deployment.id
            )
        )
    }
    try:
        return node_health(deployment.blueprint_text, deployment.name, overrides)
    except ValueError:  # an override the blueprint's checks refuse: its own
        return node_health(deployment.blueprint_text, deployment.name, {})


def watched(store: Store, known: dict[str, Watched]) -> list[Watched]:
    """The ready deployments with checks; `known` (by instance) saves parsing again
    those whose overrides did not change."""
    with store.session() as session:
        rows = session.execute(
            select(
                Deployment.id,
                Deployment.instance,
                Deployment.name,
                Deployment.tenant_id,
                Tenant.name,
                Deployment.provider,
                Deployment.workflow_id,
            )
            .join(Tenant, Tenant.id == Deployment.tenant_id)
            .where(Deployment.state == "ready")
        ).all()
        overrides: dict[int, dict[str, dict[str, Any]]] = {}
        for deployment_id, node, settings in session.execute(
            select(HealthOverride.deployment_id, HealthOverride.node, HealthOverride.settings)
        ):
            overrides.setdefault(deployment_id, {})[node] = dict(settings)
        found, used = [], {}
        for d_id, instance, name, tenant_id, tenant, provider, workflow_id in rows:
            key = f"{instance}:{sorted(overrides.get(d_id, {}).items())!r}"
            entry = known.get(key)
            if entry is None:
                text = session.scalar(
                    select(Deployment.blueprint_text).where(Deployment.id == d_id)
                )
                nodes = _checks(text or "", name, overrides.get(d_id, {}))
                entry = known[key] = Watched(
                    d_id, instance, name, tenant_id, tenant, provider, workflow_id or "", nodes
                )
            used[key] = entry
            if entry.nodes:
                found.append(entry)
        known.clear()  # what is no longer watched (removed, overrides changed) is dropped
        known.update(used)
        return found


def _checks(
    blueprint_text: str, name: str, overrides: dict[str, dict[str, Any]]
) -> dict[str, NodeHealth]:
    """`node_health`; none, said once (the caller keeps the answer), for a deployment
    whose blueprint cannot be read: one such record must not stop the checks of all."""
    try:
        try:
            return node_health(blueprint_text, name, overrides)
        except ValueError:  # an override the blueprint's checks refuse: its own
            return node_health(blueprint_text, name, {})
    except InvalidInput as exc:
        log.warning(
            "deployment %s has no health checks: its blueprint is unreadable: %s", name, exc
        )
        return {}


def machines_of(store: Store, deployment_id: int) -> list[Machine]:
    """The deployment's machines that run (launched and configured)."""
    with store.session() as session:
        machines = list(
            session.scalars(
                select(Machine).where(
                    Machine.deployment_id == deployment_id,
                    Machine.state == "ready",
                    Machine.provider_id.is_not(None),
                    Machine.address.is_not(None),
                )
            )
        )
        session.expunge_all()
        return machines


def health_of(store: Store, deployment_id: int) -> dict[str, tuple[Health, datetime | None]]:
    """Each machine's recorded health and when it was last checked, by machine name."""
    with store.session() as session:
        return {
            row.machine: (
                Health(HealthState(row.state), row.failures, row.successes, row.incident),
                row.checked_at,
            )
            for row in session.scalars(
                select(MachineHealth).where(MachineHealth.deployment_id == deployment_id)
            )
        }


_EVENTS: dict[HealthState, tuple[str, str]] = {  # entering a state: kind, severity
    HealthState.degraded: ("health.degraded", "warning"),
    HealthState.unhealthy: ("health.unhealthy", "critical"),
}


def _event(
    session: Session,
    deployment: Watched | Deployment,
    machine: Machine,
    kind: str,
    severity: str,
    incident: int | None,
    state: str | None,
    result: str = "ok",
    **more: Any,
) -> None:
    if isinstance(deployment, Deployment):
        tenant = session.scalar(select(Tenant.name).where(Tenant.id == deployment.tenant_id))
    else:
        tenant = deployment.tenant
    short = short_name(machine)
    details: dict[str, Any] = {
        "severity": severity,
        "deployment": deployment.name,
        "node": machine.node,
        "machine": short,
        **more,
    }
    if incident is not None and state is not None:
        details.update(incident=incident_key(deployment.instance, short), incident_state=state)
        details["incident_number"] = incident
    record_event(
        session,
        actor=ACTOR,
        tenant=tenant or "default",
        kind=kind,
        subject=machine.name,
        outcome=result,
        details=details,
    )


def save(
    store: Store,
    deployment: Watched | Deployment,
    machine: Machine,
    before: Health | None,
    after: Health,
    *,
    results: list[dict[str, object]] | None,
    detail: str = "",
    checked: bool = True,
    event: tuple[str, str, str | None, dict[str, Any]] | None = None,
) -> None:
    """Record a machine's health after a round (or a recovery's move): the row, and on a
    change of state its history (the last HISTORY_LIMIT kept) and its event. `event`
    (kind, severity, incident state, details) is recorded besides, whatever changed."""
    now = utcnow()
    with store.session() as session:
        row = session.scalar(
            select(MachineHealth).where(
                MachineHealth.deployment_id == deployment.id,
                MachineHealth.machine == machine.name,
            )
        )
        if row is None:
            row = MachineHealth(
                deployment_id=deployment.id, machine=machine.name, node=machine.node, since=now
            )
            session.add(row)
        changed = before is None or before.state is not after.state
        if changed and before is not None:
            row.since = now
        row.state, row.failures, row.successes = after.state.value, after.failures, after.successes
        row.incident = after.incident
        if checked:
            row.checked_at = now
        if results is not None:
            row.results = {"probes": results}
        if changed and before is not None:
            session.add(
                HealthTransition(
                    deployment_id=deployment.id,
                    machine=machine.name,
                    time=now,
                    from_state=before.state.value,
                    to_state=after.state.value,
                    incident=after.incident,
                    detail=detail[:2000],
                )
            )
            session.flush()
            _trim(session, deployment.id, machine.name)
            _state_event(session, deployment, machine, before, after, detail)
        if event is not None:
            kind, severity, state, more = event
            failed = kind == "recovery.failed" or more.get("outcome", "recovered") != "recovered"
            result = "failed" if failed else "ok"
            _event(
                session, deployment, machine, kind, severity, after.incident, state, result, **more
            )


def _state_event(
    session: Session,
    deployment: Watched | Deployment,
    machine: Machine,
    before: Health,
    after: Health,
    detail: str,
) -> None:
    if after.state in _EVENTS:
        kind, severity = _EVENTS[after.state]
        opens = after.state is HealthState.unhealthy
        _event(
            session,
            deployment,
            machine,
            kind,
            severity,
            after.incident if opens else None,
            "open" if opens else None,
            result="failed",
            reason=detail,
        )
    elif after.state is HealthState.healthy and before.in_incident:
        _event(session, deployment, machine, "health.recovered", "info", after.incident, "resolved")


def _trim(session: Session, deployment_id: int, machine: str) -> None:
    """Keep the machine's last HISTORY_LIMIT transitions."""
    oldest_kept = session.scalar(
        select(HealthTransition.id)
        .where(HealthTransition.deployment_id == deployment_id, HealthTransition.machine == machine)
        .order_by(HealthTransition.id.desc())
        .offset(HISTORY_LIMIT - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(HealthTransition).where(
                HealthTransition.deployment_id == deployment_id,
                HealthTransition.machine == machine,
                HealthTransition.id < oldest_kept,
            )
        )


# Infrastructure


def infrastructure_changed(
    store: Store, key: str, tenant: str, down: bool, detail: str, what: str
) -> bool:
    """Record whether `key` (a provider's API, the controller's disk or database) answers;
    on a change, one event (infrastructure.down, critical, opening an incident; or
    infrastructure.up resolving it). True when it changed."""
    now = utcnow()
    state = "down" if down else "up"
    with store.session() as session:
        row = session.get(InfrastructureHealth, key)
        if row is None:
            if not down:
                return False  # up, as everything is until it is seen down
            row = InfrastructureHealth(key=key, state="up", since=now, outages=0, detail="")
            session.add(row)
        if row.state == state:
            return False
        if down:
            row.outages += 1
        row.state, row.since, row.detail = state, now, detail[:2000]
        record_event(
            session,
            actor=ACTOR,
            tenant=tenant,
            kind="infrastructure.down" if down else "infrastructure.up",
            subject=key,
            outcome="failed" if down else "ok",
            details={
                "severity": "critical" if down else "info",
                "what": what,
                "incident": f"infrastructure:{key}:{row.outages}",
                "incident_state": "open" if down else "resolved",
                **({"reason": detail[:2000]} if detail else {}),
            },
        )
        return True


def infrastructure_down(store: Store) -> dict[str, str]:
    """What is recorded as down now: key -> why."""
    with store.session() as session:
        return {
            row.key: row.detail
            for row in session.scalars(
                select(InfrastructureHealth).where(InfrastructureHealth.state == "down")
            )
        }


__all__ = [
    "NodeHealth",
    "Watched",
    "health_of",
    "incident_key",
    "infrastructure_changed",
    "infrastructure_down",
    "machines_of",
    "node_health",
    "save",
    "short_name",
    "watched",
]
