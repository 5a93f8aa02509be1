"""health: machine health, its history, infrastructure health, per-deployment overrides

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _deployment() -> list[Any]:
    return [
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
    ]


def upgrade() -> None:
    op.create_table(
        "machine_health",
        sa.Column("id", sa.Integer(), nullable=False),
        *_deployment(),
        sa.Column("machine", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("incident", sa.Integer(), nullable=False),
        _when("since"),
        _when("checked_at", nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "machine", name="uq_machine_health"),
    )
    with op.batch_alter_table("machine_health", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_machine_health_deployment_id"), ["deployment_id"])
    op.create_table(
        "health_history",
        sa.Column("id", sa.Integer(), nullable=False),
        *_deployment(),
        sa.Column("machine", sa.String(length=128), nullable=False),
        _when("time"),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("incident", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("health_history", schema=None) as batch_op:
        batch_op.create_index(
            "ix_health_history_machine", ["deployment_id", "machine", "id"], unique=False
        )
    op.create_table(
        "infrastructure_health",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        _when("since"),
        sa.Column("outages", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "health_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        *_deployment(),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "node", name="uq_health_overrides"),
    )
    with op.batch_alter_table("health_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_health_overrides_deployment_id"), ["deployment_id"])


def downgrade() -> None:
    op.drop_table("health_overrides")
    op.drop_table("infrastructure_health")
    op.drop_table("health_history")
    op.drop_table("machine_health")
