"""Deployments end to end on the local provider: the examples, approvals, failures, crashes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from provisor.providers.local import LocalProvider
from provisor.testing import crash
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "blueprints"


def webapp_serves(provisor: Provisor, *up_options: str) -> dict[str, object]:
    """Deploy webapp.yaml; check it answers round robin and its machines run commands."""
    result = provisor("up", str(EXAMPLES / "webapp.yaml"), *up_options, "--wait")
    assert "ready" in result.stdout
    status = provisor.status("webapp")
    assert status["state"] == "ready"
    machines = status["machines"]
    assert isinstance(machines, list) and len(machines) == 4
    outputs = status["outputs"]
    assert isinstance(outputs, dict)
    answers = set()
    for _ in range(4):
        with urllib.request.urlopen(str(outputs["url"]), timeout=10) as reply:
            answers.add(reply.read().decode().split(" (visit")[0])
    assert answers == {"hello from app1", "hello from app2"}  # round robin over both apps
    hostnames = provisor("run", "deployment:webapp", "--output", "json", "--", "hostname")
    assert sorted(json.loads(line)["stdout"].strip() for line in hostnames.stdout.splitlines()) == [
        "app1",
        "app2",
        "db",
        "lb",
    ]
    return status


def test_webapp_serves_through_its_load_balancer(provisor: Provisor) -> None:
    status = webapp_serves(provisor)
    outputs, machines = status["outputs"], status["machines"]
    assert isinstance(outputs, dict) and isinstance(machines, list)
    params = json.loads(provisor("params", "webapp", "--output", "json").stdout)
    values = {p["key"]: p["value"] for p in params["values"]}
    assert values["db.1.ready"] == "true" and values["lb.1.address"] in str(outputs["url"])
    reports = provisor.reports("webapp")
    assert sorted(p.name for p in reports.iterdir()) == [
        "webapp-app-1.tar.gz",
        "webapp-app-2.tar.gz",
        "webapp-db-1.tar.gz",
        "webapp-lb-1.tar.gz",
    ]
    instance = provisor.instance("webapp")
    # Each machine's key was pinned at launch, for its instance, and the `run` above was
    # judged by it (nothing trusted on first use besides).
    hosts = json.loads(provisor("hosts", "list", "--output", "json").stdout)
    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    launched = asyncio.run(provider.describe(tags={"provisor:deployment": instance}))
    keys = {m.id: m.host_key for m in launched}
    assert [(subject, key) for subject, _, key in provisor.host_keys()] == sorted(
        (f"machine:local/{m['provider_id']}", keys[m["provider_id"]]) for m in machines
    )
    assert len({host for _, host, _ in provisor.host_keys()}) == len(hosts) == 4
    provisor("down", "webapp")
    assert provisor.host_keys() == []  # terminated: a later machine at their addresses is new
    assert {m["state"] for m in provisor.machines_of(instance)} == {"terminated"}
    listed = json.loads(provisor("deployments", "list", "--output", "json").stdout)
    assert listed == []


def test_cluster_workers_register_with_the_head(provisor: Provisor) -> None:
    # An inventory host already named like a machine becomes that machine, its facts kept.
    provisor("hosts", "add", "cluster-worker-2", "--address", "127.0.0.254", "--fact", "rack=7")
    provisor("up", str(EXAMPLES / "cluster.yaml"), "--param", "workers=3", "--wait")
    status = provisor.status("cluster")
    assert status["state"] == "ready"
    worker = json.loads(provisor("hosts", "show", "cluster-worker-2", "--output", "json").stdout)
    machine = next(m for m in status["machines"] if m["name"] == "cluster-worker-2")
    assert (worker["address"], worker["tags"]) == (
        machine["address"],
        {"deployment": "cluster", "node": "worker"},
    )
    assert worker["facts"] == {"rack": 7, "hostname": "worker2"}
    outputs = status["outputs"]
    assert isinstance(outputs, dict)
    head = provisor(
        "run",
        "deployment:cluster&tag:node=head",
        "--output",
        "json",
        "--",
        "cat /proc/sys/kernel/hostname",
    )
    assert json.loads(head.stdout.splitlines()[0])["stdout"].strip() == "head"
    assert "3" in json.dumps(outputs)


def test_sap_needs_approval_and_a_completion(provisor: Provisor) -> None:
    missing = provisor(
        "up",
        str(EXAMPLES / "sap-2tier.yaml"),
        "--param",
        "db_password=s3cret-passw0rd!",
        check=False,
    )
    assert missing.returncode == 2 and "completion" in missing.stderr
    provisor(
        "up",
        str(EXAMPLES / "sap-2tier.yaml"),
        "--hostname-completion",
        "john",
        "--param",
        "db_password=s3cret-passw0rd!",
        "--name",
        "sap",
    )
    status = _wait_for_state(provisor, "sap", {"awaiting_approval"})
    assert status["state"] == "awaiting_approval"
    assert "s3cret" not in json.dumps(status)  # secrets are never shown
    # Followed from before the approval, so its progress shows every step to the end.
    follower = provisor.popen("status", "sap", "--wait", "--output", "json")
    assert follower.stderr is not None
    first = follower.stderr.readline()
    assert "sap awaiting_approval" in first, first
    provisor("approve", "sap")
    stdout, stderr = follower.communicate(timeout=400)
    assert follower.returncode == 0, stderr  # exit 0: ready
    status = json.loads(stdout)
    assert status["state"] == "ready", status
    assert stderr.rstrip().endswith("sap ready: ready (3/3 machines ready)")  # progress
    again = provisor("status", "sap", "--wait", "--output", "json")  # over: answers at once
    assert json.loads(again.stdout)["state"] == "ready" and not again.stderr
    hostnames = sorted(m["hostname"] for m in status["machines"])  # type: ignore[index, union-attr]
    assert hostnames[0] == "sapjohn-app1" and "sapjohn-db" in hostnames
    stored = (provisor.home / "provisor.db").read_bytes()
    assert b"s3cret-passw0rd" not in stored  # sealed at rest


def _wait_for_state(
    provisor: Provisor, name: str, states: set[str], timeout: float = 120
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status = provisor.status(name)
        if status["state"] in states or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_rejected_deployment_launches_nothing(provisor: Provisor) -> None:
    provisor(
        "up",
        str(EXAMPLES / "sap-2tier.yaml"),
        "--hostname-completion",
        "ann",
        "--param",
        "db_password=another-passw0rd",
        "--name",
        "sap-ann",
    )
    _wait_for_state(provisor, "sap-ann", {"awaiting_approval"})
    no_reason = provisor("reject", "sap-ann", check=False)
    assert no_reason.returncode == 2 and "reason" in no_reason.stderr
    provisor("reject", "sap-ann", "--reason", "no budget this quarter")
    status = _wait_for_state(provisor, "sap-ann", {"rejected"})
    assert status["state"] == "rejected" and status["error"] == "no budget this quarter"
    assert provisor.machines_of(provisor.instance("sap-ann")) == []


def test_parameter_wait_timeout_names_the_parameter_and_the_machine(
    provisor: Provisor, tmp_path: Path
) -> None:
    blueprint = tmp_path / "stuck.yaml"
    blueprint.write_text(
        "name: stuck\nversion: '1'\nnodes:\n"
        "  a:\n    image: debian-12\n    publishes: [ready]\n    scripts: ['true']\n"
        "  b:\n    image: debian-12\n"
        "    scripts: ['provisor-param get a.1.ready --wait 2']\n"
    )
    result = provisor("up", str(blueprint), "--wait", check=False)
    assert result.returncode == 1
    status = provisor.status("stuck")
    assert status["state"] == "failed"
    error = str(status["error"])
    assert "stuck-b-1" in error and "a.1.ready" in error and "stuck-a-1" in error
    reports = provisor.reports("stuck")
    assert (reports / "stuck-b-1.tar.gz").is_file()


def test_invalid_blueprint_is_refused_with_positions(provisor: Provisor, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: '1'\nnodes:\n  a:\n    image: debian-12\n    count: many\n")
    result = provisor("up", str(bad), check=False)
    assert result.returncode == 2
    assert f"{bad}:6:" in result.stderr and "count" in result.stderr
    unknown = provisor("up", str(EXAMPLES / "cluster.yaml"), "--param", "workers=0", check=False)
    assert unknown.returncode == 2 and "workers" in unknown.stderr


CRASH_POINTS = [
    "planned",
    "launch-called:crash-worker-2",
    "launched",
    "reachable",
    "configured:crash-worker-3",
    "configured-1",
    "outputs",
]


@pytest.mark.parametrize("boundary", CRASH_POINTS)
def test_controller_killed_at_a_step_boundary_resumes_without_duplicates(
    provisor: Provisor, boundary: str, tmp_path: Path
) -> None:
    """The background worker is SIGKILLed at the step; its supervisor starts it again,
    and the deployment `up --wait` follows ends ready, every machine launched once."""
    killed = tmp_path / "killed"
    provisor(
        "up",
        str(EXAMPLES / "cluster.yaml"),
        "--param",
        "workers=4",
        "--name",
        "crash",
        "--wait",
        env=crash.environment(boundary, once=killed),
    )
    assert killed.exists()  # the worker was killed at the step, as a crash would
    log = (provisor.home / "worker.log").read_text()
    assert "was killed by SIGKILL; starting it again" in log, log
    status = provisor.status("crash")
    assert status["state"] == "ready", status
    instance = provisor.instance("crash")
    live = [m for m in provisor.machines_of(instance) if m["state"] != "terminated"]
    assert len(live) == 5 and len({m["name"] for m in live}) == 5  # none twice, none leaked
    provisor("down", "crash")
    assert {m["state"] for m in provisor.machines_of(instance)} == {"terminated"}
