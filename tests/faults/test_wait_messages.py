"""`--wait` never ends silently: when it stops without `ready` it says the state, the step
and the error on standard error, and exits with the status docs/deployments.md lists."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from provisor.testing import crash
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployments.md"

FAILING = """\
name: broken
version: '1'
nodes:
  box:
    image: debian-12
    scripts: ['echo preparing; echo "disk is full" >&2; exit 3']
"""
GATED = """\
name: gated
version: '1'
approval: required
nodes:
  box:
    image: debian-12
    scripts: ['true']
"""
SLOW = """\
name: slow
version: '1'
nodes:
  box:
    image: debian-12
    scripts: ['sleep 600']
"""


def _blueprint(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"{text.split()[1]}.yaml"
    path.write_text(text)
    return path


def _said(stderr: str) -> str:
    return " ".join(stderr.split())  # rich wraps long lines


def _until_line(process: subprocess.Popen[str], fragment: str) -> None:
    """Read the follower's progress lines until one holds `fragment`."""
    assert process.stderr is not None
    seen = []
    while True:
        line = process.stderr.readline()
        assert line, f"no line with {fragment!r} in {seen}"
        seen.append(line)
        if fragment in line:
            return


def test_a_failed_deployment_says_its_step_and_error(provisor: Provisor, tmp_path: Path) -> None:
    result = provisor("up", str(_blueprint(tmp_path, FAILING)), "--wait", check=False)
    assert result.returncode == 1, result.stderr
    said = _said(result.stderr)
    assert (
        "deployment broken is failed (step: failed at configure): configure on broken-box-1: "
        "script 1 failed (exit status 3): disk is full"
    ) in said, said
    assert "state failed" in " ".join(result.stdout.split())  # the status is shown too
    again = provisor("status", "broken", "--wait", "--output", "json", check=False)
    assert again.returncode == 1 and json.loads(again.stdout)["state"] == "failed"
    assert "failed at configure" in again.stderr


def test_rejected_and_removed_while_waiting(provisor: Provisor, tmp_path: Path) -> None:
    provisor("up", str(_blueprint(tmp_path, GATED)))
    follower = provisor.popen("status", "gated", "--wait")
    _until_line(follower, "gated awaiting_approval")
    provisor("reject", "gated", "--reason", "over budget")
    _, stderr = follower.communicate(timeout=120)
    assert follower.returncode == 3, stderr
    assert "deployment gated is rejected (step: rejected): over budget" in _said(stderr)

    provisor("up", str(_blueprint(tmp_path, SLOW)))
    follower = provisor.popen("status", "slow", "--wait")
    _until_line(follower, "configuring box")
    provisor("down", "slow")
    _, stderr = follower.communicate(timeout=120)
    assert follower.returncode == 4, stderr
    # Seen while `down` works, or once it is done.
    said = _said(stderr)
    assert re.search(
        r"deployment slow (is terminating \(step: terminating machines\)|was removed: no "
        r"deployment named 'slow' \(removed )",
        said,
    ), said


def test_timeout_says_it_goes_on(provisor: Provisor, tmp_path: Path) -> None:
    provisor("up", str(_blueprint(tmp_path, GATED)))
    deadline = time.monotonic() + 120
    while provisor.status("gated")["state"] != "awaiting_approval":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    result = provisor("status", "gated", "--wait", "--timeout", "2s", check=False)
    assert result.returncode == 6, result.stderr
    said = _said(result.stderr)
    assert "stopped waiting after 2s: deployment gated is awaiting_approval" in said
    assert "(step: waiting for approval); it goes on: `provisor status gated --wait`" in said
    bad = provisor("status", "gated", "--wait", "--timeout", "soon", check=False)
    assert bad.returncode == 2 and "timeout: invalid duration 'soon'" in bad.stderr


def test_a_worker_that_keeps_dying_is_reported(provisor: Provisor, tmp_path: Path) -> None:
    """Killed at the same step every time: the supervisor gives up after its restarts, and
    `--wait` says no worker is running rather than waiting for ever."""
    result = provisor(
        "up",
        str(_blueprint(tmp_path, GATED.replace("approval: required\n", ""))),
        "--wait",
        # Restarts 0.05 s apart, not the default 1 s doubling to 16 s: the same path, sooner.
        env={**crash.environment("planned"), "PROVISOR_WORKER_RESTART_PAUSE": "0.05"},
        check=False,
    )
    assert result.returncode == 5, result.stderr
    said = _said(result.stderr)
    assert "deployment gated is deploying (step: planned), and no worker is running" in said
    assert "`provisor worker start` resumes it" in said
    log = (provisor.home / "worker.log").read_text()
    assert log.count("was killed by SIGKILL; starting it again") == 5
    assert "6 times in a row; giving up" in log
    # Without the crash, the next worker takes it to the end.
    provisor("worker", "start")
    assert provisor.status("gated")["state"] in ("requested", "deploying", "ready")
    assert provisor("status", "gated", "--wait").returncode == 0


def test_the_exit_statuses_are_documented() -> None:
    """In `--wait`'s help (docs/cli.md is made from it, and test_docs keeps it current)
    and in docs/deployments.md."""
    helped = (DOCS.parent / "cli.md").read_text()
    docs = DOCS.read_text()
    for code, meaning in [
        (0, "ready"),
        (1, "failed"),
        (2, "refused"),
        (3, "rejected"),
        (4, "removed"),
        (5, "no worker"),
        (6, "--timeout"),
        (130, "interrupted"),
    ]:
        for command in ("up", "status"):
            section = helped.split(f"## `provisor {command}`\n", 1)[1].split("\n## ", 1)[0]
            assert f"{code} {meaning}" in section, (command, code)
        assert re.search(rf"^\| {code} \| [^|]*{re.escape(meaning)}", docs, re.MULTILINE), code
