"""Jobs through `provisor server` (the warm path), from the real CLI to a real server and
real OpenSSH hosts: one request per job, exactly one outcome per host recorded, host keys
judged by the tenant's own store (a changed key refused), the tenant's hosts only."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api_access import token_for
from cli_modules import modules_loaded
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.machines import SandboxHost
from provisor.services import groups, hosts, importing, jobs, keys
from provisor.services.context import Context
from provisor.services.events import list_events
from provisor.services.schemas import HostChanges, HostSpec, validate
from provisor.services.targets import resolve_target
from provisor.store import Store
from provisor.testing.pytest_plugin import Testbed
from servers import start_server

pytestmark = [pytest.mark.testbed]


@dataclass
class Served:
    url: str
    home: Path
    owner: Context  # the data directory's owner, in tenant default
    log: Path  # the server's output: uvicorn logs each request there
    hosts: list[SandboxHost]

    def cli(
        self, *args: str, token: str, tenant: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`provisor ARGS --server URL`, from a data directory of its own, with `token`."""
        env = {
            **os.environ,
            "PROVISOR_HOME": str(self.home.parent / "client-home"),
            "PROVISOR_TOKEN": token,
            "COLUMNS": "200",
        }
        for variable in ("PROVISOR_DATABASE_URL", "PROVISOR_SERVER", "PROVISOR_TENANT"):
            env.pop(variable, None)
        tenant_option = ["--tenant", tenant] if tenant else []
        command, *rest = args  # --server before the arguments (and their `--`)
        done = subprocess.run(
            [
                *[sys.executable, "-m", "provisor", *tenant_option],
                *[command, "--server", self.url, *rest],
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def requests(self) -> list[str]:
        """The requests the server has answered so far, as its access log shows them."""
        return [line for line in self.log.read_text().splitlines() if "HTTP/1.1" in line]


def _refusing_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(module_testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server whose group `web` holds three hosts and `gone` (a port that refuses),
    all logging in with the stored key `testbed`; `lone` is outside the group."""
    found = module_testbed(4)
    home = tmp_path_factory.mktemp("warm") / "server-home"
    store = Store(f"sqlite:///{home / 'provisor.db'}")
    owner = Context(store=store, actor="owner", tenant="default", home=home)
    lines = ["[web]"] + [
        f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user}"
        for h in found[:3]
    ]
    lines += ["[solo]", f"lone ansible_host={found[3].address} ansible_user={found[3].user}"]
    importing.import_hosts(owner, "\n".join(lines) + "\n", source="warm.ini")
    hosts.add_host(
        owner,
        validate(HostSpec, {"name": "gone", "address": "127.0.0.1", "port": _refusing_port()}),
    )
    keys.add_key(owner, "testbed", found[0].client_key.read_text())
    for name in [h.name for h in found[:3]] + ["lone", "gone"]:
        hosts.update_host(owner, name, validate(HostChanges, {"credentials": "key:testbed"}))
    groups.change_members(owner, "web", add=["gone"])
    log = home.parent / "server.log"
    try:
        with start_server(home, log=log) as (url, _process):
            yield Served(url=url, home=home, owner=owner, log=log, hosts=found)
    finally:
        store.close()


@pytest.fixture(scope="module")
def operator(served: Served) -> str:
    return token_for(served.owner.store, "op", role="operator", home=served.home)


def test_a_job_is_one_request_with_one_outcome_per_host(served: Served, operator: str) -> None:
    before = len(served.requests())
    done = served.cli("run", "group:web", "--output", "json", "--", "hostname", token=operator)
    assert done.returncode == 3, done.stderr  # a host could not be reached
    requests = served.requests()[before:]
    assert len(requests) == 1 and "POST /api/v1/jobs/stream" in requests[0], requests
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    outcomes = {row["host"]: row["outcome"] for row in rows}
    names = [h.name for h in served.hosts[:3]]
    assert outcomes == {**dict.fromkeys(names, "ok"), "gone": "unreachable"}
    assert {row["stdout"].strip() for row in rows if row["outcome"] == "ok"} == set(names)
    # The record: one result per host, none left pending, the job done, its events.
    job_id = max(j.id for j in jobs.list_jobs(served.owner))
    job = jobs.get_job(served.owner, job_id)
    assert job.state == "done" and job.host_count == 4
    assert sorted((r.host, r.outcome) for r in job.results or []) == sorted(outcomes.items())
    assert job.summary == {"ok": 3, "unreachable": 1}
    events = [
        e.kind
        for e in list_events(served.owner, kinds=["job."], limit=100)
        if e.details.get("job") == job_id
    ]
    assert sorted(events) == ["job.finished", "job.started"]
    # A second job reuses the pool: again one result per host, no new handshake.
    pool = httpx.get(f"{served.url}/api/v1/health").json()["pool"]
    again = served.cli("run", "group:web", "--output", "json", "--", "true", token=operator)
    assert len(again.stdout.splitlines()) == 4
    assert httpx.get(f"{served.url}/api/v1/health").json()["pool"] == pool


def test_the_thin_path_prints_what_the_full_command_prints(
    served: Served, operator: str, tmp_path: Path
) -> None:
    """`run --server URL -p 4 ...` takes the warm path without typer, rich or pydantic;
    `-p4` (a form it leaves alone) takes the full command: both print the same results
    and summary and end with the same status, in every output mode."""
    for output in ("fold", "stream", "json"):
        done = {}
        for parallel in (["-p", "4"], ["-p4"]):
            args = ["run", "--server", served.url, *parallel, "group:web"]
            done[parallel[-1]], names = modules_loaded(
                tmp_path / "home",
                *args,
                *["--output", output, "--", "echo", "out;", "echo", "err", ">&2"],
                env={"PROVISOR_TOKEN": operator},
            )
            framework = {"typer", "click", "rich", "pydantic", "pydantic_settings"}
            loaded = framework & {name.split(".")[0] for name in names}
            assert loaded == set() if parallel == ["-p", "4"] else {"typer", "rich"} <= loaded
        thin, full = done["4"], done["-p4"]
        assert thin.returncode == full.returncode == 3, thin.stderr + full.stderr
        if output == "json":  # each host's line, in the order they finished
            assert sorted(thin.stdout.splitlines()) != [] and sorted(
                json.loads(line)["host"] for line in thin.stdout.splitlines()
            ) == sorted(json.loads(line)["host"] for line in full.stdout.splitlines())
        else:
            assert sorted(thin.stdout.splitlines()) == sorted(full.stdout.splitlines())
            assert _timeless(thin.stderr) == _timeless(full.stderr), thin.stderr
            assert "4 host(s): 3 ok, 1 unreachable (job " in thin.stderr


def _timeless(text: str) -> list[str]:
    """Lines of a job's summary, sorted, without the job's id and time."""
    return sorted(re.sub(r"\(job \d+, [\d.]+s\)", "", line) for line in text.splitlines())


def test_a_changed_host_key_is_refused_through_the_server(served: Served, operator: str) -> None:
    """`lone`'s trusted key (pinned before the server ever reached it) is not the one it
    has: the server refuses it, saying how to accept the change; once the owner rekeys
    it, the next job trusts the key it is offered."""
    (endpoint,) = resolve_target(served.owner, "lone")
    impostor = _public_key()
    DatabaseHostKeys(served.owner.store, served.owner.tenant_id()).pin({endpoint: impostor})
    refused = served.cli("run", "lone", "--", "hostname", token=operator)
    assert refused.returncode == 3
    assert "not the one trusted for it" in refused.stdout + refused.stderr
    assert "provisor hosts rekey lone" in refused.stdout + refused.stderr
    assert served.hosts[3].name not in refused.stdout  # the command never ran
    assert jobs.rekey_host(served.owner, "lone") is True
    accepted = served.cli("run", "lone", "--", "hostname", token=operator)
    assert accepted.returncode == 0, accepted.stderr
    assert served.hosts[3].name in accepted.stdout


def test_another_tenant_reaches_none_of_these_hosts(served: Served) -> None:
    """A user of tenant beta only: the hosts of default are not found for them, and
    default is no tenant they may name; an auditor of default may not run jobs."""
    store = served.owner.store
    beta = token_for(store, "beta-op", role="operator", tenants=("beta",), home=served.home)
    auditor = token_for(store, "watcher", role="auditor", home=served.home)
    count = len(jobs.list_jobs(served.owner))
    theirs = served.cli("run", "group:web", "--", "hostname", token=beta)
    assert theirs.returncode == 2 and "no group named 'web'" in theirs.stderr
    named = served.cli("run", served.hosts[0].name, "--", "true", token=beta, tenant="default")
    assert named.returncode == 2 and "no tenant named 'default'" in named.stderr
    watcher = served.cli("run", "group:web", "--", "true", token=auditor)
    assert watcher.returncode == 2 and "auditor" in watcher.stderr
    assert len(jobs.list_jobs(served.owner)) == count  # no job was made for any of them
    for output in (theirs, named, watcher):
        assert served.hosts[0].name not in output.stdout


def test_the_stream_starts_with_the_job_and_ends_with_it_done(
    served: Served, operator: str
) -> None:
    """POST /jobs/stream by hand: `job`, a `result` per host, `done` with the job as GET
    /jobs/{id} has it; the stream of the older two requests replays the same results."""
    auth = {"Authorization": f"Bearer {operator}"}
    body = {"kind": "run", "target": "group:web", "command": "echo hi"}
    with httpx.stream(
        "POST", f"{served.url}/api/v1/jobs/stream", json=body, headers=auth, timeout=120
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = _sse(answer.iter_lines())
    kinds = [kind for kind, _ in events]
    assert kinds == ["job", "result", "result", "result", "result", "done"]
    started, done = events[0][1], events[-1][1]
    assert started["state"] == "running" and started["host_count"] == 4
    stored = httpx.get(f"{served.url}/api/v1/jobs/{started['id']}", headers=auth).json()
    assert done == {**stored, "results": None}
    assert sorted(r["host"] for _, r in events[1:-1]) == sorted(
        r["host"] for r in stored["results"]
    )
    with httpx.stream(
        "GET", f"{served.url}/api/v1/jobs/{started['id']}/events", headers=auth, timeout=60
    ) as replay:
        again = _sse(replay.iter_lines())
    assert [kind for kind, _ in again] == kinds[1:]


def _sse(lines: Iterator[str]) -> list[tuple[str, dict[str, object]]]:
    found, event = [], ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            found.append((event, json.loads(line[5:])))
    return found


def _public_key() -> str:
    from provisor._asyncssh import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
