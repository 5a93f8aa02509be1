"""trusted host keys per tenant

Trust on first use was one store for every tenant: a key one tenant's job trusted was
the key another tenant's job was checked against. Each tenant now has its own; a key
trusted before this migration stays trusted by every tenant that existed then, so no
pin is lost.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_host_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "address", "port", name="uq_host_keys_tenant_endpoint"),
    )
    op.execute(
        "INSERT INTO tenant_host_keys (tenant_id, address, port, key, first_seen) "
        "SELECT tenants.id, k.address, k.port, k.key, k.first_seen "
        "FROM known_host_keys AS k CROSS JOIN tenants"
    )
    op.drop_table("known_host_keys")
    op.rename_table("tenant_host_keys", "known_host_keys")


def downgrade() -> None:
    # One store again: of an endpoint's keys, the one trusted first.
    op.create_table(
        "shared_host_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address", "port", name="uq_known_host_keys_endpoint"),
    )
    op.execute(
        "INSERT INTO shared_host_keys (address, port, key, first_seen) "
        "SELECT address, port, key, first_seen FROM known_host_keys WHERE id IN "
        "(SELECT MIN(id) FROM known_host_keys GROUP BY address, port)"
    )
    op.drop_table("known_host_keys")
    op.rename_table("shared_host_keys", "known_host_keys")
