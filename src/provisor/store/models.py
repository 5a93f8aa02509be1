"""The tables: tenants, hosts, groups (static and smart) and events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


group_members = Table(
    "group_members",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("host_id", ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
)


class Host(Base):
    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_hosts_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    user: Mapped[str | None] = mapped_column(String(64))
    # How to authenticate: "key:/path", "agent", "secret:NAME"; never the secret itself.
    credentials: Mapped[str | None] = mapped_column(String(512))
    # A bastion to reach this host through, as `[user@]host[:port]` or a host name.
    proxy_jump: Mapped[str | None] = mapped_column(String(300))
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(32), default="new")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tenant: Mapped[Tenant] = relationship()
    groups: Mapped[list[Group]] = relationship(secondary=group_members, back_populates="members")


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_groups_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # "static" or "smart"
    rule: Mapped[str | None] = mapped_column(Text)  # smart groups only
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="RESTRICT"), index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    proxy_jump: Mapped[str | None] = mapped_column(String(300))  # for members without their own
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tenant: Mapped[Tenant] = relationship()
    parent: Mapped[Group | None] = relationship(remote_side=[id], back_populates="children")
    children: Mapped[list[Group]] = relationship(back_populates="parent")
    members: Mapped[list[Host]] = relationship(secondary=group_members, back_populates="groups")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_tenant_time", "tenant", "time"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64), index=True)  # e.g. "host.added"
    subject: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))  # "ok", "failed", "denied"
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Job(Base):
    """One fleet operation over a target, with one result per host."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # run, copy, fetch, kill
    target: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)  # what ran, for people; secrets never included
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # running, done, or interrupted: its process stopped (heartbeat too old) before the end
    state: Mapped[str] = mapped_column(String(16), default="running")
    host_count: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)  # outcome -> count
    output_dir: Mapped[str | None] = mapped_column(Text)  # full per-host output files
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    # Last sign of life of the process running the job, every few seconds while it runs.
    heartbeat_at: Mapped[datetime | None] = mapped_column()

    results: Mapped[list[JobResult]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobResult.host"
    )


class JobResult(Base):
    __tablename__ = "job_results"
    __table_args__ = (UniqueConstraint("job_id", "host", name="uq_job_results_job_host"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(String(300))
    address: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))  # "pending" until the host answers
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    stdout: Mapped[str] = mapped_column(Text, default="")  # bounded; full text in files
    stderr: Mapped[str] = mapped_column(Text, default="")
    truncated: Mapped[bool] = mapped_column(default=False)
    stdout_bytes: Mapped[int | None] = mapped_column(BigInteger)  # printed in all, kept or not
    stderr_bytes: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. processes killed
    connect_seconds: Mapped[float | None] = mapped_column()
    run_seconds: Mapped[float | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="results")


class KnownHostKey(Base):
    """provisor's own known-hosts store, one per tenant: trusted on first use (or pinned
    from the provider), refused on change.

    A key belongs to what it identifies (`subject`): an inventory host (`host:<id>`), a
    deployment's machine (`machine:<provider>/<instance id>`), or an endpoint outside the
    inventory (`addr:<address>:<port>`); never to an address a later machine may get.
    `host_id` ties it to its inventory host: the key goes when the host does.
    """

    __tablename__ = "known_host_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "subject", name="uq_host_keys_tenant_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    subject: Mapped[str] = mapped_column(String(300))
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(255))  # where it was seen (or pinned for)
    port: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(Text)  # OpenSSH public key line
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Blueprint(Base):
    """One version of a blueprint: the YAML text as given, checked before it was stored.

    Blueprints hold no secrets: a secret parameter cannot have a default.
    """

    __tablename__ = "blueprints"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "version", name="uq_blueprints_tenant_name_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    approval: Mapped[str] = mapped_column(String(16))  # "required" or "none"
    text: Mapped[str] = mapped_column(Text)  # the YAML, byte for byte as added
    sha256: Mapped[str] = mapped_column(String(64))  # of the text
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)  # nodes, parameters
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderConfig(Base):
    """A provider an operator configured (`provisor providers add`); `local` is built in.

    `settings` is plain JSON checked by the provider's kind; the one secret a kind
    may need (an EC2 secret access key) is kept sealed in `secret`, never in clear.
    """

    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_providers_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))  # as long as a deployment's `provider`
    kind: Mapped[str] = mapped_column(String(32))  # e.g. "ec2"
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret: Mapped[str | None] = mapped_column(Text)  # "sealed:..." (Fernet), never clear
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
