"""host keys belong to what they identify, not to an address

A trusted key was recorded for a tenant's `address:port`, so a new machine at a
recycled cloud address, or a host added where a removed one was, was judged by the
key of the one before. A key now belongs to a subject: an inventory host
(`host:<id>`), a deployment's machine (`machine:<provider>/<instance id>`), or an
endpoint outside the inventory (`addr:<address>:<port>`), and to its inventory host
(`host_id`, removed with it).

Existing keys move to what they identified: a key of an address that belongs to one or
more of the tenant's inventory hosts goes to each of them (to the machine, for a host
that is a live machine of a deployment); a key of an address no host has stays with
the address.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The subject formats as of this revision (provisor.fleet.transport makes them); written
# out here so that the migration never changes with the code.


def _host(host_id: int) -> str:
    return f"host:{host_id}"


def _machine(provider: str, instance_id: str) -> str:
    return f"machine:{provider}/{instance_id}"


def _address(address: str, port: int) -> str:
    return f"addr:{address}:{port}"


def _subject_rows(connection: sa.Connection) -> list[dict[str, Any]]:
    old = sa.table(
        "known_host_keys",
        sa.column("tenant_id", sa.Integer()),
        sa.column("address", sa.String()),
        sa.column("port", sa.Integer()),
        sa.column("key", sa.Text()),
        sa.column("first_seen", sa.DateTime(timezone=True)),  # read back as datetimes
    )
    keys = connection.execute(
        sa.select(old.c.tenant_id, old.c.address, old.c.port, old.c.key, old.c.first_seen)
    ).all()
    hosts: dict[tuple[int, str, int], list[tuple[int, str]]] = {}
    for host_id, tenant_id, name, address, port in connection.execute(
        sa.text("SELECT id, tenant_id, name, address, port FROM hosts")
    ):
        hosts.setdefault((tenant_id, address, port), []).append((host_id, name))
    machines = {
        (tenant_id, name): _machine(provider, instance_id)
        for tenant_id, name, provider, instance_id in connection.execute(
            sa.text(
                "SELECT d.tenant_id, m.name, d.provider, m.provider_id FROM machines AS m "
                "JOIN deployments AS d ON d.id = m.deployment_id "
                "WHERE m.provider_id IS NOT NULL AND m.state != 'terminated' ORDER BY m.id"
            )
        )
    }
    rows = []
    for tenant_id, address, port, key, first_seen in keys:
        base = {
            "tenant_id": tenant_id,
            "address": address,
            "port": port,
            "key": key,
            "first_seen": first_seen,
        }
        owners = hosts.get((tenant_id, address, port), [])
        for host_id, name in owners:
            subject = machines.get((tenant_id, name)) or _host(host_id)
            rows.append({**base, "subject": subject, "host_id": host_id})
        if not owners:
            rows.append({**base, "subject": _address(address, port), "host_id": None})
    return rows


def upgrade() -> None:
    connection = op.get_bind()
    rows = _subject_rows(connection)
    table = op.create_table(
        "subject_host_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "subject", name="uq_host_keys_tenant_subject"),
    )
    if rows:
        op.bulk_insert(table, rows)
    op.drop_table("known_host_keys")
    op.rename_table("subject_host_keys", "known_host_keys")
    with op.batch_alter_table("known_host_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_known_host_keys_host_id"), ["host_id"], unique=False)


def downgrade() -> None:
    # Back to one key per tenant and address: of an endpoint's keys, the one trusted first.
    op.create_table(
        "endpoint_host_keys",
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
        "INSERT INTO endpoint_host_keys (tenant_id, address, port, key, first_seen) "
        "SELECT tenant_id, address, port, key, first_seen FROM known_host_keys WHERE id IN "
        "(SELECT MIN(id) FROM known_host_keys GROUP BY tenant_id, address, port)"
    )
    op.drop_table("known_host_keys")  # its index with it
    op.rename_table("endpoint_host_keys", "known_host_keys")
