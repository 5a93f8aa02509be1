"""Use cases on groups: static (explicit members, a tree) and smart (a rule)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.services.context import Context, audited
from provisor.services.hosts import find_host, host_record, tenant_hosts
from provisor.services.schemas import GroupSpec, GroupView
from provisor.store.models import Group, Host


def find_group(session: Session, tenant_id: int, name: str, *, field: str = "name") -> Group:
    group = session.scalar(
        select(Group)
        .where(Group.tenant_id == tenant_id, Group.name == name)
        .options(selectinload(Group.members), selectinload(Group.children))
    )
    if group is None:
        raise NotFound(f"no group named {name!r}", field=field)
    return group


def resolve_members(session: Session, tenant_id: int, group: Group) -> list[Host]:
    """Every host in the group: its own members or rule matches, plus its subgroups'."""
    found: dict[int, Host] = {}
    everyone: list[Host] | None = None
    pending, seen = [group], set()
    while pending:
        current = pending.pop()
        if current.id in seen:  # the tree is kept acyclic; this is belt and braces
            continue
        seen.add(current.id)
        if current.kind == "smart" and current.rule is not None:
            from provisor.core.rules import parse_rule  # RE2: only for smart groups

            if everyone is None:
                everyone = tenant_hosts(session, tenant_id)
            rule = parse_rule(current.rule)
            found.update((h.id, h) for h in everyone if rule.matches(host_record(h)))
        else:
            found.update((h.id, h) for h in current.members)
        pending.extend(current.children)
    return sorted(found.values(), key=lambda h: h.name)


def group_view(session: Session, tenant_id: int, group: Group, tenant: str) -> GroupView:
    return GroupView(
        name=group.name,
        kind="smart" if group.kind == "smart" else "static",
        parent=group.parent.name if group.parent else None,
        children=sorted(c.name for c in group.children),
        rule=group.rule,
        description=group.description,
        proxy_jump=group.proxy_jump,
        members=[h.name for h in resolve_members(session, tenant_id, group)],
        tenant=tenant,
        created_at=group.created_at,
    )


def add_group(ctx: Context, spec: GroupSpec) -> GroupView:
    ctx.require(Action.inventory_write)
    with audited(ctx, "group.added", spec.name) as (session, audit):
        tenant_id = ctx.tenant_id()
        if session.scalar(
            select(Group.id).where(Group.tenant_id == tenant_id, Group.name == spec.name)
        ):
            raise Conflict(f"a group named {spec.name!r} already exists", field="name")
        rule_text = None
        if spec.rule is not None:
            from provisor.core.rules import parse_rule

            rule_text = str(parse_rule(spec.rule))  # canonical form; raises with a column
        parent = (
            find_group(session, tenant_id, spec.parent, field="parent") if spec.parent else None
        )
        members = [find_host(session, tenant_id, m) for m in dict.fromkeys(spec.members)]
        group = Group(
            tenant_id=tenant_id,
            name=spec.name,
            kind="smart" if rule_text is not None else "static",
            rule=rule_text,
            parent=parent,
            description=spec.description,
            proxy_jump=spec.proxy_jump,
            members=members,
            children=[],
        )
        session.add(group)
        session.flush()
        audit.details = {"kind": group.kind, "rule": rule_text, "parent": spec.parent}
        return group_view(session, tenant_id, group, ctx.tenant)


def list_groups(ctx: Context) -> list[GroupView]:
    ctx.require(Action.inventory_read)
    with ctx.store.session() as session:
        tenant_id = ctx.tenant_id()
        groups = session.scalars(
            select(Group)
            .where(Group.tenant_id == tenant_id)
            .options(selectinload(Group.members), selectinload(Group.children))
            .order_by(Group.name)
        ).all()
        return [group_view(session, tenant_id, g, ctx.tenant) for g in groups]


def get_group(ctx: Context, name: str) -> GroupView:
    ctx.require(Action.inventory_read)
    with ctx.store.session() as session:
        tenant_id = ctx.tenant_id()
        return group_view(session, tenant_id, find_group(session, tenant_id, name), ctx.tenant)


def group_members(ctx: Context, name: str) -> list[str]:
    ctx.require(Action.inventory_read)
    return get_group(ctx, name).members


def change_members(
    ctx: Context, name: str, *, add: list[str] | None = None, remove: list[str] | None = None
) -> GroupView:
    """Add or remove explicit members of a static group; all or nothing."""
    ctx.require(Action.inventory_write)
    with audited(ctx, "group.members_changed", name) as (session, audit):
        tenant_id = ctx.tenant_id()
        group = find_group(session, tenant_id, name)
        if group.kind == "smart":
            raise InvalidInput(
                f"group {name!r} is smart: its members come from its rule", field="name"
            )
        current = {h.name for h in group.members}
        for host_name in dict.fromkeys(add or []):
            if host_name not in current:
                group.members.append(find_host(session, tenant_id, host_name))
        for host_name in dict.fromkeys(remove or []):
            if host_name not in current:
                raise NotFound(f"host {host_name!r} is not a member of {name!r}", field="remove")
            group.members = [h for h in group.members if h.name != host_name]
        audit.details = {"added": add or [], "removed": remove or []}
        session.flush()
        return group_view(session, tenant_id, group, ctx.tenant)


def set_parent(ctx: Context, name: str, parent: str | None) -> GroupView:
    ctx.require(Action.inventory_write)
    with audited(ctx, "group.moved", name) as (session, audit):
        tenant_id = ctx.tenant_id()
        group = find_group(session, tenant_id, name)
        new_parent = find_group(session, tenant_id, parent, field="parent") if parent else None
        ancestor = new_parent
        while ancestor is not None:
            if ancestor.id == group.id:
                raise InvalidInput(
                    f"cannot put {name!r} under {parent!r}: {parent!r} is inside {name!r}",
                    field="parent",
                )
            ancestor = ancestor.parent
        audit.details = {"from": group.parent.name if group.parent else None, "to": parent}
        group.parent = new_parent
        session.flush()
        return group_view(session, tenant_id, group, ctx.tenant)


def remove_group(ctx: Context, name: str) -> None:
    """Remove a group; its hosts stay. A group with subgroups is refused."""
    ctx.require(Action.inventory_write)
    with audited(ctx, "group.removed", name) as (session, audit):
        group = find_group(session, ctx.tenant_id(), name)
        if group.children:
            children = ", ".join(sorted(c.name for c in group.children))
            raise Conflict(
                f"group {name!r} has subgroups ({children}); remove or move them first",
                field="name",
            )
        audit.details = {"kind": group.kind, "members": sorted(h.name for h in group.members)}
        session.delete(group)
