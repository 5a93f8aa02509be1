"""Every refused change of a deployment's state fails, naming the state it is in: through
the CLI without a server, and through a real `provisor server` (its API answers 409, or
404 for a removed one, and the CLI with --server exits 2 with the server's message)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from provisor_cli import Provisor
from servers import start_server

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

GATED = """\
name: gated
version: '1'
approval: required
nodes:
  box:
    image: debian-12
    scripts: ['true']
"""


def _state(provisor: Provisor, name: str, states: set[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = str(provisor.status(name)["state"])
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def _refused(provisor: Provisor, *args: str) -> str:
    """The error of a command that must fail as a refused change (exit status 2)."""
    result = provisor(*args, check=False)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    return " ".join(result.stderr.split())  # rich wraps long lines


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    return path


def test_refused_changes_name_the_state_on_the_cli(provisor: Provisor, gated: Path) -> None:
    provisor("up", str(gated), "--name", "no")
    assert _state(provisor, "no", {"awaiting_approval"}) == "awaiting_approval"
    provisor("reject", "no", "--reason", "not this quarter")
    # The rejection counts at once, whether or not a worker has taken it in yet.
    assert provisor.status("no")["state"] == "rejected"
    error = _refused(provisor, "approve", "no")
    assert "cannot approve deployment 'no': it is rejected" in error
    assert "not this quarter" in error
    assert "cannot reject deployment 'no': it is rejected" in _refused(
        provisor, "reject", "no", "--reason", "twice"
    )
    assert _state(provisor, "no", {"rejected"}) == "rejected"  # still, after the worker

    provisor("up", str(gated), "--name", "yes")
    _state(provisor, "yes", {"awaiting_approval"})
    provisor("approve", "yes")
    # Approved: deploying from this moment (ready soon after), so a rejection is refused.
    error = _refused(provisor, "reject", "yes", "--reason", "changed my mind")
    assert re.search(r"cannot reject deployment 'yes': it is (deploying|ready) \(", error)
    assert _state(provisor, "yes", {"ready", "failed"}) == "ready"
    assert "cannot approve deployment 'yes': it is ready (ready)" in _refused(
        provisor, "approve", "yes"
    )

    provisor("down", "yes")
    for command in (["approve", "yes"], ["reject", "yes", "--reason", "x"], ["down", "yes"]):
        error = _refused(provisor, *command)
        assert "no deployment named 'yes' (removed " in error and " by " in error, error
    assert "(removed " in _refused(provisor, "status", "yes")
    # Each refusal is in the audit log, as a failed attempt.
    events = json.loads(provisor("events", "--output", "json").stdout)
    failed = {(e["kind"], e["subject"]) for e in events if e["outcome"] == "failed"}
    assert {("deployment.approve", "no"), ("deployment.reject", "yes")} <= failed


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Provisor]]:
    """A real `provisor server`, and the CLI of its data directory (its owner)."""
    home = tmp_path / "server-home"
    owner = Provisor(home)
    owner("users", "add", "boss", "--tenant", "default", "--role", "admin")
    token = owner("tokens", "add", "boss").stdout.strip()
    remote = Provisor(tmp_path / "client-home")
    remote.env["PROVISOR_TOKEN"] = token
    try:
        network = {"PROVISOR_LOCAL_NETWORK": owner.env["PROVISOR_LOCAL_NETWORK"]}
        with start_server(home, env=network) as (url, _):
            remote.env["PROVISOR_SERVER"] = url
            yield url, remote
    finally:
        owner("worker", "stop", check=False)  # the one the server started


def test_refused_changes_over_the_api_are_conflicts(
    server: tuple[str, Provisor], gated: Path
) -> None:
    url, cli = server
    token = cli.env["PROVISOR_TOKEN"]
    with httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        _refusals_over_the_api(api, cli, gated)


def _refusals_over_the_api(api: httpx.Client, cli: Provisor, gated: Path) -> None:
    def state(name: str, states: set[str]) -> str:
        deadline = time.monotonic() + 180
        while True:
            found = str(api.get(f"/deployments/{name}").json()["state"])
            if found in states or time.monotonic() > deadline:
                return found
            time.sleep(0.3)

    cli("up", str(gated), "--name", "no")  # through the server: --server from the environment
    state("no", {"awaiting_approval"})
    assert api.post("/deployments/no/reject", json={"reason": "too big"}).status_code == 200
    answer = api.post("/deployments/no/approve")
    assert answer.status_code == 409
    assert answer.json()["error"]["message"].startswith(
        "cannot approve deployment 'no': it is rejected (rejected: too big)"
    )
    assert "it is rejected" in _refused(cli, "approve", "no")

    cli("up", str(gated), "--name", "yes")
    state("yes", {"awaiting_approval"})
    assert api.post("/deployments/yes/approve").status_code == 200
    answer = api.post("/deployments/yes/reject", json={"reason": "late"})
    assert answer.status_code == 409
    assert re.search(r"it is (deploying|ready) \(", answer.json()["error"]["message"])
    assert state("yes", {"ready", "failed"}) == "ready"
    answer = api.post("/deployments/yes/approve")
    assert answer.status_code == 409 and "it is ready" in answer.json()["error"]["message"]

    assert api.delete("/deployments/yes").status_code == 200
    for method, path in (("POST", "approve"), ("DELETE", "")):
        gone = api.request(method, f"/deployments/yes/{path}".rstrip("/"))
        assert gone.status_code == 404
        assert "no deployment named 'yes' (removed " in gone.json()["error"]["message"]
    assert "(removed " in _refused(cli, "down", "yes")
