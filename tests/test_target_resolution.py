"""Targets resolved against a tenant's inventory (services.targets): the hosts each kind
of target selects and how each is reached, whatever the resolver loads lazily (a group's
members only, every host for names and addresses, tags and facts only when asked)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from provisor.core.errors import InvalidInput, NotFound
from provisor.fleet.transport import host_trust_id
from provisor.services import groups, hosts, keys
from provisor.services.context import Context
from provisor.services.schemas import GroupSpec, HostSpec, validate
from provisor.services.targets import resolve_target
from provisor.store.models import Host


def _key() -> str:
    from provisor._asyncssh import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


@pytest.fixture
def inventory(ctx: Context) -> Context:
    """web1-web3 (web3 tagged prod, its own bastion), db1 (facts os=debian), ext (no
    group); groups site > web (static, bastion) and debian (smart); web hosts log in
    with the stored key `deploy`."""
    keys.add_key(ctx, "deploy", _key())
    for i in (1, 2, 3):
        hosts.add_host(
            ctx,
            validate(
                HostSpec,
                {
                    "name": f"web{i}",
                    "address": f"127.0.1.{i}",
                    "user": "ops",
                    "credentials": "key:deploy",
                    "tags": {"env": "prod" if i == 3 else "test"},
                    **({"proxy_jump": "own@bastion:2222"} if i == 3 else {}),
                },
            ),
        )
    hosts.add_host(
        ctx, validate(HostSpec, {"name": "db1", "address": "127.0.2.1", "facts": {"os": "debian"}})
    )
    hosts.add_host(ctx, validate(HostSpec, {"name": "ext", "address": "127.0.3.1", "port": 2200}))
    groups.add_group(ctx, validate(GroupSpec, {"name": "site"}))
    groups.add_group(
        ctx,
        validate(
            GroupSpec,
            {
                "name": "web",
                "parent": "site",
                "proxy_jump": "jump@gateway",
                "members": ["web1", "web2", "web3"],
            },
        ),
    )
    groups.add_group(ctx, validate(GroupSpec, {"name": "debian", "rule": 'facts.os == "debian"'}))
    return ctx


def _names(ctx: Context, target: str) -> list[str]:
    return [e.name for e in resolve_target(ctx, target)]


def test_each_kind_of_target_selects_its_hosts(inventory: Context) -> None:
    ctx = inventory
    assert _names(ctx, "group:web") == ["web1", "web2", "web3"]
    assert _names(ctx, "group:site") == ["web1", "web2", "web3"]  # its subgroup's members
    assert _names(ctx, "group:debian") == ["db1"]  # a smart group reads facts
    assert _names(ctx, "tag:env=prod") == ["web3"]  # tags are read for tag targets
    assert _names(ctx, "web[1-2],db1") == ["db1", "web1", "web2"]
    assert _names(ctx, "127.0.1.2") == ["web2"]  # an address names its host
    assert _names(ctx, "group:web&tag:env=test") == ["web1", "web2"]
    assert _names(ctx, "group:site!web2") == ["web1", "web3"]
    assert _names(ctx, "*") == ["db1", "ext", "web1", "web2", "web3"]


def test_members_are_reached_with_their_own_and_their_groups_settings(inventory: Context) -> None:
    ctx = inventory
    by_name = {e.name: e for e in resolve_target(ctx, "group:web,db1,ext", user="fallback")}
    web1, web3, db1, ext = by_name["web1"], by_name["web3"], by_name["db1"], by_name["ext"]
    assert web1.proxy_jump == "jump@gateway"  # inherited from its group
    assert web3.proxy_jump == "own@bastion:2222"  # its own wins
    assert db1.proxy_jump is None
    assert web1.user == "ops" and db1.user == "fallback"
    assert web1.client_key is not None and "PRIVATE KEY" in web1.client_key
    assert db1.client_key is None
    assert (ext.address, ext.port) == ("127.0.3.1", 2200)
    with ctx.store.session() as session:
        web1_id = session.scalar(select(Host.id).where(Host.name == "web1"))
    assert web1.trust_id == host_trust_id(web1_id) and web1.host_id == web1_id


def test_without_any_bastion_no_groups_are_needed(ctx: Context) -> None:
    hosts.add_host(ctx, validate(HostSpec, {"name": "solo", "address": "127.0.4.1"}))
    groups.add_group(ctx, validate(GroupSpec, {"name": "g", "members": ["solo"]}))
    (solo,) = resolve_target(ctx, "group:g")
    assert solo.proxy_jump is None and solo.host_id is not None


def test_unknown_parts_are_named(inventory: Context) -> None:
    with pytest.raises(NotFound, match="no group named 'nope'"):
        resolve_target(inventory, "group:nope")
    with pytest.raises(InvalidInput, match=r"no hosts named web\[7-8\]"):
        resolve_target(inventory, "web[7-8]")
    with pytest.raises(InvalidInput, match="matches no host"):
        resolve_target(inventory, "tag:env=none")
