"""job heartbeats (interrupted jobs) and output sizes per host

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("job_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stdout_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("stderr_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_results", schema=None) as batch_op:
        batch_op.drop_column("stderr_bytes")
        batch_op.drop_column("stdout_bytes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
