"""Tables of alerting: notifiers, rules, alerts, their deliveries and the dispatch cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from provisor.store.models import Base, utcnow


class Notifier(Base):
    """Where alerts go (log, email, webhook, command), configured once per tenant.

    `settings` is plain JSON checked by the kind; the one secret a kind may take (an SMTP
    password, a webhook's HMAC key) is kept sealed in `secret`, never in clear.
    """

    __tablename__ = "notifiers"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_notifiers_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret: Mapped[str | None] = mapped_column(Text)  # "sealed:v2:..." or none
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class AlertRule(Base):
    """Which events raise an alert, and which notifiers hear of it."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_alert_rules_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)  # exact, `backup.*`, or `*`
    min_severity: Mapped[str] = mapped_column(String(16))
    deployment: Mapped[str | None] = mapped_column(String(128))
    node: Mapped[str | None] = mapped_column(String(64))
    notifiers: Mapped[list[str]] = mapped_column(JSON, default=list)  # names in the tenant
    remind_seconds: Mapped[int | None] = mapped_column(Integer)  # none: no reminders
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class Alert(Base):
    """One incident as one rule saw it: opened by the first matching event, counted by
    the next ones, reminded of while open and unacknowledged, closed by its resolution."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open_key", "tenant_id", "rule_id", "key", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(64))  # its name, kept for the record
    key: Mapped[str] = mapped_column(String(300))  # the incident, or rule:kind:subject
    incident: Mapped[bool] = mapped_column(default=True)  # the key came from the event
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, resolved, closed
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    deployment: Mapped[str | None] = mapped_column(String(128))
    node: Mapped[str | None] = mapped_column(String(64))
    machine: Mapped[str | None] = mapped_column(String(128))
    first_event_id: Mapped[int] = mapped_column(Integer)
    last_event_id: Mapped[int] = mapped_column(Integer)
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    reminders: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    remind_at: Mapped[datetime | None] = mapped_column(index=True)
    acked_at: Mapped[datetime | None] = mapped_column()
    acked_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None] = mapped_column()


class AlertDelivery(Base):
    """One message of one alert to one notifier, recorded before it is sent and marked
    sent after: a dispatcher killed in between sends it on restart, and only then."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "notifier_id", "message", name="uq_alert_deliveries"),
        Index("ix_alert_deliveries_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    notifier_id: Mapped[int] = mapped_column(ForeignKey("notifiers.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(String(32))  # opened, reminder.N, resolved
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what is sent
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class AlertCursor(Base):
    """How far the dispatcher has read the events, and which process dispatches now
    (a lease: one dispatcher at a time, taken over when it expires or its process died)."""

    __tablename__ = "alert_cursor"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str | None] = mapped_column(String(300))
    lease_until: Mapped[datetime | None] = mapped_column()
