"""Use cases on hosts: add, list, show, change, remove."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.core.facts import apply_changes, readable
from provisor.services.context import Context, audited
from provisor.services.schemas import HostChanges, HostSpec, HostView
from provisor.store.models import Host, KnownHostKey


def check_credentials(ctx: Context, credentials: str | None) -> None:
    """Nothing a remote caller sends names a file or the SSH agent of the server: its
    hosts log in with a stored key (`key:NAME`), never with `key:/path` or `agent`."""
    from provisor.services.keys import is_stored_reference  # the keys' table: when needed

    if ctx.is_local or credentials is None or is_stored_reference(credentials):
        return
    if credentials.startswith("secret:"):
        return
    raise InvalidInput(
        "over the API a host logs in with a stored key (key:NAME; see /api/v1/keys), "
        "not with a file or the SSH agent of the server",
        field="credentials",
    )


def host_view(host: Host, tenant: str) -> HostView:
    return HostView(
        name=host.name,
        address=host.address,
        port=host.port,
        user=host.user,
        credentials=host.credentials,
        proxy_jump=host.proxy_jump,
        state=host.state,
        tags=dict(host.tags),
        facts=dict(host.facts),
        groups=sorted(g.name for g in host.groups),
        tenant=tenant,
        created_at=host.created_at,
        updated_at=host.updated_at,
    )


def host_record(host: Host) -> dict[str, Any]:
    """The mapping smart-group rules are evaluated against (facts stored under flat
    dotted names before names were split are read at their nested place too)."""
    return {
        "name": host.name,
        "address": host.address,
        "port": host.port,
        "user": host.user,
        "state": host.state,
        "facts": readable(host.facts),
        "tags": host.tags,
    }


def find_host(session: Session, tenant_id: int, name: str) -> Host:
    host = session.scalar(
        select(Host)
        .where(Host.tenant_id == tenant_id, Host.name == name)
        .options(selectinload(Host.groups))
    )
    if host is None:
        raise NotFound(f"no host named {name!r}", field="name")
    return host


def tenant_hosts(session: Session, tenant_id: int) -> list[Host]:
    return list(
        session.scalars(
            select(Host)
            .where(Host.tenant_id == tenant_id)
            .options(selectinload(Host.groups))
            .order_by(Host.name)
        )
    )


def new_host(spec: HostSpec, tenant_id: int) -> Host:
    assert spec.address is not None  # filled in by HostSpec's validator
    return Host(
        tenant_id=tenant_id,
        name=spec.name,
        address=spec.address,
        port=spec.port,
        user=spec.user,
        credentials=spec.credentials,
        proxy_jump=spec.proxy_jump,
        tags=dict(spec.tags),
        facts=dict(spec.facts),
        state=spec.state,
        groups=[],
    )


def add_host(ctx: Context, spec: HostSpec) -> HostView:
    ctx.require(Action.inventory_write)
    check_credentials(ctx, spec.credentials)
    with audited(ctx, "host.added", spec.name) as (session, audit):
        tenant_id = ctx.tenant_id()
        existing = session.scalar(
            select(Host.id).where(Host.tenant_id == tenant_id, Host.name == spec.name)
        )
        if existing is not None:
            raise Conflict(f"a host named {spec.name!r} already exists", field="name")
        host = new_host(spec, tenant_id)
        session.add(host)
        session.flush()
        audit.details = {"address": host.address, "port": host.port}
        return host_view(host, ctx.tenant)


def list_hosts(
    ctx: Context, *, names: list[str] | None = None, target: str | None = None
) -> list[HostView]:
    """All hosts of the tenant, or just those named, or those a target expression selects
    (in name order); a target that matches no host is an error."""
    ctx.require(Action.inventory_read)
    if target is not None:
        from provisor.services.targets import inventory_names  # it imports this module

        selected = set(inventory_names(ctx, target))
        names = [n for n in names if n in selected] if names is not None else list(selected)
    with ctx.store.session() as session:
        hosts = tenant_hosts(session, ctx.tenant_id())
        if names is not None:
            wanted = set(names)
            hosts = [h for h in hosts if h.name in wanted]
        return [host_view(h, ctx.tenant) for h in hosts]


def get_host(ctx: Context, name: str) -> HostView:
    ctx.require(Action.inventory_read)
    with ctx.store.session() as session:
        return host_view(find_host(session, ctx.tenant_id(), name), ctx.tenant)


def update_host(ctx: Context, name: str, changes: HostChanges) -> HostView:
    ctx.require(Action.inventory_write)
    check_credentials(ctx, changes.credentials)
    with audited(ctx, "host.changed", name) as (session, audit):
        host = find_host(session, ctx.tenant_id(), name)
        given = changes.model_dump(exclude_unset=True)
        for attribute in ("address", "port", "user", "credentials", "proxy_jump", "state"):
            if attribute in given:
                setattr(host, attribute, given[attribute])
        if changes.tags:
            tags = {**host.tags, **changes.tags}
            host.tags = {k: v for k, v in tags.items() if v is not None}
        if changes.facts:
            host.facts = apply_changes(host.facts, changes.facts)
        audit.details = {"changed": sorted(given)}
        session.flush()
        return host_view(host, ctx.tenant)


def remove_host(ctx: Context, name: str) -> None:
    """Remove a host; its trusted host keys go with it (a host added later at its address
    is a stranger, trusted on first use)."""
    ctx.require(Action.inventory_write)
    with audited(ctx, "host.removed", name) as (session, audit):
        host = find_host(session, ctx.tenant_id(), name)
        audit.details = {"address": host.address, "groups": sorted(g.name for g in host.groups)}
        # The foreign key drops them too; said here so it does not rest on that alone.
        session.execute(delete(KnownHostKey).where(KnownHostKey.host_id == host.id))
        session.delete(host)
