"""Writing and reading the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from provisor import logmask
from provisor.store.models import Event


class EventView(BaseModel):
    id: int
    time: datetime
    actor: str
    tenant: str
    kind: str
    subject: str
    outcome: str
    details: dict[str, Any]


def record_event(
    session: Session,
    *,
    actor: str,
    tenant: str,
    kind: str,
    subject: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the session, so it commits (or not) with the change it records.

    Every secret this process holds is masked in it: an error quoting a machine's
    output or a provider's answer may carry one."""
    masker = logmask.current()
    event = Event(
        actor=actor,
        tenant=tenant,
        kind=kind,
        subject=masker.text(subject),
        outcome=outcome,
        details=masker.value(details or {}),
    )
    session.add(event)
    return event


def query_events(
    session: Session,
    *,
    tenant: str | None,
    kinds: list[str] | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[EventView]:
    """Newest `limit` events matching, oldest first. A kind ending in `.` or `*` is a prefix."""
    statement = select(Event)
    if tenant is not None:
        statement = statement.where(Event.tenant == tenant)
    if subject is not None:
        statement = statement.where(Event.subject == subject)
    if kinds:
        conditions = []
        for kind in kinds:
            prefix = kind.rstrip("*")
            if prefix != kind or prefix.endswith("."):
                conditions.append(Event.kind.startswith(prefix, autoescape=True))
            else:
                conditions.append(Event.kind == kind)
        statement = statement.where(or_(*conditions))
    if since is not None:
        statement = statement.where(Event.time >= since)
    if after_id is not None:
        statement = statement.where(Event.id > after_id)
    rows = session.scalars(statement.order_by(Event.id.desc()).limit(limit)).all()
    return [EventView.model_validate(row, from_attributes=True) for row in reversed(rows)]
