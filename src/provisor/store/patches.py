"""The fleet's patch catalog: what each host could upgrade, as its last analysis found."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from provisor.store.models import Base


class PatchEntry(Base):
    """One package one host could upgrade. A host's rows are replaced at each analysis
    (`patch-analyze` job `job_id`) and after an apply."""

    __tablename__ = "patches"
    __table_args__ = (Index("ix_patches_tenant_host", "tenant_id", "host"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(300))
    package: Mapped[str] = mapped_column(String(200))
    installed: Mapped[str] = mapped_column(String(200))
    candidate: Mapped[str] = mapped_column(String(200))
    security: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[str] = mapped_column(String(300), default="")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    analyzed_at: Mapped[datetime]
