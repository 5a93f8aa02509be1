"""stop and start, leases that end, scheduled deployments

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TIMES = ("lease_noticed_for", "lease_ended_for", "starts_at")


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_policy", sa.String(length=16), nullable=True))
        for name in _TIMES:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("lifecycle_workflow_id", sa.String(length=128), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("lifecycle_workflow_id")
        for name in reversed(_TIMES):
            batch_op.drop_column(name)
        batch_op.drop_column("lease_policy")
