"""Targets resolved against a tenant's inventory: which hosts, reached how."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, defaultload, defer, selectinload

from provisor.core.errors import InvalidInput, NotFound
from provisor.core.hostfiles import parse_pssh_hosts
from provisor.core.names import deployment_group
from provisor.core.nodeset import fold
from provisor.core.targets import HostRef, evaluate, parse_target
from provisor.fleet.transport import Endpoint, host_trust_id, machine_trust_id
from provisor.services.context import Context
from provisor.services.groups import resolve_members
from provisor.services.keys import is_stored_reference, private_keys
from provisor.store.models import Group, Host
from provisor.store.orchestration import Deployment, Machine

# A host's tags and facts are JSON, decoded row by row: only the targets that look at them
# (tag:, smart groups) load them, so a job on a few hosts of a large inventory pays for
# the columns it uses.
_WITHOUT_LABELS = (defer(Host.tags), defer(Host.facts))


class _InventoryResolver:
    """Answers the target evaluator's questions from the tenant's inventory.

    Lives inside one session; loads what the target asks for: a group's members for
    `group:web`, every host (once, without tags and facts) for names and addresses.
    """

    def __init__(self, session: Session, tenant_id: int, *, files_allowed: bool) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._files_allowed = files_allowed
        groups = session.scalars(
            select(Group)
            .where(Group.tenant_id == tenant_id)
            .options(
                selectinload(Group.children),
                defaultload(Group.members).options(*_WITHOUT_LABELS),
            )
        ).all()
        self._groups = {g.name: g for g in groups}
        self._group_jump = _group_jumps(groups)
        self._every_host: dict[str, Host] | None = None
        self._members: dict[str, Host] = {}  # hosts met as groups' members
        if any(self._group_jump.values()):
            # Members may inherit a group's bastion: every host now, with its groups, so
            # that the members met later are these same objects with their groups loaded.
            self._every_host = self._load_hosts(with_groups=True)

    @property
    def hosts(self) -> dict[str, Host]:
        """Every host of the tenant, by name (loaded on first use)."""
        if self._every_host is None:
            self._every_host = self._load_hosts(with_groups=False)
        return self._every_host

    def _load_hosts(self, *, with_groups: bool) -> dict[str, Host]:
        hosts = select(Host).where(Host.tenant_id == self._tenant_id).options(*_WITHOUT_LABELS)
        if with_groups:
            hosts = hosts.options(selectinload(Host.groups))
        return {h.name: h for h in self._session.scalars(hosts)}

    def host(self, name: str) -> Host | None:
        """The inventory host of a selected name (None for one outside the inventory).
        Every host is loaded by then, or the selection came from groups' members."""
        if self._every_host is not None:
            return self._every_host.get(name)
        return self._members.get(name)

    def all_hosts(self) -> Iterable[HostRef]:
        return [_ref(h) for h in self.hosts.values()]

    def group_members(self, name: str) -> Iterable[HostRef]:
        group = self._groups.get(name)
        if group is None:
            raise NotFound(f"no group named {name!r}", field="target")
        members = resolve_members(self._session, self._tenant_id, group)
        self._members.update((h.name, h) for h in members)
        return [_ref(h) for h in members]

    def tagged_hosts(self, key: str, value: str) -> Iterable[HostRef]:
        tags = self._session.execute(
            select(Host.name, Host.tags).where(Host.tenant_id == self._tenant_id)
        )
        return [
            _ref(self.hosts[name])
            for name, labels in tags
            if name in self.hosts and str(labels.get(key)) == value
        ]

    def deployment_members(self, name: str) -> Iterable[HostRef]:
        group = deployment_group(name)
        if group not in self._groups:
            raise NotFound(f"no deployment named {name!r}", field="target")
        return self.group_members(group)

    def read_file(self, path: str) -> Iterable[HostRef]:
        if not self._files_allowed:  # refused before the file is looked at
            raise InvalidInput(
                "a target file (@FILE) is read on the computer that runs provisor: the API "
                "takes hosts, groups and addresses only",
                field="target",
            )
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read hosts file {path}: {exc}", field="target") from None
        inventory = parse_pssh_hosts(text, source=path)
        refs = []
        for entry in inventory.hosts:
            known = self.hosts.get(entry.name)
            if known is not None and entry.user is None and entry.port is None:
                refs.append(_ref(known))
            else:
                refs.append(HostRef(entry.name, entry.address, entry.port, entry.user))
        return refs

    def proxy_jump(self, host: Host) -> str | None:
        if host.proxy_jump:
            return host.proxy_jump
        if not any(self._group_jump.values()):  # no bastion to inherit (groups not loaded)
            return None
        for group in host.groups:
            jump = self._group_jump.get(group.name)
            if jump:
                return jump
        return None


def _group_jumps(groups: Iterable[Group]) -> dict[str, str | None]:
    """A group's bastion, inherited from the nearest ancestor that has one."""
    by_id = {g.id: g for g in groups}
    jumps: dict[str, str | None] = {}
    for group in by_id.values():
        current: Group | None = group
        while current is not None and not current.proxy_jump:
            current = by_id.get(current.parent_id) if current.parent_id else None
        jumps[group.name] = current.proxy_jump if current else None
    return jumps


def _ref(host: Host) -> HostRef:
    return HostRef(host.name, host.address, host.port, host.user)


def machine_trust_ids(session: Session, tenant_id: int) -> dict[str, str]:
    """The identity whose key each live machine of the tenant's deployments is judged by
    (its provider's instance id), by its inventory host's name."""
    rows = session.execute(
        select(Machine.name, Deployment.provider, Machine.provider_id)
        .join(Deployment, Deployment.id == Machine.deployment_id)
        .where(
            Deployment.tenant_id == tenant_id,
            Machine.provider_id.is_not(None),
            Machine.state != "terminated",
        )
        .order_by(Machine.id)
    )
    return {
        name: machine_trust_id(provider, instance)
        for name, provider, instance in rows
        if instance is not None  # for mypy: the query takes only these
    }


def host_trust(host: Host, machines: dict[str, str]) -> str:
    """The identity whose key an inventory host is judged by: the machine it is, or itself."""
    return machines.get(host.name) or host_trust_id(host.id)


def resolve_target(
    ctx: Context, target: str, *, user: str | None = None, identity: str | None = None
) -> list[Endpoint]:
    """The endpoints a target selects, with the credentials each host is reached with.

    A host's own key (its credentials: a stored key `key:NAME`, or for the local CLI a
    file `key:/path`) wins over `identity`, which is for hosts without one; likewise its
    own user over `user` (pssh's -i and -l).
    """
    expression = parse_target(target)
    endpoints = []
    with ctx.store.session() as session:
        resolver = _InventoryResolver(session, ctx.tenant_id(), files_allowed=ctx.is_local)
        machines = machine_trust_ids(session, ctx.tenant_id())
        selected = evaluate(expression, resolver)
        stored = private_keys(
            session,
            ctx,
            {
                (host.credentials or "").removeprefix("key:")
                for ref in selected
                if (host := resolver.host(ref.name)) is not None
                and is_stored_reference(host.credentials)
            },
        )
        for ref in selected:
            host = resolver.host(ref.name)
            key_file, client_key, jump, trust_id, host_id = None, None, None, None, None
            if host is not None and ref.address == host.address:
                credentials = host.credentials or ""
                if is_stored_reference(credentials):
                    client_key = stored.get(credentials.removeprefix("key:"))
                    if client_key is None:
                        raise NotFound(
                            f"host {host.name} logs in with the SSH key {credentials[4:]!r}, "
                            "which is not stored (provisor keys add)",
                            field="target",
                        )
                elif credentials.startswith("key:"):
                    key_file = credentials.removeprefix("key:")
                jump = resolver.proxy_jump(host)
                if (ref.port or 22) == host.port:  # the host itself, not another port of it
                    trust_id, host_id = host_trust(host, machines), host.id
            endpoints.append(
                Endpoint(
                    name=ref.name,
                    address=ref.address,
                    port=ref.port or 22,
                    user=ref.user or user,
                    identity=key_file or (None if client_key else identity),
                    proxy_jump=jump,
                    client_key=client_key,
                    trust_id=trust_id,
                    host_id=host_id,
                )
            )
    return endpoints


def inventory_names(ctx: Context, target: str) -> list[str]:
    """The names of the inventory hosts `target` selects, in natural name order (for
    `hosts list TARGET` and `hosts rm TARGET`). A target that matches nothing, or that
    names a host outside the inventory (`root@10.0.0.9`, a hosts file's stranger), is an
    error: these commands are about inventory hosts only."""
    expression = parse_target(target)
    with ctx.store.session() as session:
        resolver = _InventoryResolver(session, ctx.tenant_id(), files_allowed=ctx.is_local)
        selected = evaluate(expression, resolver)
        outside = [
            ref.name
            for ref in selected
            if (host := resolver.hosts.get(ref.name)) is None or ref.address != host.address
        ]
    if outside:
        raise InvalidInput(
            f"target {target!r} selects {len(outside)} host(s) outside the inventory "
            f"({fold(outside)}); "
            "name inventory hosts (web01, group:web, tag:env=prod, ...)",
            field="target",
        )
    return list(selected.names)
