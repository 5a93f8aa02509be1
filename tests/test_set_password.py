"""`config set-password` over 100 real OpenSSH hosts: every host takes its new password
for an SSH login, the passwords are readable by who may read them and appear nowhere
else (database, job files, logs, output), and a rollback gives the old ones back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncssh
import pytest

from provisor.core.access import Role
from provisor.core.errors import Forbidden
from provisor.machines import SandboxHost
from provisor.services import importing, passwords
from provisor.services.context import Context
from provisor.testing.pytest_plugin import Testbed
from test_fleet import cli, inventory, make_context

pytestmark = [pytest.mark.testbed]

HOSTS = 100


async def login(host: SandboxHost, password: str) -> bool:
    """Whether `ops` logs in to `host` with `password` (and runs a command there)."""
    try:
        async with asyncssh.connect(
            host.address,
            host.port,
            username="ops",
            password=password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
            connect_timeout=20,
        ) as connection:
            done = await connection.run("id -un", check=False)
            return done.stdout == "ops\n"
    except asyncssh.PermissionDenied:
        return False


async def logins(hosts: list[SandboxHost], passwords_by_host: dict[str, str]) -> list[bool]:
    slots = asyncio.Semaphore(25)

    async def one(host: SandboxHost) -> bool:
        async with slots:
            return await login(host, passwords_by_host[host.name])

    return await asyncio.gather(*(one(h) for h in hosts))


@pytest.fixture(scope="module")
def hundred(
    module_testbed: Testbed, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[SandboxHost], Path]:
    hosts = module_testbed(HOSTS, password_login=True)
    home = tmp_path_factory.mktemp("password-home")
    ctx = make_context(home)
    importing.import_hosts(ctx, inventory(hosts, "hundred"), source="hundred.ini")
    ctx.store.close()
    made = cli("run", "group:hundred", "--", "useradd -m -s /bin/sh ops", home=home)
    assert made.returncode == 0, made.stderr
    return hosts, home


def everything_written(home: Path) -> bytes:
    """Every byte provisor keeps in its home: the database, job output files, anything."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_set_password_on_100_hosts_logs_in_everywhere_and_leaks_nowhere(
    hundred: tuple[list[SandboxHost], Path],
) -> None:
    hosts, home = hundred
    done = cli(
        "config", "set-password", "--user", "ops", "group:hundred", "--random",
        "--output", "json", home=home, env={"PROVISOR_LOG_LEVEL": "debug"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == HOSTS and all(r["outcome"] == "ok" for r in results)
    assert all(r["details"]["changes"] == 1 for r in results)

    ctx = make_context(home)
    try:
        given = {h.name: passwords.get_password(ctx, h.name, "ops")[0] for h in hosts}
    finally:
        ctx.store.close()
    assert all(view.state == "current" for view in given.values())
    secrets = {name: view.password for name, view in given.items()}
    assert len(set(secrets.values())) == HOSTS  # --random: one per host
    assert all(asyncio.run(logins(hosts, secrets)))

    written = everything_written(home)
    shown = (done.stdout + done.stderr).encode()
    jobs = cli("jobs", "list", "--output", "json", home=home).stdout
    events = cli("events", "--output", "json", home=home).stdout
    for password in secrets.values():
        assert password.encode() not in written
        assert password.encode() not in shown
        assert password not in jobs + events
    assert "password changed" in results[0]["stdout"]

    apply_id = next(j["id"] for j in json.loads(jobs) if j["kind"] == "config-apply")
    back = cli("config", "rollback", str(apply_id), home=home)
    assert back.returncode == 0, back.stderr
    assert not any(asyncio.run(logins(hosts[:5], secrets)))  # the old (locked) ones are back


def test_reading_a_password_takes_the_right_and_leaves_an_event(
    hundred: tuple[list[SandboxHost], Path],
) -> None:
    hosts, home = hundred
    ctx = make_context(home)
    try:
        operator = Context(
            store=ctx.store, actor="op", tenant="default", home=home, role=Role.operator
        )
        with pytest.raises(Forbidden):
            passwords.get_password(operator, hosts[0].name, "ops")
    finally:
        ctx.store.close()
    shown = cli("config", "password", hosts[0].name, "--user", "ops", home=home)
    assert shown.returncode == 0 and shown.stdout.strip()
    events = json.loads(cli("events", "--output", "json", home=home).stdout)
    assert any(e["kind"] == "password.read" for e in events)
