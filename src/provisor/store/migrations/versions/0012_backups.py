"""backups: stores, backups and their objects, schedule overrides and marks

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "backup_stores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        _when("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_backup_stores_tenant_name"),
    )
    with op.batch_alter_table("backup_stores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_stores_tenant_id"), ["tenant_id"])
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("instance", sa.String(length=32), nullable=False),
        sa.Column("machine", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        _when("scheduled_for"),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("data_key", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _when("created_at", nullable=False),
        _when("finished_at"),
        _when("verified_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("backup_id", name="uq_backups_backup_id"),
        sa.UniqueConstraint("workflow_id", name="uq_backups_workflow"),
    )
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backups_tenant_id"), ["tenant_id"])
        batch_op.create_index(batch_op.f("ix_backups_deployment"), ["deployment"])
        batch_op.create_index(batch_op.f("ix_backups_instance"), ["instance"])
    op.create_table(
        "backup_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backup_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("plain_size", sa.BigInteger(), nullable=False),
        sa.Column("plain_sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _when("verified_at"),
        sa.ForeignKeyConstraint(["backup_pk"], ["backups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("backup_pk", "name", name="uq_backup_objects_name"),
    )
    with op.batch_alter_table("backup_objects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_objects_backup_pk"), ["backup_pk"])
    op.create_table(
        "backup_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instance", "node", name="uq_backup_overrides_node"),
    )
    with op.batch_alter_table("backup_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_overrides_tenant_id"), ["tenant_id"])
    op.create_table(
        "backup_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=32), nullable=False),
        sa.Column("machine", sa.String(length=128), nullable=False),
        _when("last_due", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instance", "machine", name="uq_backup_marks_machine"),
    )


def downgrade() -> None:
    op.drop_table("backup_marks")
    op.drop_table("backup_overrides")
    op.drop_table("backup_objects")
    op.drop_table("backups")
    op.drop_table("backup_stores")
