"""Routes: each one validates, calls one service function, and returns its view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from provisor import __version__, services
from provisor.core.timespec import parse_since
from provisor.events import EventView
from provisor.services import Context

router = APIRouter()


def context(
    request: Request,
    tenant: Annotated[str | None, Header(alias="X-Provisor-Tenant")] = None,
) -> Context:
    # No authentication yet: the API listens on loopback only, and every call
    # is recorded with actor "api". Tenant selection comes from a header.
    settings = request.app.state.settings
    return Context(
        store=request.app.state.store,
        actor="api",
        tenant=tenant or settings.tenant,
        home=settings.home,
    )


Ctx = Annotated[Context, Depends(context)]


class PoolStats(BaseModel):
    connections: int = Field(description="SSH connections open and ready for the next job")
    handshakes: int = Field(description="SSH handshakes made since the server started")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    pool: PoolStats


@router.get("/health", response_model=Health, tags=["system"])
def health(ctx: Ctx, request: Request) -> Health:
    with ctx.store.session() as session:
        session.execute(text("SELECT 1"))
    pool = request.app.state.jobs.pool
    return Health(
        status="ok",
        version=__version__,
        database=ctx.store.engine.dialect.name,
        pool=PoolStats(
            connections=len(pool) if pool is not None else 0,
            handshakes=pool.handshakes_done if pool is not None else 0,
        ),
    )


# hosts


@router.get("/hosts", response_model=list[services.HostView], tags=["hosts"])
def list_hosts(ctx: Ctx) -> list[services.HostView]:
    return services.list_hosts(ctx)


@router.post("/hosts", response_model=services.HostView, status_code=201, tags=["hosts"])
def add_host(ctx: Ctx, spec: services.HostSpec) -> services.HostView:
    return services.add_host(ctx, spec)


class ImportRequest(BaseModel):
    text: str = Field(description="the file's content")
    source: str = Field(default="<upload>", description="name used in error locations")
    format: Literal["auto", "pssh", "ansible"] = "auto"
    on_existing: Literal["error", "skip", "update"] = "error"


@router.post("/hosts/import", response_model=services.ImportReport, tags=["hosts"])
def import_hosts(ctx: Ctx, body: ImportRequest) -> services.ImportReport:
    return services.import_hosts(
        ctx, body.text, source=body.source, format=body.format, on_existing=body.on_existing
    )


@router.get("/hosts/{name}", response_model=services.HostView, tags=["hosts"])
def get_host(ctx: Ctx, name: str) -> services.HostView:
    return services.get_host(ctx, name)


@router.patch("/hosts/{name}", response_model=services.HostView, tags=["hosts"])
def update_host(ctx: Ctx, name: str, changes: services.HostChanges) -> services.HostView:
    return services.update_host(ctx, name, changes)


@router.delete("/hosts/{name}", status_code=204, tags=["hosts"])
def remove_host(ctx: Ctx, name: str) -> Response:
    services.remove_host(ctx, name)
    return Response(status_code=204)


# groups


@router.get("/groups", response_model=list[services.GroupView], tags=["groups"])
def list_groups(ctx: Ctx) -> list[services.GroupView]:
    return services.list_groups(ctx)


@router.post("/groups", response_model=services.GroupView, status_code=201, tags=["groups"])
def add_group(ctx: Ctx, spec: services.GroupSpec) -> services.GroupView:
    return services.add_group(ctx, spec)


@router.get("/groups/{name}", response_model=services.GroupView, tags=["groups"])
def get_group(ctx: Ctx, name: str) -> services.GroupView:
    return services.get_group(ctx, name)


class GroupMove(BaseModel):
    parent: str | None = Field(description="new parent group, or null for the top level")


@router.patch("/groups/{name}", response_model=services.GroupView, tags=["groups"])
def move_group(ctx: Ctx, name: str, body: GroupMove) -> services.GroupView:
    return services.set_parent(ctx, name, body.parent)


@router.delete("/groups/{name}", status_code=204, tags=["groups"])
def remove_group(ctx: Ctx, name: str) -> Response:
    services.remove_group(ctx, name)
    return Response(status_code=204)


@router.get("/groups/{name}/members", response_model=list[services.HostView], tags=["groups"])
def group_members(ctx: Ctx, name: str) -> list[services.HostView]:
    return services.list_hosts(ctx, names=services.group_members(ctx, name))


class MemberChanges(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


@router.post("/groups/{name}/members", response_model=services.GroupView, tags=["groups"])
def change_members(ctx: Ctx, name: str, body: MemberChanges) -> services.GroupView:
    return services.change_members(ctx, name, add=body.add, remove=body.remove)


# events


@router.get("/events", response_model=list[EventView], tags=["events"])
def list_events(
    ctx: Ctx,
    kind: Annotated[list[str] | None, Query(description="kind or prefix like 'host.'")] = None,
    since: Annotated[str | None, Query(description="15m, 2h, 7d or an ISO time")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[EventView]:
    start = parse_since(since, now=datetime.now(UTC)) if since else None
    return services.list_events(ctx, kinds=kind, since=start, limit=limit)
