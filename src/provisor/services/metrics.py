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
    provisor_scrape_timestamp_seconds                    when this was read
Reserved for the other Day-2 features (MERGE: their helpers add them in `_families`):
    provisor_machines_by_health{tenant,health}           health checks
    provisor_backups{tenant,result}, provisor_backup_age_seconds{tenant,deployment,machine}
    provisor_recoveries{tenant,step,result}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from provisor.core.access import Action, Role
from provisor.core.lease import seconds_left
from provisor.services.context import Context
from provisor.settings import Settings
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
        # MERGE(i16 health): provisor_machines_by_health{tenant,health} here.
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
        # MERGE(i16 backups): provisor_backups{tenant,result} and
        # provisor_backup_age_seconds{tenant,deployment,machine} here.
        # MERGE(i16 recovery): provisor_recoveries{tenant,step,result} here.
    if ctx.role is None or ctx.role is Role.admin:
        families.append(_workflows(settings))
    stamp = _gauge("provisor_scrape_timestamp_seconds", "When these values were read.", [])
    stamp.add_metric([], now.timestamp())
    families.append(stamp)
    return families


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
