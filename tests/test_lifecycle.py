"""Stop and start a deployment on the local provider, through the real CLI: its machines
powered off with their disks, addresses and inventory hosts kept, then back."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from provisor.providers.local import LocalProvider
from provisor.testing import crash
from provisor_cli import Provisor
from servers import served_cli

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

PAIR = """\
name: pair
version: '1'
nodes:
  box:
    image: debian-12
    count: 2
    scripts: ['true']
"""


def _answers(address: str, port: int) -> bool:
    """Whether something accepts a TCP connection there (the machine's SSH)."""
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def _refused(provisor: Provisor, *args: str) -> str:
    result = provisor(*args, check=False)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    return " ".join(result.stderr.split())


@pytest.fixture
def pair(provisor: Provisor, tmp_path: Path) -> Path:
    path = tmp_path / "pair.yaml"
    path.write_text(PAIR)
    return path


def test_stop_keeps_disks_and_addresses_and_start_brings_them_back(
    provisor: Provisor, pair: Path
) -> None:
    provisor("up", str(pair), "--wait")
    before = provisor.status("pair")
    machines = before["machines"]
    assert isinstance(machines, list) and len(machines) == 2
    where = {m["name"]: (m["address"], 22) for m in machines}
    provisor("run", "deployment:pair", "--", "sh", "-c", "hostname > /root/kept")
    hosts_before = json.loads(provisor("hosts", "list", "--output", "json").stdout)

    stopped = json.loads(provisor("stop", "pair", "--output", "json").stdout)
    assert stopped["state"] == "stopped"
    assert {m["state"] for m in stopped["machines"]} == {"stopped"}
    assert not any(_answers(*address) for address in where.values())
    assert provisor("run", "deployment:pair", "--", "true", check=False).returncode != 0
    assert json.loads(provisor("hosts", "list", "--output", "json").stdout) == hosts_before
    # Refused while stopped: stopped again, and nothing else changed.
    assert "cannot stop deployment 'pair': it is stopped" in _refused(provisor, "stop", "pair")
    # Another tenant has no such deployment, whatever it asks.
    for command in (["start", "pair"], ["stop", "pair"], ["lease", "extend", "pair", "--by", "1d"]):
        error = _refused(provisor, "--tenant", "other", *command)
        assert "no deployment named 'pair'" in error, error
    assert provisor.status("pair")["state"] == "stopped"

    started = json.loads(provisor("start", "pair", "--output", "json").stdout)
    assert started["state"] == "ready"
    assert {m["name"]: (m["address"], 22) for m in started["machines"]} == where
    assert all(_answers(*address) for address in where.values())
    kept = provisor("run", "deployment:pair", "--output", "json", "--", "cat", "/root/kept")
    assert sorted(json.loads(line)["stdout"].strip() for line in kept.stdout.splitlines()) == [
        m["hostname"] for m in sorted(machines, key=lambda m: m["name"])
    ]
    assert "cannot start deployment 'pair': it is ready" in _refused(provisor, "start", "pair")

    events = json.loads(provisor("events", "--output", "json").stdout)
    ours = [e for e in events if e["kind"] in ("deployment.stopped", "deployment.started")]
    assert [(e["kind"], e["outcome"]) for e in ours] == [
        ("deployment.stopped", "ok"),
        ("deployment.started", "ok"),
    ]
    for event in ours:
        assert event["details"]["severity"] == "info"
        assert event["details"]["deployment"] == "pair"
        assert event["details"]["machines"] == 2


def test_a_stop_cut_short_by_sigkill_is_finished_by_the_next_worker(
    provisor: Provisor, pair: Path, tmp_path: Path
) -> None:
    """The worker is killed after the provider stopped the machines, before anything was
    recorded: the supervisor's next worker resumes the stop, which ends `stopped` once."""
    provisor("up", str(pair), "--wait")
    provisor("worker", "stop")  # the next one is started with the crash point
    provisor.env.update(crash.environment("stop-called:pair", once=tmp_path / "killed"))
    stopped = json.loads(provisor("stop", "pair", "--output", "json").stdout)
    assert (tmp_path / "killed").exists()  # the first worker was killed there
    assert stopped["state"] == "stopped"
    events = json.loads(provisor("events", "--output", "json").stdout)
    assert [e["kind"] for e in events if e["kind"] == "deployment.stopped"] == [
        "deployment.stopped"
    ]


def test_a_deployment_on_its_way_cannot_be_stopped(
    provisor: Provisor, pair: Path, tmp_path: Path
) -> None:
    held = tmp_path / "held"
    held.mkdir()
    provisor.env.update(crash.pause_environment("reachable", held))
    provisor("up", str(pair))
    deadline = time.monotonic() + 180
    while not (held / "reached").exists():
        assert time.monotonic() < deadline, "the worker never reached the pause"
        time.sleep(0.2)
    error = _refused(provisor, "stop", "pair")
    assert "cannot stop deployment 'pair': it is deploying" in error, error
    assert "only a deployment that is ready or failed can be stopped" in error
    assert "cannot start deployment 'pair': it is deploying" in _refused(provisor, "start", "pair")
    (held / "release").touch()
    assert provisor("status", "pair", "--wait").returncode == 0
    provisor("down", "pair")
    assert "no deployment named 'pair' (removed" in _refused(provisor, "stop", "pair")


def test_stop_start_and_lease_through_a_server(tmp_path: Path, pair: Path) -> None:
    """The same commands with --server: the server's worker does the work."""
    with served_cli(tmp_path) as (_, cli):
        cli("up", str(pair), "--lease", "30d", "--wait")
        listed = cli("deployments", "list").stdout
        assert "29d 23h" in listed
        stopped = json.loads(cli("stop", "pair", "--output", "json").stdout)
        assert stopped["state"] == "stopped"
        assert not any(_answers(m["address"], 22) for m in stopped["machines"])
        assert "cannot stop deployment 'pair': it is stopped" in _refused(cli, "stop", "pair")
        started = json.loads(cli("start", "pair", "--output", "json").stdout)
        assert started["state"] == "ready"
        assert all(_answers(m["address"], 22) for m in started["machines"])
        extended = json.loads(
            cli("lease", "extend", "pair", "--by", "7d", "--output", "json").stdout
        )
        assert extended["lease_seconds_left"] > 36 * 86400
        assert "in the past" in _refused(cli, "lease", "extend", "pair", "--until", "2001-01-01")
        assert "no deployment named 'other'" in _refused(cli, "stop", "other")
        cli("down", "pair")


def test_a_machine_that_cannot_be_stopped_leaves_the_deployment_failed_saying_which(
    provisor: Provisor, pair: Path
) -> None:
    """One machine terminated behind provisor's back: the stop ends `failed`, naming it,
    the other machine stopped; `stop` again is allowed (from `failed`), `start` is not."""
    provisor("up", str(pair), "--wait")
    machines = provisor.status("pair")["machines"]
    assert isinstance(machines, list)
    gone = machines[0]
    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    asyncio.run(provider.terminate(gone["provider_id"]))
    result = provisor("stop", "pair", "--output", "json", check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    view = json.loads(result.stdout)
    assert view["state"] == "failed" and view["step"] == "failed at stop"
    assert view["error"].startswith(f"stop: {gone['name']}: ")
    states = {m["name"]: m["state"] for m in view["machines"]}
    assert states[machines[1]["name"]] == "stopped"
    assert "it is failed" in _refused(provisor, "start", "pair")
    events = json.loads(provisor("events", "--output", "json").stdout)
    stopped = [e for e in events if e["kind"] == "deployment.stopped"]
    assert [(e["outcome"], e["details"]["severity"]) for e in stopped] == [("failed", "warning")]
