"""A deployment never waits for a process nobody started: the commands that give it work
start the background worker, which outlives them; `provisor worker status|stop`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

GATED = """\
name: gated
version: '1'
approval: required
nodes:
  box:
    image: debian-12
    publishes: [ready]
    scripts: ['provisor-param set ready yes']
"""
SLOWISH = """\
name: slowish
version: '1'
nodes:
  box:
    image: debian-12
    scripts: ['sleep 4']
"""


def _blueprint(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"{text.split()[1]}.yaml"
    path.write_text(text)
    return path


def _until(provisor: Provisor, name: str, states: set[str], timeout: float = 180) -> str:
    """The deployment's state once it is one of `states` (read with `status`, which moves
    nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        state = str(provisor.status(name)["state"])
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def _worker(provisor: Provisor) -> dict[str, object]:
    view: dict[str, object] = json.loads(provisor("worker", "status", "--output", "json").stdout)
    return view


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: the supervisor is detached, its parent (this test's CLI) ended.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_approval_needs_no_other_command(provisor: Provisor, tmp_path: Path) -> None:
    """`up` exits, `approve` exits, and the deployment reaches ready: nobody ran a worker.
    The worker is even stopped while the deployment waits: `approve` starts a new one."""
    provisor("up", str(_blueprint(tmp_path, GATED)))
    assert _until(provisor, "gated", {"awaiting_approval"}) == "awaiting_approval"
    stopped = provisor("worker", "stop")
    assert "worker stopped" in stopped.stdout
    assert _worker(provisor)["running"] is False
    approved = provisor("approve", "gated")
    assert "approved gated" in approved.stdout
    assert "started the background worker" in approved.stderr
    assert _until(provisor, "gated", {"ready", "failed"}) == "ready"
    params = json.loads(provisor("params", "gated", "--output", "json").stdout)
    assert {"key": "box.1.ready", "value": "yes", "set_by": "gated-box-1"} in params["values"]
    # With nothing left to do, the worker ends by itself.
    deadline = time.monotonic() + 120
    while _worker(provisor)["running"]:
        assert time.monotonic() < deadline, "the worker did not end when idle"
        time.sleep(0.5)
    assert "no work left; stopped" in (provisor.home / "worker.log").read_text()


def test_up_wait_interrupted_still_reaches_ready(provisor: Provisor, tmp_path: Path) -> None:
    up = provisor.popen("up", str(_blueprint(tmp_path, SLOWISH)), "--wait")
    assert up.stderr is not None
    seen = []
    while not any("slowish deploying" in line for line in seen):
        line = up.stderr.readline()
        assert line, seen
        seen.append(line)
    up.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = up.communicate(timeout=60)
    assert up.returncode == 130, stderr
    said = " ".join(stderr.split())
    assert "stopped following slowish (deploying: " in said
    assert "it goes on in the background: `provisor status slowish --wait`" in said
    assert _until(provisor, "slowish", {"ready", "failed"}) == "ready"


def test_worker_status_and_stop(provisor: Provisor, tmp_path: Path) -> None:
    assert _worker(provisor)["running"] is False
    assert "not running" in provisor("worker", "status").stdout
    provisor("up", str(_blueprint(tmp_path, SLOWISH.replace("sleep 4", "sleep 600"))))
    _until(provisor, "slowish", {"deploying"})
    deadline = time.monotonic() + 60
    while not (view := _worker(provisor))["pid"]:  # the supervisor starts it
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    assert view["running"] is True and view["supervisor_pid"] and view["since"]
    assert view["log"] == str(provisor.home / "worker.log")
    (working,) = view["deployments"]  # type: ignore[misc]
    assert working["name"] == "slowish" and working["tenant"] == "default"
    shown = " ".join(provisor("worker", "status").stdout.split())
    assert f"running (pid {view['pid']}, supervised by pid {view['supervisor_pid']}" in shown
    assert "slowish" in shown and "worker.log" in shown

    stopped = provisor("worker", "stop", "--timeout", "60s")
    assert "worker stopped" in stopped.stdout, stopped.stderr
    assert _gone(int(view["pid"])) and _gone(int(view["supervisor_pid"]))  # type: ignore[call-overload]
    assert _worker(provisor)["running"] is False
    assert "no worker was running" in provisor("worker", "stop").stdout
    # Stopped where it was; `status` says nobody moves it, `status --wait` gets a worker.
    status = provisor("status", "slowish")
    assert "no worker is running to move slowish" in " ".join(status.stderr.split())
    assert provisor.status("slowish")["state"] == "deploying"
    assert "stopped by SIGTERM" in (provisor.home / "worker.log").read_text()
    provisor("worker", "start")
    assert "a worker is running already" in provisor("worker", "start").stdout
    assert _worker(provisor)["running"] is True
    provisor("down", "slowish")


def test_down_while_awaiting_approval_lets_the_worker_end(
    provisor: Provisor, tmp_path: Path
) -> None:
    """Its workflow stays in DBOS's wait for a decision even when cancelled: the worker
    must not count it as work, or it would run for the 30 days of that wait."""
    provisor("up", str(_blueprint(tmp_path, GATED)))
    _until(provisor, "gated", {"awaiting_approval"})
    assert _worker(provisor)["running"] is True  # the workflow waits in it
    provisor("down", "gated")
    deadline = time.monotonic() + 120
    while _worker(provisor)["running"]:
        assert time.monotonic() < deadline, "the worker kept running for a removed deployment"
        time.sleep(0.5)
    assert "no work left; stopped" in (provisor.home / "worker.log").read_text()
