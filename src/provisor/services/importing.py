"""Bringing in host lists operators already have: pssh hosts files, Ansible inventories."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, ProvisorError
from provisor.core.facts import apply_changes, lossless_value
from provisor.core.hostfiles import HostEntry, Inventory, parse_inventory
from provisor.services.context import Context, audited
from provisor.services.groups import find_group
from provisor.services.hosts import check_credentials, new_host
from provisor.services.schemas import HostSpec, ImportReport, validate
from provisor.store.models import Group, Host

OnExisting = Literal["error", "skip", "update"]


# Ansible variables that say how to log in; they become the host's credentials.
_KEY_FILE_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")


def _spec(ctx: Context, entry: HostEntry, source: str) -> HostSpec:
    """The host an entry describes. How to reach it (ansible_host, _port, _user, the key
    file) makes its address, port, user and credentials; every other variable is a fact
    about it (`os=debian` -> facts.os, `cpu.count=8` -> facts.cpu.count), typed only
    where the type writes the text back exactly (see `core.facts.lossless_value`)."""
    variables = dict(entry.vars)
    key_files = [variables.pop(var) for var in _KEY_FILE_VARS if var in variables]
    data = {
        "name": entry.name,
        "address": entry.address,
        "port": entry.port or 22,
        "user": entry.user,
        "credentials": f"key:{key_files[0]}" if key_files else None,
        "facts": {name: lossless_value(value) for name, value in variables.items()},
    }
    try:
        spec = validate(HostSpec, data)
        check_credentials(ctx, spec.credentials)
        return spec
    except ProvisorError as exc:
        raise InvalidInput(exc.message, source=source, line=entry.line, field=exc.field) from None


def _parents_first(inventory: Inventory) -> list[str]:
    parent_of = {g.name: g.parent for g in inventory.groups}
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        parent = parent_of.get(name)
        if parent is not None:
            visit(parent)
        ordered.append(name)

    for name in parent_of:
        visit(name)
    return ordered


def import_hosts(
    ctx: Context,
    text: str,
    *,
    source: str,
    format: Literal["auto", "pssh", "ansible"] = "auto",
    on_existing: OnExisting = "error",
) -> ImportReport:
    """Parse the whole file, then apply it in one transaction: all of it or nothing."""
    ctx.require(Action.inventory_write)
    with audited(ctx, "hosts.imported", source) as (session, audit):
        inventory = parse_inventory(text, source=source, format=format)
        specs = {entry.name: (_spec(ctx, entry, source), entry) for entry in inventory.hosts}
        tenant_id = ctx.tenant_id()
        existing = {
            h.name: h
            for h in session.scalars(
                select(Host).where(Host.tenant_id == tenant_id, Host.name.in_(list(specs)))
            )
        }
        if existing and on_existing == "error":
            lines = ", ".join(f"{n} (line {specs[n][1].line})" for n in sorted(existing))
            raise Conflict(
                f"{len(existing)} host(s) already exist: {lines}; nothing was imported "
                "(use --on-existing skip or update)",
                source=source,
            )
        report = ImportReport(
            source=source,
            format=inventory.format,
            hosts_created=[],
            hosts_updated=[],
            hosts_skipped=[],
            groups_created=[],
        )
        groups: dict[str, Group] = {}
        parent_of = {g.name: g.parent for g in inventory.groups}
        for name in _parents_first(inventory):
            found = session.scalar(
                select(Group).where(Group.tenant_id == tenant_id, Group.name == name)
            )
            if found is None:
                parent = parent_of[name]
                found = Group(
                    tenant_id=tenant_id,
                    name=name,
                    kind="static",
                    parent=groups[parent] if parent else None,
                    description=f"imported from {source}",
                    members=[],
                    children=[],
                )
                session.add(found)
                report.groups_created.append(name)
            elif found.kind == "smart":
                raise Conflict(
                    f"group {name!r} exists and is smart; cannot add imported hosts to it",
                    source=source,
                )
            groups[name] = found
        for name, (spec, entry) in specs.items():
            host = existing.get(name)
            if host is None:
                host = new_host(spec, tenant_id)
                session.add(host)
                report.hosts_created.append(name)
            elif on_existing == "skip":
                report.hosts_skipped.append(name)
                continue
            else:
                host.address = spec.address or host.address
                host.port, host.user = spec.port, spec.user or host.user
                host.credentials = spec.credentials or host.credentials
                try:
                    host.facts = apply_changes(host.facts, spec.facts)
                except InvalidInput as exc:
                    raise InvalidInput(
                        f"host {name!r}: {exc.message}", source=source, line=entry.line
                    ) from None
                report.hosts_updated.append(name)
            for group_name in entry.groups:
                group = groups.get(group_name) or find_group(session, tenant_id, group_name)
                if host not in group.members:
                    group.members.append(host)
        audit.details = {
            "format": inventory.format,
            "created": len(report.hosts_created),
            "updated": len(report.hosts_updated),
            "skipped": len(report.hosts_skipped),
            "groups_created": report.groups_created,
        }
        return report
