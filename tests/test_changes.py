"""Fleet configuration changes end to end from the CLI, on real OpenSSH testbed hosts with
their own filesystems: plan -> apply -> check -> rollback -> check, every resource type,
byte for byte; a canary rollout that stops at its threshold; bad change sets."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import passlib.hash
import pytest

from provisor import machines
from provisor.machines import SandboxHost
from provisor.services import importing
from provisor.testing.pytest_plugin import Testbed
from test_fleet import cli, inventory, make_context

pytestmark = [pytest.mark.testbed]

DEMO_SERVICE = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          provisor-demo
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: a stand-in daemon for provisor's tests
### END INIT INFO
PIDFILE=/var/lib/provisor-demo.pid
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
case "$1" in
  start) running && exit 0
         echo start >> /var/lib/provisor-demo.starts
         setsid sleep 100000 </dev/null >/dev/null 2>&1 &
         echo $! > "$PIDFILE" ;;
  stop) running && kill "$(cat "$PIDFILE")"; rm -f "$PIDFILE" ;;
  restart) "$0" stop; "$0" start ;;
  status) running ;;
  *) exit 2 ;;
esac
"""

ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYgZZ6ZLcVnIaUHv5QX1F5m8LhB0LSqCqvYvLGqc6+M alice"

# Every path a change below touches, and the account files a user change rewrites.
WATCHED = [
    "/etc/motd-provisor",
    "/etc/issue.net",
    "/etc/app.conf",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/sysctl.d/99-provisor.conf",
    "/var/lib/provisor-demo.starts",
]


def fingerprint(host: SandboxHost, paths: list[str] = WATCHED) -> dict[str, Any]:
    """Each path's bytes, mode and owner as the host sees them (None: missing)."""
    found: dict[str, Any] = {}
    for path in paths:
        local = machines.host_file(host, path)
        try:
            info = local.lstat()
        except FileNotFoundError:
            found[path] = None
            continue
        found[path] = (local.read_bytes(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return found


def read(host: SandboxHost, path: str) -> str:
    return machines.host_file(host, path).read_text()


def prepare(host: SandboxHost) -> None:
    """What the hosts have before the change: a config file, a stopped sysv service."""
    machines.host_file(host, "/etc/app.conf").write_text("# app\nserver=old.example.test\nport=1\n")
    os.chmod(machines.host_file(host, "/etc/app.conf"), 0o640)
    script = machines.host_file(host, "/etc/init.d/provisor-demo")
    script.write_text(DEMO_SERVICE)
    script.chmod(0o755)


def change_set(path: Path, password_hash: str) -> Path:
    path.write_text(
        f"""\
name: round-trip
vars:
  ldap_server: ldap2.example.test
resources:
  - type: file
    path: /etc/motd-provisor
    template: |
      Welcome to {{{{ host.name }}}} ({{{{ host.address }}}}); directory {{{{ ldap_server }}}}
    mode: "0640"
    owner: root
    group: adm
  - type: file
    path: /etc/issue.net
    content: "managed by provisor\\n"
    mode: "0600"
  - type: line
    path: /etc/app.conf
    regexp: '^server='
    line: server={{{{ ldap_server }}}}
  - type: hosts_entry
    address: 10.9.8.7
    names: [ldap2.example.test, ldap2]
  - type: user
    name: alice
    groups: [adm]
    password_hash: '{password_hash}'
    authorized_keys: ["{ALICE_KEY}"]
  - type: service
    name: provisor-demo
    state: running
    enabled: true
    restart_on: [/etc/app.conf]
  - type: sysctl
    name: kernel.domainname
    value: provisor.test
"""
    )
    return path


@pytest.fixture(scope="module")
def trio(module_testbed: Testbed) -> list[SandboxHost]:
    hosts = module_testbed(3)
    for host in hosts:
        prepare(host)
    return hosts


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, trio: list[SandboxHost]) -> Path:
    home = tmp_path_factory.mktemp("changes-home")
    ctx = make_context(home)
    importing.import_hosts(ctx, inventory(trio, "trio"), source="trio.ini")
    ctx.store.close()
    return home


def domainname(host: SandboxHost, home: Path) -> str:
    done = cli("run", host.name, "--", "cat /proc/sys/kernel/domainname", home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(": ", 1)[-1]


def test_plan_apply_check_rollback_round_trip(
    trio: list[SandboxHost], home: Path, tmp_path: Path
) -> None:
    a, b, _ = trio
    secret = passlib.hash.sha512_crypt.hash("correct horse battery staple")
    changes = change_set(tmp_path / "round-trip.yaml", secret)
    before_a, before_b = fingerprint(a), fingerprint(b)
    domain_before = domainname(a, home)

    plan = cli("config", "plan", str(changes), a.name, home=home)
    assert plan.returncode == 0, plan.stderr
    assert "+server=ldap2.example.test" in plan.stdout and "-server=old.example.test" in plan.stdout
    assert f"Welcome to {a.name} ({a.address})" in plan.stdout
    assert "user alice: created" in plan.stdout and secret not in plan.stdout + plan.stderr
    assert (
        f"{a.name}: 8 changes" in plan.stderr
    )  # motd, issue, app.conf, hosts, user, service, sysctl + its file
    assert fingerprint(a) == before_a  # a plan changes nothing

    applied = cli("config", "apply", str(changes), a.name, home=home)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    apply_id = int(applied.stderr.split("provisor config rollback ")[1].split()[0])
    assert read(a, "/etc/motd-provisor") == (
        f"Welcome to {a.name} ({a.address}); directory ldap2.example.test\n"
    )
    motd = machines.host_file(a, "/etc/motd-provisor").stat()
    assert stat.S_IMODE(motd.st_mode) == 0o640
    assert read(a, "/etc/app.conf") == "# app\nserver=ldap2.example.test\nport=1\n"
    assert "10.9.8.7\tldap2.example.test ldap2\n" in read(a, "/etc/hosts")
    assert f"alice:{secret}:" in read(a, "/etc/shadow")
    assert (
        "adm:x:4:" in read(a, "/etc/group")
        and "alice" in read(a, "/etc/group").split("adm:")[1].split("\n")[0]
    )
    assert read(a, "/var/lib/provisor-demo.starts").count("start") == 1  # started, once
    assert domainname(a, home) == "provisor.test"
    assert fingerprint(b) == before_b  # a change on host A never touches host B

    check = cli("config", "check", str(changes), a.name, home=home)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{a.name}: up to date" in check.stderr
    again = cli("config", "apply", str(changes), a.name, home=home)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert read(a, "/var/lib/provisor-demo.starts").count("start") == 1  # nothing restarted

    # drift: someone edits the file by hand
    machines.host_file(a, "/etc/app.conf").write_text("# app\nserver=rogue\nport=1\n")
    drift = cli("config", "check", str(changes), a.name, "--output", "json", home=home)
    assert drift.returncode == 1
    (report,) = [json.loads(line) for line in drift.stdout.splitlines()]
    assert report["details"]["changes"] == 2  # the file, and the service it restarts
    assert "+server=ldap2.example.test" in report["stdout"]

    back = cli("config", "rollback", str(apply_id), home=home)
    assert back.returncode == 0, back.stdout + back.stderr
    after = fingerprint(a)
    for path in WATCHED:
        if path == "/var/lib/provisor-demo.starts":
            continue  # the daemon's own log of its starts
        assert after[path] == before_a[path], path  # content, mode and owner, byte for byte
    assert domainname(a, home) == domain_before
    status = cli("run", a.name, "--", "/etc/init.d/provisor-demo status", home=home)
    assert status.returncode == 1  # stopped again, as it was

    history = cli("config", "history", a.name, "--output", "json", home=home)
    kinds = [entry["kind"] for entry in json.loads(history.stdout)]
    assert kinds[0] == "config-rollback" and "config-apply" in kinds and "config-check" in kinds


def test_a_bad_change_set_is_refused_with_file_line_and_field_before_any_host(
    trio: list[SandboxHost], home: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources:\n  - type: file\n    path: /etc/x\n    content: hi\n    mode: rw\n")
    done = cli("config", "apply", str(bad), trio[0].name, home=home)
    assert done.returncode != 0
    assert f"{bad}:5" in done.stderr and "resources[0].mode" in done.stderr

    undefined = tmp_path / "undefined.yaml"
    undefined.write_text(
        "resources:\n  - type: file\n    path: /etc/x\n    template: 'a\\n{{ nowhere }}'\n"
    )
    done = cli("config", "apply", str(undefined), trio[0].name, home=home)
    assert done.returncode != 0 and "nowhere" in done.stderr and trio[0].name in done.stderr
    assert not machines.host_file(trio[0], "/etc/x").exists()
    jobs = cli("jobs", "list", "--output", "json", home=home)
    assert all(job["kind"] != "config-apply" or job["id"] for job in json.loads(jobs.stdout))


@pytest.fixture(scope="module")
def fifty(
    module_testbed: Testbed, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[SandboxHost], Path]:
    hosts = module_testbed(50)
    home = tmp_path_factory.mktemp("canary-home")
    ctx = make_context(home)
    importing.import_hosts(ctx, inventory(hosts, "fifty"), source="fifty.ini")
    ctx.store.close()
    return hosts, home


def test_a_canary_rollout_stops_at_its_threshold_and_rollback_restores_the_changed(
    fifty: tuple[list[SandboxHost], Path], tmp_path: Path
) -> None:
    hosts, home = fifty
    failing = set(range(20, 30))  # the 21st to 30th hosts cannot take the change
    for index in failing:  # its directory is a file there: the write fails
        machines.host_file(hosts[index], "/etc/provisor-canary").write_text("in the way\n")
    changes = tmp_path / "canary.yaml"
    changes.write_text(
        "resources:\n  - type: file\n    path: /etc/provisor-canary/app.conf\n"
        '    content: "version=2\\n"\n'
    )
    done = cli(
        "config",
        "apply",
        str(changes),
        "group:fifty",
        "--canary",
        "2",
        "--batch",
        "10",
        "--max-failures",
        "5",
        "--output",
        "json",
        home=home,
    )
    assert done.returncode == 1, done.stderr
    results = {r["host"]: r for r in map(json.loads, done.stdout.splitlines())}
    order = sorted(results, key=lambda name: [h.name for h in hosts].index(name))
    assert len(results) == 50
    # stages: 2 canaries, then 10 at a time; the 4th batch (hosts 23-32) took the
    # failures to 10 > 5, so hosts 33-50 were never touched
    outcomes = [results[name]["outcome"] for name in order]
    assert outcomes[:20] == ["ok"] * 20
    assert outcomes[20:30] == ["failed"] * 10
    assert outcomes[30:32] == ["ok"] * 2
    assert outcomes[32:] == ["skipped"] * 18
    assert "more than --max-failures 5" in results[order[40]]["error"]
    for index, host in enumerate(hosts):
        changed = machines.host_file(host, "/etc/provisor-canary/app.conf")
        if index < 20 or index in (30, 31):
            assert changed.read_text() == "version=2\n", host.name
        elif index in failing:
            assert read(host, "/etc/provisor-canary") == "in the way\n"
        else:
            assert not machines.host_file(host, "/etc/provisor-canary").exists(), host.name

    jobs = json.loads(cli("jobs", "list", "--output", "json", home=home).stdout)
    apply_id = next(j["id"] for j in jobs if j["kind"] == "config-apply")
    back = cli("config", "rollback", str(apply_id), "--output", "json", home=home)
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = {r["host"]: r for r in map(json.loads, back.stdout.splitlines())}
    # the hosts it worked on (a failed one may be half written): never the skipped ones
    assert sorted(rolled) == sorted(order[:32])
    assert sorted(h for h, r in rolled.items() if r["details"]["changes"]) == sorted(
        order[:20] + order[30:32]
    )
    for index, host in enumerate(hosts):
        if index not in failing:
            assert not machines.host_file(host, "/etc/provisor-canary/app.conf").exists()
