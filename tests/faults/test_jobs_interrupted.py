"""A `provisor run` killed with SIGKILL mid-way: its job does not stay `running` forever.

The next `provisor jobs show` finds the job's heartbeat too old and marks it
`interrupted`: the hosts that had answered keep their exact outcomes, the others are
`unknown`, and an event says so. The bound (60s by default) is 5s here, by setting.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from provisor.machines import SandboxHost
from provisor.testing.pytest_plugin import Testbed
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

STALE_AFTER = 5  # seconds without a heartbeat before a running job is interrupted


def inventory(hosts: list[SandboxHost], group: str) -> str:
    lines = [f"[{group}]"]
    lines += [
        f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
        f"ansible_ssh_private_key_file={h.client_key}"
        for h in hosts
    ]
    return "\n".join(lines) + "\n"


def answered(home: Path, job_id: int) -> dict[str, str]:
    """Host -> outcome of the hosts whose result is saved (read as the database holds it)."""
    with sqlite3.connect(home / "provisor.db") as db:
        rows = db.execute(
            "SELECT host, outcome FROM job_results WHERE job_id = ? AND outcome != 'pending'",
            (job_id,),
        ).fetchall()
    return dict(rows)


def job_ids(home: Path) -> list[int]:
    if not (home / "provisor.db").exists():
        return []
    with sqlite3.connect(home / "provisor.db") as db:
        try:
            return [row[0] for row in db.execute("SELECT id FROM jobs ORDER BY id")]
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def test_a_killed_run_is_interrupted_with_exact_outcomes(testbed: Testbed, tmp_path: Path) -> None:
    hosts = testbed(50)
    cli = Provisor(tmp_path / "home")
    cli.env["PROVISOR_JOB_STALE_AFTER"] = str(STALE_AFTER)
    (tmp_path / "fleet.ini").write_text(inventory(hosts, "fleet"))
    cli("hosts", "import", str(tmp_path / "fleet.ini"))

    ok, failed, slow = hosts[:12], hosts[12:20], hosts[20:]
    names = {h.name for h in hosts}
    command = (
        f'case " {" ".join(h.name for h in ok)} " in *" $(hostname) "*) '
        "echo answer-$(hostname); exit 0;; esac; "
        f'case " {" ".join(h.name for h in failed)} " in *" $(hostname) "*) '
        "echo broke-$(hostname) >&2; exit 5;; esac; "
        "sleep 300"
    )
    run = cli.popen("run", "group:fleet", "-p", "50", "-t", "10m", "--", command)
    try:
        deadline = time.monotonic() + 120
        while not job_ids(cli.home) or len(answered(cli.home, job_ids(cli.home)[-1])) < 20:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the fast hosts' results were never saved"
            time.sleep(0.2)
        (job_id,) = job_ids(cli.home)
        # While its process lives, the job is running, whoever looks (its heartbeat is fresh).
        shown = json.loads(cli("jobs", "show", str(job_id), "--output", "json").stdout)
        assert shown["state"] == "running"
        assert {r["outcome"] for r in shown["results"] if r["host"] in {h.name for h in slow}} == {
            "pending"
        }
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate()
    assert run.returncode == -signal.SIGKILL

    time.sleep(STALE_AFTER + 1)  # the last heartbeat is now older than the bound
    job = json.loads(cli("jobs", "show", str(job_id), "--output", "json").stdout)
    assert job["state"] == "interrupted"
    results = {r["host"]: r for r in job["results"]}
    assert set(results) == names  # every host of the job, each once
    for h in ok:
        r = results[h.name]
        assert (r["outcome"], r["exit_code"], r["stdout"]) == ("ok", 0, f"answer-{h.name}\n")
    for h in failed:
        r = results[h.name]
        assert (r["outcome"], r["exit_code"], r["stderr"]) == ("failed", 5, f"broke-{h.name}\n")
    for h in slow:
        r = results[h.name]
        assert r["outcome"] == "unknown" and r["exit_code"] is None
        assert "stopped before this host answered" in r["error"]
    assert job["summary"] == {"ok": 12, "failed": 8, "unknown": 30}
    assert job["finished_at"] is not None

    text = cli("jobs", "show", str(job_id)).stdout
    assert "interrupted: the process running it stopped" in text
    listed = json.loads(cli("jobs", "list", "--output", "json").stdout)
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "interrupted")]

    events = json.loads(cli("events", "--kind", "job.interrupted", "--output", "json").stdout)
    assert len(events) == 1  # marked once, however many looked
    assert events[0]["outcome"] == "failed"
    assert events[0]["details"]["job"] == job_id
    assert events[0]["details"]["unknown"] == 30


def test_a_job_ended_by_ctrl_c_is_interrupted_at_once(testbed: Testbed, tmp_path: Path) -> None:
    """SIGINT: the process itself records what it knows before it exits."""
    hosts = testbed(4)
    cli = Provisor(tmp_path / "home")
    (tmp_path / "fleet.ini").write_text(inventory(hosts, "fleet"))
    cli("hosts", "import", str(tmp_path / "fleet.ini"))
    first = hosts[0].name
    command = f'[ "$(hostname)" = {first} ] && exit 0; sleep 300'
    run = cli.popen("run", "group:fleet", "--", command)
    try:
        deadline = time.monotonic() + 60
        while not job_ids(cli.home) or first not in answered(cli.home, job_ids(cli.home)[-1]):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the first host's result was never saved"
            time.sleep(0.2)
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    (job_id,) = job_ids(cli.home)
    job = json.loads(cli("jobs", "show", str(job_id), "--output", "json").stdout)
    assert job["state"] == "interrupted"
    assert {r["host"]: r["outcome"] for r in job["results"]} == {
        h.name: "ok" if h.name == first else "unknown" for h in hosts
    }
