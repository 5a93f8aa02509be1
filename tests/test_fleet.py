"""The fleet engine against real OpenSSH sandbox hosts: outcomes, output, files, faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from api_access import token_for
from provisor import machines
from provisor.core.errors import InvalidInput
from provisor.core.nodeset import fold
from provisor.fleet import Endpoint, Run, SSHPool, execute
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.machines import SandboxHost
from provisor.services import hosts as host_service
from provisor.services import importing, keys
from provisor.services.context import Context
from provisor.services.jobs import JobRunner, JobSpec, JobView, get_job, rekey_host, run_job
from provisor.services.schemas import HostChanges, HostSpec, validate
from provisor.services.targets import resolve_target
from provisor.store import Store
from provisor.testing.pytest_plugin import Testbed

pytestmark = [pytest.mark.testbed]


def inventory(hosts: list[SandboxHost], group: str) -> str:
    """An Ansible inventory of sandbox hosts, with the key each logs in with."""
    lines = [f"[{group}]"]
    for h in hosts:
        lines.append(
            f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
            f"ansible_ssh_private_key_file={h.client_key}"
        )
    return "\n".join(lines) + "\n"


def with_stored_key(ctx: Context, hosts: list[SandboxHost]) -> None:
    """Hosts log in with the testbed's key stored by name (key:testbed), as they must for
    jobs that come through the API, which may not name a key file on the server."""
    if not any(k.name == "testbed" for k in keys.list_keys(ctx)):
        keys.add_key(ctx, "testbed", hosts[0].client_key.read_text())
    for host in hosts:
        host_service.update_host(
            ctx, host.name, validate(HostChanges, {"credentials": "key:testbed"})
        )


def spec(kind: str, target: str, **fields: object) -> JobSpec:
    return validate(JobSpec, {"kind": kind, "target": target, **fields})


def make_context(home: Path) -> Context:
    return Context(
        store=Store(f"sqlite:///{home / 'provisor.db'}"),
        actor="tester",
        tenant="default",
        home=home,
    )


@pytest.fixture(scope="module")
def fleet(module_testbed: Testbed) -> list[SandboxHost]:
    return module_testbed(200)


@pytest.fixture(scope="module")
def fleet_home(tmp_path_factory: pytest.TempPathFactory, fleet: list[SandboxHost]) -> Path:
    """A provisor home whose inventory holds the 200 hosts as group `fleet`."""
    home = tmp_path_factory.mktemp("fleet-home")
    ctx = make_context(home)
    importing.import_hosts(ctx, inventory(fleet, "fleet"), source="fleet.ini")
    ctx.store.close()
    return home


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    context = make_context(tmp_path)
    yield context
    context.store.close()


def cli(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVISOR_HOME": str(home), "COLUMNS": "200", **(env or {})}
    env.pop("PROVISOR_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "provisor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_200_hosts_each_answer_once_with_their_hostname(
    fleet: list[SandboxHost], fleet_home: Path, tmp_path: Path
) -> None:
    ctx = make_context(fleet_home)
    seen: list[str] = []

    async def go() -> tuple[JobView, int, int]:
        runner = JobRunner(keep_connections=True)  # as the server's: a warm pool
        try:
            first = await runner.run(
                ctx,
                spec("run", "group:fleet", command="hostname; echo warn >&2"),
                out_dir=tmp_path / "out",
                err_dir=tmp_path / "err",
                on_result=lambda r: seen.append(r.host),
            )
            cold = runner.handshakes
            await runner.run(ctx, spec("run", "group:fleet", command="true"))
            return first, cold, runner.handshakes
        finally:
            await runner.close()

    job, cold_handshakes, after_warm = asyncio.run(go())
    names = sorted(h.name for h in fleet)
    assert sorted(seen) == names  # every host reported exactly once
    assert job.summary == {"ok": 200} and job.host_count == 200
    assert cold_handshakes == 200 and after_warm == 200  # the second job reused every connection
    stored = get_job(ctx, job.id)
    assert stored.results is not None
    assert {r.host: r.stdout.strip() for r in stored.results} == {n: n for n in names}
    for name in names:
        assert (tmp_path / "out" / name).read_text() == f"{name}\n"
        assert (tmp_path / "err" / name).read_text() == "warn\n"
    ctx.store.close()


def test_a_one_job_runner_holds_no_more_connections_than_parallel(
    fleet: list[SandboxHost], fleet_home: Path
) -> None:
    """The CLI's runner closes a host's connection once its result is in: 200 hosts at
    -p 8 never hold more than 8 open (nor 8 file descriptors' worth of sockets)."""
    ctx = make_context(fleet_home)
    live: list[int] = []

    async def go() -> tuple[JobView, int, int]:
        runner = JobRunner()
        try:
            job = await runner.run(
                ctx,
                spec("run", "group:fleet", command="true", parallel=8),
                on_result=lambda _: live.append(runner.connections),
            )
            return job, runner.connections, runner.handshakes
        finally:
            await runner.close()

    job, left_open, handshakes = asyncio.run(go())
    assert job.summary == {"ok": 200}
    assert len(live) == 200 and max(live) <= 8
    assert left_open == 0 and handshakes == 200
    ctx.store.close()


def test_fold_groups_identical_output_under_one_node_set(
    fleet: list[SandboxHost], fleet_home: Path
) -> None:
    # Even and odd hosts answer differently: two folded groups of 100.
    command = "hostname | awk '{print substr($0, 3) % 2}'"
    result = cli("run", "group:fleet", "--output", "fold", "--", command, home=fleet_home)
    assert result.returncode == 0, result.stderr
    names = [h.name for h in fleet]
    even = [n for n in names if int(n[2:]) % 2 == 0]
    odd = [n for n in names if int(n[2:]) % 2 == 1]
    lines = result.stdout.splitlines()
    assert f"{fold(even)} (100): ok" in lines and f"{fold(odd)} (100): ok" in lines
    assert lines[lines.index(f"{fold(even)} (100): ok") + 2] == "0"
    assert lines[lines.index(f"{fold(odd)} (100): ok") + 2] == "1"
    assert "200 host(s): 200 ok" in result.stderr


def test_json_and_stream_output_and_exit_status(fleet: list[SandboxHost], fleet_home: Path) -> None:
    target = f"{fleet[0].name},{fleet[1].name}"
    result = cli("run", target, "--output", "json", "--", "echo hi; exit 3", home=fleet_home)
    assert result.returncode == 1  # a command failed
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["host"] for r in rows} == {fleet[0].name, fleet[1].name}
    assert {(r["outcome"], r["exit_code"], r["stdout"]) for r in rows} == {("failed", 3, "hi\n")}
    streamed = cli("run", target, "--", "hostname", home=fleet_home)
    assert streamed.returncode == 0
    assert sorted(streamed.stdout.splitlines()) == sorted(f"{h.name}: {h.name}" for h in fleet[:2])


def _silent_listener(address: str, port: int) -> socket.socket:
    """Accepts TCP connections (the kernel does) and never says a word: no SSH banner."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(64)
    return listener


def test_faults_each_get_their_outcome_and_nobody_is_missing(
    testbed: Testbed, tmp_path: Path
) -> None:
    hosts = testbed(100)
    ctx = make_context(tmp_path)
    importing.import_hosts(ctx, inventory(hosts, "mixed"), source="mixed.ini")
    stopped, silent, keyless = hosts[0:10], hosts[10:15], hosts[15:20]
    hanging, dropped = hosts[20:25], hosts[25:30]
    asyncio.run(_stop_all(stopped + silent))
    listeners = [_silent_listener(h.address, h.port) for h in silent]
    for h in keyless:
        machines.authorized_keys_path(h).write_text("")
    slow = " ".join(h.name for h in hanging + dropped)
    command = f'case " {slow} " in *" $(hostname) "*) sleep 600;; esac; hostname'
    connect_timeout, timeout = 3.0, 4.0

    async def go() -> list[JobView]:
        async def drop_mid_command() -> None:
            await asyncio.sleep(2.0)  # commands are running (sleeping) by now
            await _stop_all(dropped)

        job, _ = await asyncio.gather(
            run_job(
                ctx,
                spec(
                    "run",
                    "group:mixed",
                    command=command,
                    timeout=timeout,
                    parallel=100,
                    connect_timeout=connect_timeout,
                ),
            ),
            drop_mid_command(),
        )
        return [job]

    try:
        jobs = asyncio.run(go())
    finally:
        for listener in listeners:
            listener.close()
    results = get_job(ctx, jobs[0].id).results
    assert results is not None
    outcome = {r.host: r.outcome for r in results}
    assert len(outcome) == 100  # no host missing
    expected = {h.name: "ok" for h in hosts}
    expected.update({h.name: "unreachable" for h in stopped})
    expected.update({h.name: "timeout" for h in silent})  # the connect timeout
    expected.update({h.name: "auth" for h in keyless})
    expected.update({h.name: "timeout" for h in hanging})
    expected.update({h.name: "error" for h in dropped})
    assert outcome == expected
    errors = {r.host: r.error or "" for r in results}
    assert {errors[h.name] for h in stopped} == {"connection refused"}
    assert {errors[h.name] for h in silent} == {
        "connect timeout: no SSH handshake within 3s (--connect-timeout)"
    }
    limits = {r.host: r.details.get("limit") for r in results}
    assert {limits[h.name] for h in silent} == {"connect"}
    assert {limits[h.name] for h in hanging} == {"command"}
    assert all("connection lost" in errors[h.name] for h in dropped), [
        errors[h.name] for h in dropped
    ]
    ctx.store.close()


async def _stop_all(hosts: list[SandboxHost]) -> None:
    await asyncio.gather(*(machines.stop(h) for h in hosts))


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_copy_and_fetch_round_trip_a_tree_with_modes(testbed: Testbed, tmp_path: Path) -> None:
    hosts = testbed(3)
    ctx = make_context(tmp_path / "home")
    importing.import_hosts(ctx, inventory(hosts, "trio"), source="trio.ini")
    tree = tmp_path / "payload"
    (tree / "bin").mkdir(parents=True)
    (tree / "etc" / "deep").mkdir(parents=True)
    (tree / "bin" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (tree / "bin" / "tool.sh").chmod(0o755)
    (tree / "etc" / "secret").write_bytes(os.urandom(4096))
    (tree / "etc" / "secret").chmod(0o600)
    (tree / "etc" / "deep" / "blob.bin").write_bytes(bytes(range(256)) * 300)
    (tree / "etc" / "deep" / "blob.bin").chmod(0o640)

    copied = asyncio.run(
        run_job(ctx, spec("copy", "group:trio", sources=[str(tree)], destination="/srv"))
    )
    assert copied.summary == {"ok": 3}
    ran = asyncio.run(run_job(ctx, spec("run", "group:trio", command="/srv/payload/bin/tool.sh")))
    assert ran.summary == {"ok": 3}
    fetched = tmp_path / "fetched"
    got = asyncio.run(
        run_job(
            ctx, spec("fetch", "group:trio", sources=["/srv/payload"], destination=str(fetched))
        )
    )
    assert got.summary == {"ok": 3}
    for h in hosts:
        assert _tree(fetched / h.name / "payload") == _tree(tree)

    # a path that is not there: the error says which, for copy and fetch alike
    nowhere = asyncio.run(
        run_job(ctx, spec("copy", hosts[0].name, sources=[str(tree)], destination="/no/such"))
    )
    missing = asyncio.run(
        run_job(ctx, spec("fetch", hosts[0].name, sources=["/no/file"], destination=str(fetched)))
    )
    for job, path in ((nowhere, "copy to /no/such: "), (missing, "fetch /no/file: ")):
        (result,) = get_job(ctx, job.id).results or []
        assert result.outcome == "failed" and (result.error or "").startswith(path), result.error
    ctx.store.close()


def test_kill_signals_only_matching_processes_on_targeted_hosts(
    testbed: Testbed, ctx: Context
) -> None:
    hosts = testbed(3)
    importing.import_hosts(ctx, inventory(hosts, "k"), source="k.ini")
    start = (
        "for i in 1 2; do nohup sleep 4242 >/dev/null 2>&1 & done; "
        "nohup sleep 4343 >/dev/null 2>&1 &"
    )
    assert asyncio.run(run_job(ctx, spec("run", "group:k", command=start))).summary == {"ok": 3}
    target = f"{hosts[0].name},{hosts[1].name}"
    job = asyncio.run(run_job(ctx, spec("kill", target, pattern="sleep 4242", signal="KILL")))
    results = get_job(ctx, job.id).results
    assert results is not None
    assert {r.host: (r.outcome, r.details["signalled"]) for r in results} == {
        hosts[0].name: ("ok", 2),
        hosts[1].name: ("ok", 2),
    }
    count = asyncio.run(
        run_job(ctx, spec("run", "group:k", command="pgrep -c -f 'sleep 4[23]4[23]' || true"))
    )
    remaining = {r.host: r.stdout.strip() for r in get_job(ctx, count.id).results or []}
    # Targeted hosts keep only the non-matching sleep; the third host keeps all three.
    assert remaining == {hosts[0].name: "1", hosts[1].name: "1", hosts[2].name: "3"}
    again = asyncio.run(run_job(ctx, spec("kill", target, pattern="sleep 4242")))
    assert again.summary == {"ok": 2}  # nothing left to signal is not a failure

    # the CLI says how many were signalled, 0 included, in every output mode
    shown = cli("kill", "group:k", "sleep 4343", "--output", "fold", "--yes", home=ctx.home)
    assert "(3): ok (1 process signalled)" in shown.stdout, shown.stdout
    streamed = cli("kill", hosts[0].name, "sleep 4343", "--yes", home=ctx.home)
    assert f"{hosts[0].name}: [ok (0 processes signalled)]" in streamed.stdout


@pytest.mark.parametrize("bogus", ["BOGUS", "SIGNOPE", "0", "65", "-9", "TERM;id"])
def test_an_unknown_signal_is_refused_before_any_host(bogus: str) -> None:
    with pytest.raises(InvalidInput, match="unknown signal"):
        validate(JobSpec, {"kind": "kill", "target": "x", "pattern": "p", "signal": bogus})
    for good, sent in (("kill", "KILL"), ("SIGhup", "HUP"), ("9", "9"), ("USR1", "USR1")):
        made = validate(JobSpec, {"kind": "kill", "target": "x", "pattern": "p", "signal": good})
        assert made.signal == sent


def test_changed_host_key_is_refused_for_that_host_only(testbed: Testbed, ctx: Context) -> None:
    hosts = testbed(3)
    importing.import_hosts(ctx, inventory(hosts, "hk"), source="hk.ini")
    assert asyncio.run(run_job(ctx, spec("run", "group:hk", command="true"))).summary == {"ok": 3}
    changed = asyncio.run(machines.rekey(hosts[1]))
    job = asyncio.run(run_job(ctx, spec("run", "group:hk", command="true")))
    results = {r.host: r for r in get_job(ctx, job.id).results or []}
    assert {h: r.outcome for h, r in results.items()} == {
        hosts[0].name: "ok",
        hosts[1].name: "hostkey",
        hosts[2].name: "ok",
    }
    message = results[hosts[1].name].error or ""
    assert hosts[1].name in message and "provisor hosts rekey" in message
    assert rekey_host(ctx, hosts[1].name) is True
    assert asyncio.run(run_job(ctx, spec("run", "group:hk", command="true"))).summary == {"ok": 3}
    assert changed.host_public_key.split()[1] in _known_key(ctx, changed)


def _known_key(ctx: Context, host: SandboxHost) -> str:
    return _trusted(ctx, host.name) or ""


def _trusted(ctx: Context, name: str) -> str | None:
    """The key the tenant trusts for the inventory host `name`."""
    (endpoint,) = resolve_target(ctx, name)
    return DatabaseHostKeys(ctx.store, ctx.tenant_id()).trusted(endpoint)


def _key_rows(ctx: Context) -> list[tuple[str, int | None, str]]:
    """(subject, host id, key type and blob) of every trusted key, in subject order."""
    from provisor.store.models import KnownHostKey

    with ctx.store.session() as session:
        rows = session.query(KnownHostKey.subject, KnownHostKey.host_id, KnownHostKey.key)
        return sorted((s, h, " ".join(k.split()[:2])) for s, h, k in rows)


def _add(ctx: Context, name: str, host: SandboxHost) -> int:
    """`host` added to the inventory as `name`; the new host's id."""
    host_service.add_host(
        ctx,
        validate(
            HostSpec,
            {
                "name": name,
                "address": host.address,
                "port": host.port,
                "user": host.user,
                "credentials": f"key:{host.client_key}",
            },
        ),
    )
    (endpoint,) = resolve_target(ctx, name)
    assert endpoint.host_id is not None
    return endpoint.host_id


def test_a_host_removed_and_another_added_at_its_address_is_trusted_anew(
    testbed: Testbed, ctx: Context
) -> None:
    """Keys belong to hosts, not addresses: the new host at a recycled address and port,
    with another key, is trusted on first use, not refused as the old one changed."""
    (server,) = testbed(1)
    old_id = _add(ctx, "old", server)
    assert asyncio.run(run_job(ctx, spec("run", "old", command="true"))).summary == {"ok": 1}
    assert _key_rows(ctx) == [(f"host:{old_id}", old_id, server.host_public_key)]
    recycled = asyncio.run(machines.rekey(server))  # another machine at the same address
    host_service.remove_host(ctx, "old")
    assert _key_rows(ctx) == []  # the key left the inventory with its host
    new_id = _add(ctx, "new", recycled)
    job = asyncio.run(run_job(ctx, spec("run", "new", command="hostname")))
    assert job.summary == {"ok": 1}, get_job(ctx, job.id).results
    assert _key_rows(ctx) == [(f"host:{new_id}", new_id, recycled.host_public_key)]


def test_two_hosts_at_one_address_keep_a_key_each(testbed: Testbed, ctx: Context) -> None:
    """Two inventory hosts at the same address and port (one re-added under another
    name) share no key record: each is judged by the key it was trusted with."""
    (server,) = testbed(1)
    first, second = _add(ctx, "first", server), _add(ctx, "second", server)
    assert asyncio.run(run_job(ctx, spec("run", "first", command="true"))).summary == {"ok": 1}
    assert _trusted(ctx, "first") is not None and _trusted(ctx, "second") is None
    rekeyed = asyncio.run(machines.rekey(server))
    refused = asyncio.run(run_job(ctx, spec("run", "first,second", command="true")))
    outcomes = {r.host: r.outcome for r in get_job(ctx, refused.id).results or []}
    assert outcomes == {"first": "hostkey", "second": "ok"}
    assert _key_rows(ctx) == [
        (f"host:{first}", first, server.host_public_key),
        (f"host:{second}", second, rekeyed.host_public_key),
    ]
    # An address outside the inventory has a record of its own, too.
    direct = f"{server.user}@{server.address}:{server.port}"
    key = str(server.client_key)
    ok = asyncio.run(run_job(ctx, spec("run", direct, command="true", identity=key)))
    assert ok.summary == {"ok": 1}
    assert (f"addr:{server.address}:{server.port}", None, rekeyed.host_public_key) in _key_rows(ctx)
    assert rekey_host(ctx, f"{server.address}:{server.port}") is True
    assert rekey_host(ctx, "first") is True
    assert [subject for subject, _, _ in _key_rows(ctx)] == [f"host:{second}"]


def test_ask_pass_goes_only_to_hosts_whose_key_is_trusted(testbed: Testbed, ctx: Context) -> None:
    """With -A, a host never seen before is not connected to at all (its key would be
    trusted on first use, and the password handed to whoever answers): outcome hostkey.
    Once its key is trusted, -A works there."""
    (server,) = testbed(1)
    _add(ctx, "fresh", server)

    async def job(password: str | None) -> tuple[JobView, int]:
        runner = JobRunner()
        try:
            done = await runner.run(ctx, spec("run", "fresh", command="id -un"), password=password)
            return done, runner.handshakes
        finally:
            await runner.close()

    refused, handshakes = asyncio.run(job("never-sent"))
    (result,) = get_job(ctx, refused.id).results or []
    assert (result.outcome, handshakes) == ("hostkey", 0)  # not even a TCP handshake
    assert "not trusted yet" in (result.error or "") and "without -A" in (result.error or "")
    assert _key_rows(ctx) == []
    trusted, _ = asyncio.run(job(None))
    assert trusted.summary == {"ok": 1}
    again, handshakes = asyncio.run(job("never-sent"))
    assert again.summary == {"ok": 1} and handshakes == 1


def test_jump_host_carries_the_connection(testbed: Testbed, ctx: Context) -> None:
    bastion, behind = testbed(2)
    importing.import_hosts(ctx, inventory([behind], "inner"), source="inner.ini")
    jump = f"root@{bastion.address}:{bastion.port}"
    host_service.update_host(ctx, behind.name, validate(HostChanges, {"proxy_jump": jump}))
    ok = asyncio.run(run_job(ctx, spec("run", "group:inner", command="hostname")))
    assert ok.summary == {"ok": 1}
    assert (get_job(ctx, ok.id).results or [])[0].stdout.strip() == behind.name
    # Forbid forwarding on the bastion: the same job must now fail, proving it went through.
    config = bastion.directory / "sshd_config"
    config.write_text(config.read_text() + "\nDisableForwarding yes\n")
    asyncio.run(machines.rekey(bastion))  # sshd re-reads its configuration
    from provisor.store.models import KnownHostKey

    with ctx.store.session() as session:
        session.query(KnownHostKey).filter_by(address=bastion.address).delete()
    refused = asyncio.run(run_job(ctx, spec("run", "group:inner", command="hostname")))
    results = get_job(ctx, refused.id).results or []
    assert [r.outcome for r in results] != ["ok"]
    assert "jump host" in (results[0].error or "") and results[0].outcome == "unreachable"


def test_ssh_config_alias_is_honoured(testbed: Testbed, tmp_path: Path, ctx: Context) -> None:
    (host,) = testbed(1)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host web-alias\n  HostName {host.address}\n  User {host.user}\n"
        f"  IdentityFile {host.client_key}\n"
    )

    async def go() -> list[str]:
        pool = SSHPool(ssh_config=[str(config)])
        try:
            keys = DatabaseHostKeys(ctx.store, ctx.tenant_id())
            results = await execute(
                [Endpoint("alias", "web-alias")], Run("hostname"), pool.scoped(keys)
            )
            return [r.outcome.value + ":" + r.text().strip() for r in results]
        finally:
            await pool.close()

    assert asyncio.run(go()) == [f"ok:{host.name}"]


def test_unknown_target_and_bad_options_are_clear(ctx: Context) -> None:
    with pytest.raises(InvalidInput, match=r"no hosts named web\[01-03\]"):
        asyncio.run(run_job(ctx, spec("run", "web[01-03]", command="true")))
    with pytest.raises(InvalidInput, match="parallel"):
        spec("run", "x", command="true", parallel=0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `provisor server` process on a free loopback port."""
    home = tmp_path / "server-home"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PROVISOR_HOME": str(home)}
    env.pop("PROVISOR_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "provisor", "server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)
        yield url, home
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_jobs_through_the_server_reuse_warm_connections(
    testbed: Testbed, server: tuple[str, Path]
) -> None:
    url, home = server
    hosts = testbed(12)
    ctx = make_context(home)
    importing.import_hosts(ctx, inventory(hosts, "web"), source="web.ini")
    with_stored_key(ctx, hosts)
    token = token_for(ctx.store)
    auth, as_admin = {"Authorization": f"Bearer {token}"}, {"PROVISOR_TOKEN": token}
    first = cli("run", "group:web", "--server", url, "--", "hostname", home=home, env=as_admin)
    assert first.returncode == 0, first.stderr
    assert "12 host(s): 12 ok" in first.stderr
    assert httpx.get(f"{url}/api/v1/health").json()["pool"] == {"connections": 12, "handshakes": 12}
    second = cli(
        "run",
        "group:web",
        "--server",
        url,
        "--output",
        "json",
        "--",
        "hostname",
        home=home,
        env=as_admin,
    )
    rows = [json.loads(line) for line in second.stdout.splitlines()]
    assert sorted((r["host"], r["stdout"].strip()) for r in rows) == sorted(
        (h.name, h.name) for h in hosts
    )
    assert httpx.get(f"{url}/api/v1/health").json()["pool"]["handshakes"] == 12  # no new handshake
    # The API directly: a job, its results, and the stream replayed after the fact.
    started = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "run", "target": hosts[0].name, "command": "exit 7"},
        headers=auth,
    )
    assert started.status_code == 202
    job_id = started.json()["id"]
    with httpx.stream(
        "GET", f"{url}/api/v1/jobs/{job_id}/events", headers=auth, timeout=60
    ) as events:
        body = "".join(events.iter_text())
    assert "event: result" in body and "event: done" in body
    job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth).json()
    assert job["summary"] == {"failed": 1} and job["results"][0]["exit_code"] == 7
    bad = httpx.post(
        f"{url}/api/v1/jobs", json={"kind": "run", "target": "group:web"}, headers=auth
    )
    assert bad.status_code == 422 and "command" in bad.json()["error"]["message"]
    missing = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "run", "target": "group:nope", "command": "true"},
        headers=auth,
    )
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    ctx.store.close()


def _tenant_context(home: Path, tenant: str) -> Context:
    return Context(
        store=Store(f"sqlite:///{home / 'provisor.db'}"), actor="tester", tenant=tenant, home=home
    )


def _job_through(url: str, token: str, target: str) -> dict[str, object]:
    """Start a job on the server with `token` and wait for it; the finished job."""
    auth = {"Authorization": f"Bearer {token}"}
    started = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "run", "target": target, "command": "hostname"},
        headers=auth,
        timeout=60,
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    with httpx.stream(
        "GET", f"{url}/api/v1/jobs/{job_id}/events", headers=auth, timeout=120
    ) as events:
        "".join(events.iter_text())
    finished: dict[str, object] = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth).json()
    return finished


def test_tenants_jobs_at_once_each_judge_host_keys_by_their_own(
    testbed: Testbed, server: tuple[str, Path]
) -> None:
    """One server, one warm pool, one host known to two tenants: alpha has pinned a key
    the host does not have, beta has never seen it. Their jobs run at the same time:
    alpha's is refused, beta's trusts the real key on first use, and neither store, nor
    a connection one of them opened, ever serves the other."""
    from provisor._asyncssh import asyncssh

    url, home = server
    (host,) = testbed(1)
    alpha, beta = _tenant_context(home, "alpha"), _tenant_context(home, "beta")
    for ctx in (alpha, beta):
        importing.import_hosts(ctx, inventory([host], "shared"), source="shared.ini")
        with_stored_key(ctx, [host])
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    (alpha_host,) = resolve_target(alpha, host.name)
    DatabaseHostKeys(alpha.store, alpha.tenant_id()).pin({alpha_host: impostor})

    def keys_of(ctx: Context) -> str | None:
        return _trusted(ctx, host.name)

    tokens = {
        t: token_for(alpha.store, f"{t}-operator", role="operator", tenants=(t,))
        for t in ("alpha", "beta")
    }
    for _ in range(3):  # both orders of arrival, and beta's connection warm from before
        with ThreadPoolExecutor(2) as both:
            refused = both.submit(_job_through, url, tokens["alpha"], "group:shared")
            trusted = both.submit(_job_through, url, tokens["beta"], "group:shared")
            assert refused.result()["summary"] == {"hostkey": 1}
            assert trusted.result()["summary"] == {"ok": 1}
        assert keys_of(alpha) == impostor  # untouched by beta's trust on first use
        assert (keys_of(beta) or "").split()[1] == host.host_public_key.split()[1]
    health = httpx.get(f"{url}/api/v1/health").json()
    assert health["pool"]["connections"] == 1  # beta's, reused; alpha never got one
    for ctx in (alpha, beta):
        ctx.store.close()


def test_stdin_sudo_and_progress_line_on_a_terminal(
    fleet: list[SandboxHost], fleet_home: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.txt"
    payload.write_text("line one\nline two\n")
    target = ",".join(h.name for h in fleet[:3])
    counted = cli("run", target, "--stdin", str(payload), "--", "wc -l", home=fleet_home)
    assert counted.returncode == 0, counted.stderr
    assert {line.split(": ")[1] for line in counted.stdout.splitlines()} == {"2"}
    sudo = cli("run", target, "--sudo", "--", "id -un", home=fleet_home)
    assert sudo.returncode == 0, sudo.stderr
    assert {line.split(": ")[1] for line in sudo.stdout.splitlines()} == {"root"}
    # On a terminal, a progress line (done/ok/failed/remaining) is drawn on stderr.
    primary, secondary = os.openpty()
    env = {**os.environ, "PROVISOR_HOME": str(fleet_home)}
    process = subprocess.run(
        [sys.executable, "-m", "provisor", "run", "group:fleet", "--", "true"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        timeout=300,
    )
    os.close(secondary)
    chunks = []
    with contextlib.suppress(OSError):
        while data := os.read(primary, 65536):
            chunks.append(data)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "[200/200] ok 200  failed 0  remaining 0" in screen
    assert "200 host(s): 200 ok" in screen
