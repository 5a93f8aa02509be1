"""examples/changes/: every example change set loads, and the ones a sandbox host can run
go through `provisor config plan`, `apply` and `check` with no drift left.

hosts-file runs as it is. ldap-client needs an `sssd` service: a sysv init script (LSB
header, a `sleep` as the daemon) stands in for it, since the testbed has no systemd and
installing sssd would fetch packages from the network.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncssh
import pytest

from machines_needed import requires_root
from provisor import machines
from provisor.core.changes.load import load_change_set
from provisor.core.changes.model import FileResource, ServiceResource, UserResource
from provisor.core.changes.render import HostContext, render
from provisor.machines import SandboxHost
from provisor.testing.pytest_plugin import Testbed
from provisor_cli import Provisor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "changes"
NAMES = ["hosts-file", "ldap-client", "ntp", "password-rotation"]


# The stand-in for sssd: a sysv service whose daemon is a `sleep`, and which logs each
# start so the test can tell that restart_on restarted it.
STAND_IN = r"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          sssd
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: a stand-in for sssd (tests)
### END INIT INFO
# Not under /run: a sandbox host shares the machine's /run (only /var and others are its own).
PIDFILE=/var/tmp/sssd-stand-in.pid
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
case "$1" in
  start)
    running && exit 0
    setsid sleep 86400 </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    echo started >> /var/tmp/sssd-stand-in.log ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE" ;;
  restart|force-reload)
    "$0" stop; "$0" start ;;
  status)
    running ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"""


def example(name: str) -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


# --- every example loads --------------------------------------------------------------------


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_and_renders(name: str) -> None:
    change_set = load_change_set(example(name), f"{name}.yaml")
    assert change_set.name == name and change_set.description
    for groups in ((), ("dmz",), ("paris",)):
        host = HostContext("web01", "10.1.0.11", groups=groups)
        for resource in render(change_set, host):
            if isinstance(resource, FileResource):
                assert resource.template is None and resource.content
                assert "{{" not in resource.content and "{%" not in resource.content


def test_the_ntp_template_writes_one_server_line_each() -> None:
    change_set = load_change_set(example("ntp"), "ntp.yaml")
    (conf,) = [r for r in render(change_set, HostContext("a", "10.0.0.1")) if r.type == "file"]
    assert isinstance(conf, FileResource) and conf.content is not None
    servers = [line for line in conf.content.splitlines() if line.startswith("server ")]
    assert servers == [f"server ntp{i}.example.test iburst" for i in (1, 2, 3)]
    assert "\n\n" not in conf.content
    paris = render(change_set, HostContext("b", "10.0.0.2", groups=("paris",)))
    assert "ntp-par1.example.test" in str(paris[1])


def test_ldap_client_group_vars_point_the_dmz_elsewhere() -> None:
    change_set = load_change_set(example("ldap-client"), "ldap-client.yaml")
    for groups, server in (((), "ldap2.example.test"), (("dmz",), "ldap-dmz.example.test")):
        conf = render(change_set, HostContext("web01", "10.1.0.11", groups=groups))[0]
        assert isinstance(conf, FileResource) and conf.content is not None
        assert f"ldap_uri = ldap://{server}\n" in conf.content
    service = change_set.resources[1]
    assert isinstance(service, ServiceResource)
    assert service.restart_on == ["/etc/sssd/sssd.conf"]


def test_the_password_hash_is_sha512_crypt_of_the_documented_password() -> None:
    from passlib.hash import sha512_crypt  # type: ignore[import-untyped]

    change_set = load_change_set(example("password-rotation"), "password-rotation.yaml")
    (user,) = change_set.resources
    assert isinstance(user, UserResource) and user.password_hash is not None
    assert user.password_hash.startswith("$6$")
    assert sha512_crypt.verify("example", user.password_hash)
    assert "provisor config set-password" in example("password-rotation")


# --- on a testbed host: plan, apply, check --------------------------------------------------


async def _as_root(host: SandboxHost, command: str, stdin: str | None = None) -> str:
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as conn:
        done = await conn.run(command, input=stdin, check=True)
        return str(done.stdout)


def on_host(host: SandboxHost, command: str, stdin: str | None = None) -> str:
    return asyncio.run(_as_root(host, command, stdin))


def enrolled(provisor: Provisor, host: SandboxHost, tmp_path: Path) -> str:
    """The host in provisor's inventory (its name is the target)."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"{host.name} ansible_host={host.address} ansible_port={host.port} "
        f"ansible_user={host.user} ansible_ssh_private_key_file={host.client_key}\n"
    )
    provisor("hosts", "import", str(inventory))
    return host.name


def plan_apply_check(provisor: Provisor, name: str, target: str) -> None:
    """plan shows changes, apply makes them, check and a second plan find nothing left."""
    path = str(EXAMPLES / f"{name}.yaml")
    planned = provisor("config", "plan", path, target)
    assert "up to date" not in planned.stdout, planned.stdout
    provisor("config", "apply", path, target)
    checked = provisor("config", "check", path, target, "--output", "json")
    assert no_drift(checked.stdout), checked.stdout
    again = provisor("config", "plan", path, target)
    assert "up to date" in again.stdout, again.stdout


def no_drift(report: str) -> bool:
    """Whether `config check --output json` (a JSON record per host) finds every host as
    the change set says."""
    records = [json.loads(line) for line in report.splitlines() if line.strip()]
    return bool(records) and all(
        r["outcome"] == "ok" and r["details"]["changes"] == 0 for r in records
    )


@requires_root
@pytest.mark.testbed
@pytest.mark.slow
def test_hosts_file_example_applies_and_leaves_no_drift(
    testbed: Testbed, provisor: Provisor, tmp_path: Path
) -> None:
    (host,) = testbed(1)
    on_host(host, "echo '10.0.0.4 ldap1.example.test ldap1' >> /etc/hosts")
    target = enrolled(provisor, host, tmp_path)

    plan_apply_check(provisor, "hosts-file", target)

    hosts = on_host(host, "cat /etc/hosts")
    entries = [line.split() for line in hosts.splitlines()]
    assert ["10.0.0.5", "ldap2.example.test", "ldap2"] in entries
    assert ["10.0.0.7", "repo.example.test", "repo"] in entries
    assert "10.0.0.4" not in hosts
    assert ["127.0.0.1", "localhost"] in entries  # the other lines are kept


@requires_root
@pytest.mark.testbed
@pytest.mark.slow
def test_ldap_client_example_restarts_its_service_and_leaves_no_drift(
    testbed: Testbed, provisor: Provisor, tmp_path: Path
) -> None:
    (host,) = testbed(1)
    on_host(
        host,
        "mkdir -p /etc/sssd && printf '[sssd]\\n' > /etc/sssd/sssd.conf "
        "&& cat > /etc/init.d/sssd && chmod 755 /etc/init.d/sssd && /etc/init.d/sssd start",
        STAND_IN,
    )
    assert on_host(host, "cat /var/tmp/sssd-stand-in.log") == "started\n"
    target = enrolled(provisor, host, tmp_path)

    plan_apply_check(provisor, "ldap-client", target)

    conf = on_host(host, "cat /etc/sssd/sssd.conf; stat -c '%a %U %G' /etc/sssd/sssd.conf")
    assert "ldap_uri = ldap://ldap2.example.test\n" in conf
    assert conf.endswith("600 root root\n")
    # Restarted once, because sssd.conf changed; running and enabled at boot.
    assert on_host(host, "cat /var/tmp/sssd-stand-in.log") == "started\n" * 2
    on_host(host, "/etc/init.d/sssd status && ls /etc/rc2.d/S*sssd")
