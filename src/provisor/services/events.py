"""Reading the audit log, once or as it grows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from provisor.core.access import Action
from provisor.events import EventView, query_events
from provisor.services.context import Context


def list_events(
    ctx: Context,
    *,
    kinds: list[str] | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[EventView]:
    ctx.require(Action.events_read)
    with ctx.store.session() as session:
        return query_events(session, tenant=ctx.tenant, kinds=kinds, since=since, limit=limit)


def follow_events(
    ctx: Context,
    *,
    kinds: list[str] | None = None,
    since: datetime | None = None,
    backlog: int = 20,
    poll_seconds: float = 0.5,
) -> Iterator[EventView]:
    """The last `backlog` events, then each new one as it is written (until closed)."""
    ctx.require(Action.events_read)
    last_id: int | None = None
    for event in list_events(ctx, kinds=kinds, since=since, limit=backlog):
        last_id = event.id
        yield event
    while True:
        with ctx.store.session() as session:
            fresh = query_events(
                session, tenant=ctx.tenant, kinds=kinds, after_id=last_id or 0, limit=1000
            )
        for event in fresh:
            last_id = event.id
            yield event
        if not fresh:
            time.sleep(poll_seconds)


__all__ = ["EventView", "follow_events", "list_events"]
