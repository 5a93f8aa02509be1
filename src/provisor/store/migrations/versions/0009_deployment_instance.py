"""a deployment instance identity that is never reused

A deployment's row id may be given again once the row is gone (SQLite reuses the
highest id), so machine tokens, workflow ids and launch tokens bound to it could
outlive it. Each deployment gets a random `instance` instead; existing ones too.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    deployments = sa.table("deployments", sa.column("id", sa.Integer), sa.column("instance"))
    ids = connection.execute(sa.select(deployments.c.id)).scalars().all()
    for deployment_id in ids:
        connection.execute(
            deployments.update()
            .where(deployments.c.id == deployment_id)
            .values(instance=uuid.uuid4().hex)
        )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.alter_column("instance", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint("uq_deployments_instance", ["instance"])


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_deployments_instance", type_="unique")
        batch_op.drop_column("instance")
