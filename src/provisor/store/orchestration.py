"""Tables of the orchestrator: deployments, their machines and runtime parameters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisor.store.models import Base, utcnow


def new_instance() -> str:
    return uuid.uuid4().hex


class Deployment(Base):
    """One instance of a blueprint: its inputs, its state and its outputs."""

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_deployments_tenant_name"),
        UniqueConstraint("instance", name="uq_deployments_instance"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Never reused, unlike `id` (SQLite may give a removed row's id to the next one):
    # what machine tokens, workflow ids and launch tokens are bound to.
    instance: Mapped[str] = mapped_column(String(32), default=new_instance)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    blueprint: Mapped[str] = mapped_column(String(128))
    blueprint_version: Mapped[str] = mapped_column(String(64))
    blueprint_text: Mapped[str] = mapped_column(Text)  # exactly what was deployed
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # secrets sealed
    completion: Mapped[str | None] = mapped_column(String(64))  # hostname completion for '#'
    provider: Mapped[str] = mapped_column(String(64))
    # scheduled, requested, awaiting_approval, deploying, ready, failed, rejected,
    # stopping, stopped, starting, terminating, terminated
    state: Mapped[str] = mapped_column(String(24), default="requested")
    step: Mapped[str] = mapped_column(String(200), default="")  # what the workflow is doing
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    workflow_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    lease_policy: Mapped[str | None] = mapped_column(String(16))  # stop | terminate at the end
    # The expiry a notice was given for, and the one acted on: a changed expiry (an
    # extension) is noticed and acted on afresh.
    lease_noticed_for: Mapped[datetime | None] = mapped_column()
    lease_ended_for: Mapped[datetime | None] = mapped_column()
    starts_at: Mapped[datetime | None] = mapped_column()  # a scheduled deployment's start
    # The stop or start workflow under way (`stopping`/`starting`): a repeated command
    # enqueues the same one, never a second.
    lifecycle_workflow_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    machines: Mapped[list[Machine]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", order_by="Machine.id"
    )


class Machine(Base):
    """One provisioned server of a deployment."""

    __tablename__ = "machines"
    __table_args__ = (UniqueConstraint("deployment_id", "name", name="uq_machines_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    node: Mapped[str] = mapped_column(String(64))
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    hostname: Mapped[str] = mapped_column(String(253))
    token: Mapped[str] = mapped_column(String(200))  # the provider's idempotency key
    provider_id: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    login_user: Mapped[str] = mapped_column(String(64), default="root")
    # planned, launching, running, configuring, ready, failed, stopped, terminated
    state: Mapped[str] = mapped_column(String(24), default="planned")
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="machines")


class RuntimeParameter(Base):
    """A value a machine published (`provisor-param set`), e.g. `db.1.ready`."""

    __tablename__ = "runtime_parameters"
    __table_args__ = (
        UniqueConstraint("deployment_id", "key", name="uq_runtime_parameters_key"),
        Index("ix_runtime_parameters_deployment", "deployment_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))  # node.index.name
    value: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(128))  # machine name, or "provisor"
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ParameterWait(Base):
    """Who is waiting on which runtime parameter right now (for `provisor params`)."""

    __tablename__ = "parameter_waits"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(200))
    waiter: Mapped[str] = mapped_column(String(128))  # machine name or "provisor"
    since: Mapped[datetime] = mapped_column(default=utcnow)
