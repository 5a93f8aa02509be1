"""Patching against real testbed hosts and a local apt repository: analyze finds what a
host misses, apply upgrades it (reporting from -> to), analyze then finds nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_repo import AptRepo, install, installed_version, ssh, use_only
from provisor.core.errors import InvalidInput
from provisor.core.patches import (
    RebootPolicy,
    check_packages,
    parse_apt_simulation,
    parse_dnf,
    split_packages,
    summarize,
)
from provisor.fleet import Endpoint, SSHPool, execute
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.fleet.patching import PatchApply
from provisor.machines import SandboxHost
from provisor.services import importing, patches
from provisor.services.context import Context
from provisor.services.patches import AnalyzeRequest, ApplyRequest
from provisor.services.schemas import validate
from provisor.store import Store
from provisor.testing.pytest_plugin import Testbed

HELLO = "hello-provisor"
SEC = "sec-provisor"


def inventory(hosts: list[SandboxHost], group: str) -> str:
    lines = [f"[{group}]"]
    for h in hosts:
        lines.append(
            f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
            f"ansible_ssh_private_key_file={h.client_key}"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    home = tmp_path / "home"
    home.mkdir()
    context = Context(
        store=Store(f"sqlite:///{home / 'provisor.db'}"),
        actor="tester",
        tenant="default",
        home=home,
    )
    yield context
    context.store.close()


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVISOR_HOME": str(home), "COLUMNS": "200"}
    env.pop("PROVISOR_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "provisor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


async def _fleet(
    hosts: list[SandboxHost],
    repo: AptRepo,
    with_hello: list[SandboxHost],
    packages: tuple[str, ...] = (HELLO, SEC),
) -> None:
    """Every host on the local repository only; `with_hello` get `packages` installed."""
    await asyncio.gather(*(use_only(h, repo.serve(h)) for h in hosts))
    await asyncio.gather(*(install(h, *packages) for h in with_hello))


async def _publish_v2(hosts: list[SandboxHost], repo: AptRepo) -> None:
    repo.publish(HELLO, "2.0-1")
    repo.publish(SEC, "1.0-2", security=True)
    for host in hosts:
        repo.serve(host)


# the pure part


def test_apt_simulation_lines_are_parsed() -> None:
    text = (
        "Inst hello-provisor [1.0-1] (2.0-1 provisor-test:stable [all])\n"
        "Inst libc6 [2.36-9+deb12u4] (2.36-9+deb12u7 Debian:12.6/stable, "
        "Debian-Security:12/stable-security [amd64]) []\n"
        "Inst newdep (1.0 Debian:12/stable [all])\n"
        "Conf hello-provisor (2.0-1 provisor-test:stable [all])\n"
        "Remv oldthing [0.9]\n"
    )
    found = parse_apt_simulation(text)
    assert [(u.package, u.installed, u.candidate, u.security) for u in found] == [
        ("hello-provisor", "1.0-1", "2.0-1", False),
        ("libc6", "2.36-9+deb12u4", "2.36-9+deb12u7", True),
    ]


def test_dnf_output_is_parsed() -> None:
    found = parse_dnf(
        "openssl-libs.x86_64    1:3.0.7-27.el9    baseos\nbash.x86_64  5.1.8-9.el9  baseos\n",
        "RHSA-2024:1234 Important/Sec. openssl-libs-1:3.0.7-27.el9.x86_64\n",
        "openssl-libs.x86_64 3.0.7-25.el9\nbash.x86_64 5.1.8-6.el9\n",
    )
    assert [(u.package, u.installed, u.candidate, u.security) for u in found] == [
        ("bash", "5.1.8-6.el9", "5.1.8-9.el9", False),
        ("openssl-libs", "3.0.7-25.el9", "3.0.7-27.el9", True),
    ]


@pytest.mark.parametrize(
    "bad", ["-o", "--purge", "a;reboot", "a b", "$(id)", "*", "pkg/1", "", "x" * 200]
)
def test_bad_package_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_packages(["ok-pkg", bad])
    assert caught.value.field == "packages"
    assert "package 2" in str(caught.value)
    with pytest.raises(InvalidInput):
        validate(ApplyRequest, {"target": "x", "packages": [bad]})


def test_good_package_names_pass() -> None:
    assert split_packages("libc6:i386, g++ python3.11,lib_x") == (
        "libc6:i386",
        "g++",
        "python3.11",
        "lib_x",
    )


def test_summary_folds_hosts() -> None:
    found = parse_apt_simulation("Inst hello [1] (2 o:stable [all])\n")
    (line,) = summarize({"tb01": found, "tb02": found, "tb03": found, "db": []})
    assert line.text == "hello 1 -> 2: 3 hosts (tb[01-03])"


# against the testbed


@pytest.mark.testbed
def test_analyze_apply_analyze(testbed: Testbed, tmp_path: Path, ctx: Context) -> None:
    hosts = testbed(3)
    bare = hosts[2]
    repo = AptRepo(tmp_path / "repo")
    repo.publish(HELLO, "1.0-1")
    repo.publish(SEC, "1.0-1")
    asyncio.run(_fleet(hosts, repo, hosts[:2]))
    asyncio.run(_publish_v2(hosts, repo))
    importing.import_hosts(ctx, inventory(hosts, "tb"), source="tb.ini")
    names = [h.name for h in hosts]

    report = asyncio.run(patches.analyze(ctx, AnalyzeRequest(target="group:tb")))
    assert report.job.kind == "patch-analyze" and report.job.summary == {"ok": 3}
    by_package = {m.package: m for m in report.missing}
    assert set(by_package) == {HELLO, SEC}
    assert by_package[HELLO].hosts == names[:2] and not by_package[HELLO].security
    assert by_package[HELLO].text.startswith(f"{HELLO} 1.0-1 -> 2.0-1: 2 hosts (")
    assert by_package[SEC].security and by_package[SEC].candidate == "1.0-2"
    assert report.up_to_date == [bare.name]
    stored = patches.list_patches(ctx)
    assert {(p.host, p.package) for p in stored} == {
        (n, p) for n in names[:2] for p in (HELLO, SEC)
    }
    assert {p.package for p in patches.list_patches(ctx, security=True)} == {SEC}
    assert patches.list_patches(ctx, bare.name) == []

    secure = asyncio.run(patches.analyze(ctx, AnalyzeRequest(target="group:tb", security=True)))
    assert [m.package for m in secure.missing] == [SEC]

    # security only first: sec-provisor moves, hello-provisor stays
    applied = asyncio.run(
        patches.apply(ctx, ApplyRequest(target="group:tb", security=True, reboot="if-needed"))
    )
    assert applied.job.kind == "patch-apply" and applied.job.summary == {"ok": 3}, applied
    assert [(u.package, u.from_version, u.to_version, u.hosts) for u in applied.upgraded] == [
        (SEC, "1.0-1", "1.0-2", names[:2])
    ]
    assert applied.rebooted == [] and applied.reboot_needed == []
    for host in hosts[:2]:
        assert asyncio.run(installed_version(host, SEC)) == "1.0-2"
        assert asyncio.run(installed_version(host, HELLO)) == "1.0-1"

    applied = asyncio.run(
        patches.apply(ctx, ApplyRequest(target="group:tb", reboot="never", batch="50%"))
    )
    assert applied.job.summary == {"ok": 3}
    assert [(u.package, u.from_version, u.to_version) for u in applied.upgraded] == [
        (HELLO, "1.0-1", "2.0-1")
    ]
    assert applied.up_to_date == [bare.name]
    for host in hosts[:2]:
        assert asyncio.run(installed_version(host, HELLO)) == "2.0-1"
    assert asyncio.run(installed_version(bare, HELLO)) is None  # never installed by apply
    assert patches.list_patches(ctx) == []

    again = asyncio.run(patches.analyze(ctx, AnalyzeRequest(target="group:tb")))
    assert again.missing == [] and again.up_to_date == names


@pytest.mark.testbed
def test_cli_analyze_list_apply(testbed: Testbed, tmp_path: Path) -> None:
    hosts = testbed(2)
    repo = AptRepo(tmp_path / "repo")
    repo.publish(HELLO, "1.0-1")
    asyncio.run(_fleet(hosts, repo, hosts, (HELLO,)))
    repo.publish(HELLO, "2.0-1")
    for host in hosts:
        repo.serve(host)
    home = tmp_path / "home"
    (tmp_path / "tb.ini").write_text(inventory(hosts, "tb"))
    assert cli("hosts", "import", str(tmp_path / "tb.ini"), home=home).returncode == 0

    refused = cli("patch", "apply", "group:tb", "--packages", "hello;reboot", "--yes", home=home)
    assert refused.returncode == 2
    assert "packages" in refused.stderr and "not a package name" in refused.stderr
    jobs = cli("jobs", "list", "--output", "json", home=home)
    assert json.loads(jobs.stdout) == []  # refused before any job

    analyzed = cli("patch", "analyze", "group:tb", home=home)
    assert analyzed.returncode == 0, analyzed.stderr
    assert f"{HELLO} 1.0-1 -> 2.0-1: 2 hosts" in analyzed.stdout
    listed = json.loads(cli("patch", "list", "--output", "json", home=home).stdout)
    assert {(p["host"], p["candidate"]) for p in listed} == {(h.name, "2.0-1") for h in hosts}

    applied = cli(
        "patch",
        "apply",
        "group:tb",
        "--packages",
        HELLO,
        "--reboot",
        "if-needed",
        "-p",
        "1",
        "-t",
        "10m",
        "--yes",
        home=home,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"{HELLO} 1.0-1 -> 2.0-1: 2 hosts" in applied.stdout
    assert json.loads(cli("patch", "list", "--output", "json", home=home).stdout) == []


@pytest.mark.testbed
def test_reboot_waits_for_the_host_and_reports_one_that_does_not_return(
    testbed: Testbed, tmp_path: Path, ctx: Context
) -> None:
    """The reboot command is the test's: it leaves a mark the test answers by restarting
    the host from outside (one host), or by stopping it (the other). A namespace-mode host
    cannot reboot itself: `systemctl reboot` fails there (no systemd), and the reboot(2)
    call would end its PID namespace with nothing to start it again."""
    from provisor import machines

    hosts = testbed(2)
    repo = AptRepo(tmp_path / "repo")
    asyncio.run(_fleet(hosts, repo, []))
    mark = "/root/reboot-requested"

    async def scenario() -> list[object]:
        host_keys = DatabaseHostKeys(ctx.store, ctx.tenant_id())
        pool = SSHPool()
        scoped = pool.scoped(host_keys, connect_timeout=5)
        endpoints = [
            Endpoint(h.name, h.address, h.port, user=h.user, identity=str(h.client_key))
            for h in hosts
        ]
        operation = PatchApply(
            reboot=RebootPolicy.always, reboot_timeout=20, reboot_command=f"touch {mark}"
        )

        async def operator() -> None:
            pending = {h.name: h for h in hosts}
            while pending:
                for name, host in list(pending.items()):
                    if (host.directory / "upper" / mark.lstrip("/")).exists():
                        del pending[name]
                        (host.directory / "upper" / mark.lstrip("/")).unlink()
                        if host is hosts[0]:
                            await machines.restart(host)
                        else:
                            await machines.stop(host)
                await asyncio.sleep(0.2)

        helper = asyncio.create_task(operator())
        try:
            results = await execute(endpoints, operation, scoped)
        finally:
            helper.cancel()
            await pool.close()
        return list(results)

    back, gone = asyncio.run(scenario())
    assert back.ok, back  # type: ignore[attr-defined]
    assert back.details["rebooted"] is True  # type: ignore[attr-defined]
    assert b"rebooted, back after" in back.stdout  # type: ignore[attr-defined]
    assert not gone.ok  # type: ignore[attr-defined]
    assert "did not come back within 20s" in (gone.error or "")  # type: ignore[attr-defined]
    asyncio.run(ssh(hosts[0], "true"))


@pytest.mark.testbed
def test_reboot_on_a_testbed_host_is_refused_cleanly(
    testbed: Testbed, tmp_path: Path, ctx: Context
) -> None:
    """`systemctl reboot || reboot` fails inside a namespace-mode host: a per-host failure
    that says so, and the host is still there."""
    hosts = testbed(1)
    repo = AptRepo(tmp_path / "repo")
    asyncio.run(_fleet(hosts, repo, []))
    importing.import_hosts(ctx, inventory(hosts, "tb"), source="tb.ini")
    report = asyncio.run(patches.apply(ctx, ApplyRequest(target="group:tb", reboot="always")))
    assert report.failed and "reboot refused" in report.failed[hosts[0].name]
    asyncio.run(ssh(hosts[0], "true"))
