"""Tables of fleet configuration changes: the state of every object an apply changed,
recorded on each host before it was changed, so that a rollback can write it back."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from provisor.store.models import Base


class ChangeSnapshot(Base):
    """One object of one host as it was before an apply (a `config-apply` job) changed it.

    `state` is the object's state as JSON (core.changes.model.state_json), sealed: it
    may hold a password hash or a file with secrets in it."""

    __tablename__ = "change_snapshots"
    __table_args__ = (Index("ix_change_snapshots_job_host", "job_id", "host"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(300))
    position: Mapped[int] = mapped_column(Integer)  # the order the objects were written in
    kind: Mapped[str] = mapped_column(String(16))  # file, user, package, service, sysctl
    name: Mapped[str] = mapped_column(Text)  # the path, user, package, service, parameter
    state: Mapped[str] = mapped_column(Text)  # sealed JSON
