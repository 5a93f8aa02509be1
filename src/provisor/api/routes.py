"""Routes: each one validates, calls one service function, and returns its view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from provisor.api.auth import Ctx
from provisor.core.timespec import parse_since
from provisor.services import events, groups, hosts, importing, system
from provisor.services.events import EventView
from provisor.services.schemas import (
    GroupSpec,
    GroupView,
    HostChanges,
    HostSpec,
    HostView,
    ImportReport,
)

router = APIRouter()


@router.get("/health", response_model=system.Health, tags=["system"])
def health(request: Request) -> system.Health:
    """Whether the server and its database answer; the only route without a token."""
    jobs = request.app.state.jobs
    return system.health(request.app.state.store, jobs.runner, len(jobs.live))


# hosts


@router.get("/hosts", response_model=list[HostView], tags=["hosts"])
def list_hosts(
    ctx: Ctx,
    target: Annotated[
        str | None,
        Query(min_length=1, max_length=10_000, description="only these hosts: group:web, ..."),
    ] = None,
) -> list[HostView]:
    return hosts.list_hosts(ctx, target=target)


@router.post("/hosts", response_model=HostView, status_code=201, tags=["hosts"])
def add_host(ctx: Ctx, spec: HostSpec) -> HostView:
    return hosts.add_host(ctx, spec)


class ImportRequest(BaseModel):
    text: str = Field(description="the file's content")
    source: str = Field(default="<upload>", description="name used in error locations")
    format: Literal["auto", "pssh", "ansible"] = "auto"
    on_existing: Literal["error", "skip", "update"] = "error"


@router.post("/hosts/import", response_model=ImportReport, tags=["hosts"])
def import_hosts(ctx: Ctx, body: ImportRequest) -> ImportReport:
    return importing.import_hosts(
        ctx, body.text, source=body.source, format=body.format, on_existing=body.on_existing
    )


@router.get("/hosts/{name}", response_model=HostView, tags=["hosts"])
def get_host(ctx: Ctx, name: str) -> HostView:
    return hosts.get_host(ctx, name)


@router.patch("/hosts/{name}", response_model=HostView, tags=["hosts"])
def update_host(ctx: Ctx, name: str, changes: HostChanges) -> HostView:
    return hosts.update_host(ctx, name, changes)


@router.delete("/hosts/{name}", status_code=204, tags=["hosts"])
def remove_host(ctx: Ctx, name: str) -> Response:
    hosts.remove_host(ctx, name)
    return Response(status_code=204)


# groups


@router.get("/groups", response_model=list[GroupView], tags=["groups"])
def list_groups(ctx: Ctx) -> list[GroupView]:
    return groups.list_groups(ctx)


@router.post("/groups", response_model=GroupView, status_code=201, tags=["groups"])
def add_group(ctx: Ctx, spec: GroupSpec) -> GroupView:
    return groups.add_group(ctx, spec)


@router.get("/groups/{name}", response_model=GroupView, tags=["groups"])
def get_group(ctx: Ctx, name: str) -> GroupView:
    return groups.get_group(ctx, name)


class GroupMove(BaseModel):
    parent: str | None = Field(description="new parent group, or null for the top level")


@router.patch("/groups/{name}", response_model=GroupView, tags=["groups"])
def move_group(ctx: Ctx, name: str, body: GroupMove) -> GroupView:
    return groups.set_parent(ctx, name, body.parent)


@router.delete("/groups/{name}", status_code=204, tags=["groups"])
def remove_group(ctx: Ctx, name: str) -> Response:
    groups.remove_group(ctx, name)
    return Response(status_code=204)


@router.get("/groups/{name}/members", response_model=list[HostView], tags=["groups"])
def group_members(ctx: Ctx, name: str) -> list[HostView]:
    return hosts.list_hosts(ctx, names=groups.group_members(ctx, name))


class MemberChanges(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


@router.post("/groups/{name}/members", response_model=GroupView, tags=["groups"])
def change_members(ctx: Ctx, name: str, body: MemberChanges) -> GroupView:
    return groups.change_members(ctx, name, add=body.add, remove=body.remove)


# events


@router.get("/events", response_model=list[EventView], tags=["events"])
def list_events(
    ctx: Ctx,
    kind: Annotated[list[str] | None, Query(description="kind or prefix like 'host.'")] = None,
    since: Annotated[str | None, Query(description="15m, 2h, 7d or an ISO time")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[EventView]:
    start = parse_since(since, now=datetime.now(UTC)) if since else None
    return events.list_events(ctx, kinds=kind, since=start, limit=limit)
