"""The store and the services over it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select

from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.services import events, groups, hosts, importing
from provisor.services.context import Context
from provisor.services.schemas import GroupSpec, HostChanges, HostSpec, validate
from provisor.store import Event, Store, migrate
from provisor.store.db import current_revision, head_revision
from provisor.store.models import Host


def host(name: str, **kw: object) -> HostSpec:
    return validate(HostSpec, {"name": name, **kw})


def group(name: str, **kw: object) -> GroupSpec:
    return validate(GroupSpec, {"name": name, **kw})


def test_migrations_applied_on_first_use(store: Store) -> None:
    assert current_revision(store.engine) == head_revision() is not None
    tables = set(inspect(store.engine).get_table_names())
    assert {"tenants", "hosts", "groups", "group_members", "events"} <= tables
    migrate(store.engine)  # a second time is a no-op
    assert current_revision(store.engine) == head_revision()


def test_host_lifecycle_writes_events(ctx: Context) -> None:
    added = hosts.add_host(ctx, host("web01", address="10.1.0.5", tags={"env": "prod"}))
    assert added.address == "10.1.0.5" and added.port == 22 and added.tags == {"env": "prod"}
    changed = hosts.update_host(
        ctx, "web01", validate(HostChanges, {"port": 2222, "tags": {"env": None}})
    )
    assert changed.port == 2222 and changed.tags == {}
    hosts.remove_host(ctx, "web01")
    with pytest.raises(NotFound):
        hosts.get_host(ctx, "web01")
    kinds = [(e.kind, e.subject, e.outcome, e.actor) for e in events.list_events(ctx)]
    assert kinds == [
        ("host.added", "web01", "ok", "tester"),
        ("host.changed", "web01", "ok", "tester"),
        ("host.removed", "web01", "ok", "tester"),
    ]


def test_duplicate_host_refused_and_attempt_audited(ctx: Context) -> None:
    hosts.add_host(ctx, host("db01"))
    with pytest.raises(Conflict, match="already exists") as info:
        hosts.add_host(ctx, host("db01", address="10.0.0.9"))
    assert info.value.field == "name"
    assert [h.address for h in hosts.list_hosts(ctx)] == ["db01"]
    last = events.list_events(ctx)[-1]
    assert (last.kind, last.outcome) == ("host.added", "failed")
    assert "already exists" in last.details["error"]


def test_tenants_are_isolated(store: Store) -> None:
    alpha = Context(store=store, actor="a", tenant="alpha")
    beta = Context(store=store, actor="b", tenant="beta")
    hosts.add_host(alpha, host("shared-name"))
    hosts.add_host(beta, host("shared-name", address="10.9.9.9"))
    assert [h.address for h in hosts.list_hosts(beta)] == ["10.9.9.9"]
    hosts.remove_host(alpha, "shared-name")
    assert [h.name for h in hosts.list_hosts(beta)] == ["shared-name"]
    assert {e.tenant for e in events.list_events(beta)} == {"beta"}


def test_static_groups_form_a_tree(ctx: Context) -> None:
    for name in ("web01", "web02", "db01"):
        hosts.add_host(ctx, host(name))
    groups.add_group(ctx, group("site"))
    groups.add_group(ctx, group("web", parent="site", members=["web01", "web02"]))
    groups.add_group(ctx, group("db", parent="site", members=["db01"]))
    assert groups.group_members(ctx, "site") == ["db01", "web01", "web02"]
    assert groups.get_group(ctx, "site").children == ["db", "web"]
    with pytest.raises(InvalidInput, match="inside"):
        groups.set_parent(ctx, "site", "web")
    with pytest.raises(Conflict, match="subgroups"):
        groups.remove_group(ctx, "site")
    groups.change_members(ctx, "web", remove=["web02"], add=["db01"])
    assert groups.group_members(ctx, "web") == ["db01", "web01"]
    hosts.remove_host(ctx, "db01")  # membership goes with the host
    assert groups.group_members(ctx, "site") == ["web01"]


def test_smart_group_evaluated_when_used(ctx: Context) -> None:
    hosts.add_host(ctx, host("a", tags={"env": "prod"}, facts={"os": "debian", "cpus": 8}))
    hosts.add_host(ctx, host("b", tags={"env": "dev"}, facts={"os": "debian"}))
    groups.add_group(ctx, group("prod-debian", rule='facts.os == "debian" and tags.env == "prod"'))
    assert groups.group_members(ctx, "prod-debian") == ["a"]
    hosts.update_host(ctx, "b", validate(HostChanges, {"tags": {"env": "prod"}}))
    assert groups.group_members(ctx, "prod-debian") == ["a", "b"]
    with pytest.raises(InvalidInput, match="smart"):
        groups.change_members(ctx, "prod-debian", add=["a"])


def test_malformed_rule_names_the_column(ctx: Context) -> None:
    with pytest.raises(InvalidInput) as info:
        groups.add_group(ctx, group("bad", rule='tags.env == "prod" and'))
    assert info.value.field == "rule" and info.value.column is not None
    assert groups.list_groups(ctx) == []


PSSH = """\
# web tier
root@web01:2222
web02   # trailing comment

10.0.0.7
"""

ANSIBLE = """\
[web]
web01 ansible_host=10.0.0.1 ansible_port=2222 ansible_user=deploy
web02 ansible_host=10.0.0.2 env=prod

[db]
db01 ansible_host=10.0.0.3

[site:children]
web
db
"""


def test_import_pssh_file(ctx: Context) -> None:
    report = importing.import_hosts(ctx, PSSH, source="hosts.txt")
    assert report.format == "pssh"
    assert sorted(report.hosts_created) == ["10.0.0.7", "web01", "web02"]
    web01 = hosts.get_host(ctx, "web01")
    assert (web01.user, web01.port) == ("root", 2222)


def test_import_ansible_inventory(ctx: Context) -> None:
    report = importing.import_hosts(ctx, ANSIBLE, source="inventory.ini")
    assert report.format == "ansible"
    assert sorted(report.groups_created) == ["db", "site", "web"]
    web01 = hosts.get_host(ctx, "web01")
    assert (web01.address, web01.port, web01.user) == ("10.0.0.1", 2222, "deploy")
    web02 = hosts.get_host(ctx, "web02")
    assert web02.facts == {"env": "prod"} and web02.tags == {}  # a variable is a fact
    assert groups.group_members(ctx, "site") == ["db01", "web01", "web02"]
    assert groups.get_group(ctx, "web").parent == "site"


FACTS_INVENTORY = """\
[web]
web01 ansible_host=10.0.0.1 ansible_user=deploy os=debian cpus=8 version=12.10 cpu.count=4
web02 ansible_host=10.0.0.2 ansible_ssh_private_key_file=/keys/web os=ubuntu debug=true

[web:vars]
ansible_port=2222
env=prod
ansible_python_interpreter=/usr/bin/python3
"""


def test_import_puts_variables_in_facts_and_connection_variables_in_place(ctx: Context) -> None:
    importing.import_hosts(ctx, FACTS_INVENTORY, source="facts.ini")
    web01, web02 = hosts.list_hosts(ctx)
    assert (web01.address, web01.port, web01.user) == ("10.0.0.1", 2222, "deploy")
    assert web01.facts == {
        "ansible_python_interpreter": "/usr/bin/python3",
        "cpu": {"count": 4},
        "cpus": 8,
        "env": "prod",
        "os": "debian",
        "version": "12.10",  # typed only where the type writes the text back exactly
    }
    assert web02.credentials == "key:/keys/web" and web02.facts["debug"] is True
    assert web01.tags == {} and web02.tags == {}
    groups.add_group(ctx, group("debian", rule='facts.os == "debian" and facts.cpu.count >= 4'))
    assert groups.group_members(ctx, "debian") == ["web01"]
    groups.add_group(ctx, group("prod", rule='facts.env == "prod" and facts.cpus >= 8'))
    assert groups.group_members(ctx, "prod") == ["web01"]

    # an update merges the file's facts into the host's, and keeps what the file lacks
    hosts.update_host(ctx, "web01", validate(HostChanges, {"facts": {"rack": 7}}))
    again = FACTS_INVENTORY.replace("cpu.count=4", "cpu.model=EPYC")
    importing.import_hosts(ctx, again, source="facts.ini", on_existing="update")
    facts = hosts.get_host(ctx, "web01").facts
    assert facts["cpu"] == {"count": 4, "model": "EPYC"} and facts["rack"] == 7

    # a variable in the way of another is an error at the host's line; nothing changes
    clash = "[db]\ndb01 ansible_host=10.0.0.3 cpu=4 cpu.count=8\n"
    with pytest.raises(InvalidInput) as caught:
        importing.import_hosts(ctx, clash, source="clash.ini")
    assert str(caught.value).startswith("clash.ini:2:") and "fact 'cpu.count'" in str(caught.value)
    stored = "[web]\nweb01 cpu.count.max=8\n"
    with pytest.raises(InvalidInput, match=r"facts\.ini:2: host 'web01': fact 'cpu\.count\.max'"):
        importing.import_hosts(ctx, stored, source="facts.ini", on_existing="update")
    assert [h.name for h in hosts.list_hosts(ctx)] == ["web01", "web02"]
    assert hosts.get_host(ctx, "web01").facts == facts


def test_facts_by_dotted_names_and_facts_stored_flat_before(ctx: Context, store: Store) -> None:
    hosts.add_host(ctx, host("a", facts={"cpu.count": 8, "os": "debian"}))
    assert hosts.get_host(ctx, "a").facts == {"cpu": {"count": 8}, "os": "debian"}
    with pytest.raises(InvalidInput) as caught:
        hosts.update_host(ctx, "a", validate(HostChanges, {"facts": {"os.version": "12"}}))
    assert caught.value.field == "facts" and "fact 'os.version': 'os' is \"debian\"" in str(
        caught.value
    )
    with pytest.raises(InvalidInput, match=r"facts: invalid fact name 'cpu\.\.count'"):
        validate(HostChanges, {"facts": {"cpu..count": 1}})
    # a host whose facts were stored flat before names were split (as `--fact cpu.count=8`
    # stored them): rules read them nested, nothing rewrites them, a write supersedes them
    hosts.add_host(ctx, host("b"))
    with store.session() as session:
        row = session.scalar(select(Host).where(Host.name == "b"))
        assert row is not None
        row.facts = {"cpu.count": 16, "os": "debian"}
    groups.add_group(ctx, group("big", rule="facts.cpu.count >= 8"))
    assert groups.group_members(ctx, "big") == ["a", "b"]
    assert hosts.get_host(ctx, "b").facts == {"cpu.count": 16, "os": "debian"}
    changed = hosts.update_host(ctx, "b", validate(HostChanges, {"facts": {"cpu.count": 4}}))
    assert changed.facts == {"os": "debian", "cpu": {"count": 4}}
    assert groups.group_members(ctx, "big") == ["a"]
    assert hosts.list_hosts(ctx, target="group:big") == hosts.list_hosts(ctx, names=["a"])
    with pytest.raises(InvalidInput, match="matches no host"):
        hosts.list_hosts(ctx, target="c*")


def test_import_is_all_or_nothing(ctx: Context, store: Store) -> None:
    bad = ANSIBLE + "[more]\nweb03 ansible_port=notaport\n"
    with pytest.raises(InvalidInput) as info:
        importing.import_hosts(ctx, bad, source="inventory.ini")
    assert "inventory.ini:12" in str(info.value)
    assert hosts.list_hosts(ctx) == [] and groups.list_groups(ctx) == []

    hosts.add_host(ctx, host("db01"))
    with pytest.raises(Conflict, match="db01 \\(line 6\\)"):
        importing.import_hosts(ctx, ANSIBLE, source="inventory.ini")
    assert [h.name for h in hosts.list_hosts(ctx)] == ["db01"]
    report = importing.import_hosts(ctx, ANSIBLE, source="inventory.ini", on_existing="skip")
    assert report.hosts_skipped == ["db01"] and len(report.hosts_created) == 2
    with store.session() as session:
        outcomes = [e.outcome for e in session.scalars(select(Event).order_by(Event.id))]
    assert outcomes == ["failed", "ok", "failed", "ok"]


def test_host_keys_move_from_addresses_to_what_they_identify(ctx: Context, store: Store) -> None:
    """Migration 0008: a key of an address that inventory hosts have goes to each of them
    (to the machine, for a live machine's host); a key of an address no host has stays
    with the address. Downgrading keeps one key per address again."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import text, update

    from db_rows import add_deployment
    from provisor.store import Base
    from provisor.store.db import _alembic_config
    from provisor.store.models import KnownHostKey
    from provisor.store.orchestration import Machine

    web = hosts.add_host(ctx, host("web", address="10.0.0.1"))
    again = hosts.add_host(ctx, host("web-again", address="10.0.0.1"))
    machine = hosts.add_host(ctx, host("shop-app-1", address="10.0.0.3"))
    hosts.add_host(ctx, host("other-port", address="10.0.0.1", port=2222))
    add_deployment(store, "shop", machines=[("app", 1)])
    with store.session() as session:
        session.execute(update(Machine).values(provider_id="i-0abc", state="ready"))
        ids = {name: id_ for name, id_ in session.execute(select(Host.name, Host.id))}
        tenant = session.scalar(select(Host.tenant_id).where(Host.name == web.name))
    config = _alembic_config(store.engine)
    command.downgrade(config, "0006")
    with store.engine.begin() as connection:
        for address, key in (("10.0.0.1", "k-web"), ("10.0.0.3", "k-app"), ("10.9.9.9", "k-x")):
            connection.execute(
                text(
                    "INSERT INTO known_host_keys (tenant_id, address, port, key, first_seen) "
                    "VALUES (:t, :a, 22, :k, CURRENT_TIMESTAMP)"
                ),
                {"t": tenant, "a": address, "k": key},
            )
    command.upgrade(config, "head")
    with store.session() as session:
        moved = sorted(
            (subject, host_id, key)
            for subject, host_id, key in session.execute(
                select(KnownHostKey.subject, KnownHostKey.host_id, KnownHostKey.key)
            )
        )
    assert moved == sorted(
        [
            (f"host:{ids[web.name]}", ids[web.name], "k-web"),
            (f"host:{ids[again.name]}", ids[again.name], "k-web"),
            ("machine:local/i-0abc", ids[machine.name], "k-app"),
            ("addr:10.9.9.9:22", None, "k-x"),
        ]
    )
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "known_host_keys" in repr(d)] == []
    hosts.remove_host(ctx, web.name)  # its key goes with it
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(KnownHostKey)) == 3
    command.downgrade(config, "0006")
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT address, port, key FROM known_host_keys"))
        back = sorted((address, port, key) for address, port, key in rows)
    assert back == [("10.0.0.1", 22, "k-web"), ("10.0.0.3", 22, "k-app"), ("10.9.9.9", 22, "k-x")]
    command.upgrade(config, "head")


def test_migrating_a_table_keeps_the_rows_that_point_at_it(store: Store) -> None:
    """SQLite changes a table by copying it: the machines of a deployment (pointing at it,
    deleted with it) survive a migration of the deployments table both ways."""
    from alembic import command

    from db_rows import add_deployment
    from provisor.store.db import _alembic_config
    from provisor.store.orchestration import Machine

    add_deployment(store, "shop", machines=[("app", 1), ("db", 1)])
    config = _alembic_config(store.engine)
    command.downgrade(config, "0008")  # 0009 changes the deployments table
    command.upgrade(config, "head")
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Machine)) == 2
