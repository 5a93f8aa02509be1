"""Database rows as the orchestrator leaves them, for tests that need one without a run."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from provisor.store import Store
from provisor.store.models import Tenant
from provisor.store.orchestration import Deployment, Machine


def add_deployment(
    store: Store,
    name: str,
    *,
    tenant: str = "default",
    provider: str = "local",
    machines: Sequence[tuple[str, int]] = (),
) -> int:
    """A ready deployment of `webapp` (its tenant made when missing) with machines
    `NAME-NODE-INDEX` for each (node, index); its id."""
    with store.session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tenant_id is None:
            row = Tenant(name=tenant)
            session.add(row)
            session.flush()
            tenant_id = row.id
        deployment = Deployment(
            tenant_id=tenant_id,
            name=name,
            owner="tester",
            blueprint="webapp",
            blueprint_version="1.0",
            blueprint_text="name: webapp\n",
            inputs={},
            provider=provider,
            state="ready",
        )
        session.add(deployment)
        session.flush()
        for node, index in machines:
            deployment.machines.append(
                Machine(
                    node=node,
                    index=index,
                    name=f"{name}-{node}-{index}",
                    hostname=node,
                    token=f"t-{name}-{node}-{index}",
                )
            )
        return deployment.id


def instance_of(store: Store, deployment_id: int) -> str:
    """The deployment's instance identity (what its machines' tokens name)."""
    with store.session() as session:
        return session.scalars(
            select(Deployment.instance).where(Deployment.id == deployment_id)
        ).one()
