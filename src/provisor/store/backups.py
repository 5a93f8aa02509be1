"""Tables of backups: the stores backups go to, each backup and its stored objects, the
per-deployment schedule overrides and the scheduler's marks.

A backup names its deployment by name and instance, not by row: it outlives the
deployment (a final backup is taken just before the deployment is removed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisor.store.models import Base, utcnow


class BackupStoreConfig(Base):
    """A store an operator configured (`provisor backup stores add`); `local` is built in.
    Its one secret (an S3 secret access key) is kept sealed, never in clear."""

    __tablename__ = "backup_stores"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_backup_stores_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # "s3" (or "directory")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret: Mapped[str | None] = mapped_column(Text)  # sealed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class Backup(Base):
    """One backup run of one machine: one durable workflow, named by `workflow_id`."""

    __tablename__ = "backups"
    __table_args__ = (
        UniqueConstraint("workflow_id", name="uq_backups_workflow"),
        UniqueConstraint("backup_id", name="uq_backups_backup_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    backup_id: Mapped[str] = mapped_column(String(32))  # what people and the API name it by
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    deployment: Mapped[str] = mapped_column(String(128), index=True)
    instance: Mapped[str] = mapped_column(String(32), index=True)
    machine: Mapped[str] = mapped_column(String(128))
    node: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(String(16))  # manual, schedule, final
    scheduled_for: Mapped[datetime | None] = mapped_column()
    store: Mapped[str] = mapped_column(String(64))
    # running, good, bad (an object failed verification), failed, deleting
    state: Mapped[str] = mapped_column(String(16), default="running")
    step: Mapped[str] = mapped_column(String(200), default="")
    data_key: Mapped[str] = mapped_column(Text)  # sealed with provisor's sealing key
    snapshot_id: Mapped[str | None] = mapped_column(String(128))  # the provider's
    error: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # stored bytes, all objects
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    verified_at: Mapped[datetime | None] = mapped_column()

    objects: Mapped[list[BackupObject]] = relationship(
        back_populates="backup", cascade="all, delete-orphan", order_by="BackupObject.id"
    )


class BackupObject(Base):
    """One stored object of a backup: its size and SHA-256 as stored (encrypted) and as
    the plain data, and whether its stored copy is good."""

    __tablename__ = "backup_objects"
    __table_args__ = (UniqueConstraint("backup_pk", "name", name="uq_backup_objects_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    backup_pk: Mapped[int] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))  # disk.tar.gz, paths.tar, command-1.out
    key: Mapped[str] = mapped_column(String(512))  # where it is in the store
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    plain_size: Mapped[int] = mapped_column(BigInteger)
    plain_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="good")  # good, bad, deleting
    verified_at: Mapped[datetime | None] = mapped_column()

    backup: Mapped[Backup] = relationship(back_populates="objects")


class BackupOverride(Base):
    """A deployment's own schedule for a node, in place of its blueprint's (`off`: none)."""

    __tablename__ = "backup_overrides"
    __table_args__ = (UniqueConstraint("instance", "node", name="uq_backup_overrides_node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    instance: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(64))
    schedule: Mapped[str] = mapped_column(String(200))  # cron, or "off"


class BackupMark(Base):
    """The last scheduled time the scheduler started a backup of a machine for."""

    __tablename__ = "backup_marks"
    __table_args__ = (UniqueConstraint("instance", "machine", name="uq_backup_marks_machine"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(String(32))
    machine: Mapped[str] = mapped_column(String(128))
    last_due: Mapped[datetime] = mapped_column()
