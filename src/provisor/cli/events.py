"""`provisor events`: the audit log."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from provisor.cli._context import context
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    full_time,
    short_time,
    table,
)
from provisor.core.timespec import parse_since

if TYPE_CHECKING:
    from provisor.services.events import EventView


def _line(event: EventView) -> str:
    details = " ".join(f"{k}={v}" for k, v in event.details.items())
    when = event.time.astimezone(UTC).isoformat(timespec="seconds")
    return f"{when} {event.actor} {event.kind} {event.subject} {event.outcome} {details}".rstrip()


def events(
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="event kind, or a prefix like 'host.'; repeatable"),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="15m, 2h, 7d or an ISO time")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000)] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events")
    ] = False,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    wide: WideOption = False,
) -> None:
    """Show the audit log: who did what, to what, when, and how it went.

    The table fits the terminal: times in UTC (the year only for older ones), long
    subjects and details shortened; --wide adds who did it and shows everything."""
    from provisor.services.events import follow_events, list_events

    start = parse_since(since, now=datetime.now(UTC)) if since else None
    ctx = context()
    if follow:
        try:
            for event in follow_events(ctx, kinds=kind, since=start, backlog=limit):
                if output is Format.json:
                    sys.stdout.write(json.dumps(event.model_dump(mode="json")) + "\n")
                else:
                    sys.stdout.write(_line(event) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
    found = list_events(ctx, kinds=kind, since=start, limit=limit)
    if output is Format.json:
        emit_json(found)
        return
    table(
        [
            Col("time"),
            Col("actor", wide=True),
            Col("kind"),
            Col("subject", cut=True),
            Col("outcome"),
            Col("details", cut=True),
        ],
        [
            (
                full_time(e.time) if wide else short_time(e.time, seconds=True),
                e.actor,
                e.kind,
                e.subject,
                e.outcome,
                e.details,
            )
            for e in found
        ],
        wide=wide,
    )
    if not found:
        console.print("no events")
