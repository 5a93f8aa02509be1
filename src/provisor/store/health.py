"""Tables of health checks: each machine's health, its recent transitions, the state of
the infrastructure the checks depend on, and per-deployment overrides of the checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from provisor.store import orchestration  # noqa: F401 - the deployments table ours refer to
from provisor.store.models import Base, utcnow

HISTORY_LIMIT = 50
"""Transitions kept per machine: older ones are removed as new ones are recorded."""


class MachineHealth(Base):
    """A machine's health now (core.health.Health) and its last check results."""

    __tablename__ = "machine_health"
    __table_args__ = (UniqueConstraint("deployment_id", "machine", name="uq_machine_health"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    machine: Mapped[str] = mapped_column(String(128))  # e.g. webapp-app-1
    node: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="healthy")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    incident: Mapped[int] = mapped_column(Integer, default=0)
    since: Mapped[datetime] = mapped_column(default=utcnow)  # in this state since
    checked_at: Mapped[datetime | None] = mapped_column()
    # [{"probe": "http :8080/health", "ok": false, "detail": "..."}], bounded per probe
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)


class HealthTransition(Base):
    """One change of a machine's health state (the last HISTORY_LIMIT per machine)."""

    __tablename__ = "health_history"
    __table_args__ = (Index("ix_health_history_machine", "deployment_id", "machine", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    machine: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    incident: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")


class InfrastructureHealth(Base):
    """Whether something every check depends on answers: a provider's API, the
    controller's disk, its database. Kept so one outage is one alert, across restarts."""

    __tablename__ = "infrastructure_health"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # provider:1:local
    state: Mapped[str] = mapped_column(String(8), default="up")  # up, down
    since: Mapped[datetime] = mapped_column(default=utcnow)
    outages: Mapped[int] = mapped_column(Integer, default=0)  # numbers the incidents
    detail: Mapped[str] = mapped_column(Text, default="")


class HealthOverride(Base):
    """A deployment's own settings of its nodes' checks (`provisor health set`): the
    blueprint's, changed for this deployment only. `node` "*" is every node."""

    __tablename__ = "health_overrides"
    __table_args__ = (UniqueConstraint("deployment_id", "node", name="uq_health_overrides"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    node: Mapped[str] = mapped_column(String(64))
    # interval, timeout, failures, successes, checks (on/off), recovery (on/off)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


__all__ = [
    "HISTORY_LIMIT",
    "HealthOverride",
    "HealthTransition",
    "InfrastructureHealth",
    "MachineHealth",
]
