"""The passwords `config set-password` gave users on hosts, sealed, for the operators
allowed to read them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from provisor.store.models import Base, utcnow


class HostPassword(Base):
    """One password set (or being set) for `user` on `host` by job `job_id`.

    `state`: `pending` from before the job starts until the host answers (a process killed
    in between leaves it pending: the host may have it), then `current` (the host took
    it; the host's earlier ones become `replaced`) or removed (the host kept its old one).
    """

    __tablename__ = "host_passwords"
    __table_args__ = (Index("ix_host_passwords_lookup", "tenant_id", "host", "user", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    host: Mapped[str] = mapped_column(String(300))
    user: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16))
    password: Mapped[str] = mapped_column(Text)  # sealed
    set_at: Mapped[datetime] = mapped_column(default=utcnow)
    set_by: Mapped[str] = mapped_column(String(128))
