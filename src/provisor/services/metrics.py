"""What `/metrics` shows, in the Prometheus text format: read from the database at each
scrape into a fresh registry (no counters kept in the server's memory, so every server
process answers the same, and a restart loses nothing).

Who may: a caller who may read the tenant's deployments (`deployments.read`: admin,
operator, approver, auditor). What: that tenant's objects only (every family has a
`tenant` label, for scrapes of several tenants into one Prometheus). The orchestrator's
workflow queue is shared by every tenant: only an admin sees its depth.

Families:
    provisor_deployments{tenant,state}                   deployments by state
    provisor_machines{tenant,state}                      machines by state
    provisor_jobs{tenant,state}                          fleet jobs by state
    provisor_lease_seconds_left{tenant,deployment}       per deployment with a lease
    provisor_workflows{status}                           PENDING / ENQUEUED (admin)
    provisor_machine_health{tenant,deployment,health}    checked machines by health state
    provisor_infrastructure_down{tenant,what}            1 per infrastructure check failing
    provisor_recoveries{tenant,result}                   recoveries started/succeeded/failed
    provisor_backups{tenant,state}                       backups by state (good, bad, ...)
    provisor_backup_age_seconds{tenant,deployment,machine}  since the newest good backup
    provisor_scrape_timestamp_seconds                    when this was read
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisor.core.access import Action, Role
from provisor.core.lease import seconds_left
from provisor.services import health
from provisor.services.context import Context
from provisor.settings import Settings
from provisor.store.backups import Backup
from provisor.store.models import Job
from provisor.store.orchestration import Deployment, Machine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKFLOW_LIMIT = 10_000  # workflows counted per status at most (the count says so: the limit)
_LEASES = 5_000  # deployments with a lease shown at most (the soonest to end first)
log = logging.getLogger(__name__)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _by_state(name: str, tenant: str, rows: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    family = _gauge(f"provisor_{name}", f"{name.capitalize()} by state.", ["tenant", "state"])
    for state, count in rows:
        family.add_metric([tenant, str(state)], float(count))
    return family


def _families(ctx: Context, settings: Settings) -> list[Metric]:
    tenant, tenant_id = ctx.tenant, ctx.tenant_id()
    now = datetime.now(UTC)
    families: list[Metric] = []
    with ctx.store.session() as session:
        deployments = session.execute(
            select(Deployment.state, func.count())
            .where(Deployment.tenant_id == tenant_id)
            .group_by(Deployment.state)
        )
        families.append(_by_state("deployments", tenant, deployments.tuples()))
        machines = session.execute(
            select(Machine.state, func.count())
            .join(Deployment, Machine.deployment_id == Deployment.id)
            .where(Deployment.tenant_id == tenant_id)
            .group_by(Machine.state)
        )
        families.append(_by_state("machines", tenant, machines.tuples()))
        jobs = session.execute(
            select(Job.state, func.count()).where(Job.tenant_id == tenant_id).group_by(Job.state)
        )
        families.append(_by_state("jobs", tenant, jobs.tuples()))
        leases = _gauge(
            "provisor_lease_seconds_left",
            "Seconds until the deployment's lease ends (0 once it has).",
            ["tenant", "deployment"],
        )
        for name, expires in session.execute(
            select(Deployment.name, Deployment.lease_expires_at)
            .where(Deployment.tenant_id == tenant_id, Deployment.lease_expires_at.is_not(None))
            .order_by(Deployment.lease_expires_at)
            .limit(_LEASES)
        ):
            leases.add_metric([tenant, name], float(seconds_left(expires, now) or 0))
        families.append(leases)
        families.extend(_backups(session, tenant, tenant_id, now))
    families.extend(_health(ctx))
    if ctx.role is None or ctx.role is Role.admin:
        families.append(_workflows(settings))
    stamp = _gauge("provisor_scrape_timestamp_seconds", "When these values were read.", [])
    stamp.add_metric([], now.timestamp())
    families.append(stamp)
    return families


def _backups(
    session: Session, tenant: str, tenant_id: int, now: datetime
) -> list[GaugeMetricFamily]:
    states = session.execute(
        select(Backup.state, func.count())
        .where(Backup.tenant_id == tenant_id)
        .group_by(Backup.state)
    )
    age = _gauge(
        "provisor_backup_age_seconds",
        "Seconds since the machine's newest good backup finished.",
        ["tenant", "deployment", "machine"],
    )
    newest = session.execute(
        select(Backup.deployment, Backup.machine, func.max(Backup.finished_at))
        .where(Backup.tenant_id == tenant_id, Backup.state == "good")
        .group_by(Backup.deployment, Backup.machine)
        .limit(_LEASES)
    )
    for deployment, machine, finished in newest:
        if finished is not None:
            finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
            age.add_metric([tenant, deployment, machine], (now - finished).total_seconds())
    return [_by_state("backups", tenant, states.tuples()), age]


def _health(ctx: Context) -> list[GaugeMetricFamily]:
    counted = health.counts(ctx)
    machines = _gauge(
        "provisor_machine_health",
        "Checked machines by health state.",
        ["tenant", "deployment", "health"],
    )
    for deployment, states in counted.machines.items():
        for state, count in states.items():
            machines.add_metric([ctx.tenant, deployment, state], float(count))
    down = _gauge(
        "provisor_infrastructure_down",
        "Infrastructure checks failing now (1 each).",
        ["tenant", "what"],
    )
    for what in counted.infrastructure_down:
        down.add_metric([ctx.tenant, what], 1.0)
    recoveries = _gauge(
        "provisor_recoveries", "Recoveries by how they ended.", ["tenant", "result"]
    )
    for result, count in counted.recoveries.items():
        recoveries.add_metric([ctx.tenant, result], float(count))
    return [machines, down, recoveries]


def _workflows(settings: Settings) -> GaugeMetricFamily:
    """The orchestrator's workflows waiting or running, from DBOS's own tables."""
    from provisor.orchestrator.worker import workflow_counts

    family = _gauge(
        "provisor_workflows",
        f"Orchestrator workflows by status (counted up to {WORKFLOW_LIMIT}).",
        ["status"],
    )
    for status, count in workflow_counts(settings, ["PENDING", "ENQUEUED"], WORKFLOW_LIMIT).items():
        family.add_metric([status], float(count))
    return family


class _Snapshot(Collector):
    """The families read once, handed to the registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def metrics(ctx: Context, settings: Settings) -> bytes:
    """The tenant's metrics, in the Prometheus text format."""
    ctx.require(Action.deployments_read, "metrics")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(_families(ctx, settings)))
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "metrics"]
