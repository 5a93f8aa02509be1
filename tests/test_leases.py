"""Leases and scheduled starts through the real CLI on the local provider: a lease gives
notice and ends (stop), an extension postpones the end, a worker killed in the middle of
the end acts once, a scheduled deployment starts at its time, and wrong times are refused.

Durations are seconds here (`--lease`/`--until`/`--at` take them; the notice comes from
PROVISOR_LEASE_NOTICE); the tests wait for what must happen, never time it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisor.testing import crash
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

ONE = """\
name: one
version: '1'
nodes:
  box:
    image: debian-12
    scripts: ['true']
"""


@pytest.fixture
def one(provisor: Provisor, tmp_path: Path) -> Path:
    provisor.env["PROVISOR_LEASE_NOTICE"] = "60s"  # a shortened lease is noticed at once
    path = tmp_path / "one.yaml"
    path.write_text(ONE)
    return path


def _until(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g}s"
        time.sleep(0.3)


def _events(provisor: Provisor, prefix: str = "lease.") -> list[dict[str, object]]:
    events = json.loads(provisor("events", "--output", "json").stdout)
    return [e for e in events if str(e["kind"]).startswith(prefix)]


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _refused(provisor: Provisor, *args: str) -> str:
    result = provisor(*args, check=False)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    return " ".join(result.stderr.split())


def test_a_lease_gives_notice_then_ends_in_stop(provisor: Provisor, one: Path) -> None:
    provisor("up", str(one), "--lease", "1h", "--wait")
    listed = provisor("deployments", "list").stdout
    assert "lease left" in listed and "59m" in listed
    provisor("lease", "extend", "one", "--until", _in(15))  # shortened: ends in a moment
    _until("stop at the end of the lease", lambda: provisor.status("one")["state"] == "stopped")
    status = provisor.status("one")
    assert status["lease_seconds_left"] == 0 and status["lease_end"] == "stop"
    assert {m["state"] for m in status["machines"]} == {"stopped"}  # type: ignore[union-attr]
    kinds = [(e["kind"], e["details"]["severity"]) for e in _events(provisor)]  # type: ignore[index]
    assert kinds == [
        ("lease.extended", "info"),
        ("lease.expiring", "warning"),
        ("lease.ended", "info"),
    ]
    expiring, ended = _events(provisor)[1:]
    instance = provisor.instance("one")
    for event in (expiring, ended):
        details = event["details"]
        assert isinstance(details, dict)
        assert details["deployment"] == "one" and details["incident"] == f"lease:{instance}"
    assert expiring["details"]["incident_state"] == "open"  # type: ignore[index]
    assert ended["details"]["incident_state"] == "resolved"  # type: ignore[index]
    assert ended["details"]["action"] == "stop"  # type: ignore[index]
    stopped = _events(provisor, "deployment.stopped")
    assert len(stopped) == 1 and stopped[0]["details"]["reason"] == "lease ended"  # type: ignore[index]
    assert "ended" in provisor("status", "one").stdout


def test_a_lease_that_ends_in_terminate_removes_the_deployment(
    provisor: Provisor, one: Path
) -> None:
    provisor("up", str(one), "--lease", "1h", "--lease-end", "terminate", "--wait")
    instance = provisor.instance("one")
    assert "then terminate" in provisor("status", "one").stdout
    provisor("lease", "extend", "one", "--until", _in(10))

    def gone() -> bool:
        listed = provisor("deployments", "list", "--output", "json").stdout
        return json.loads(listed) == []

    _until("the deployment removed at the end of its lease", gone)
    assert {m["state"] for m in provisor.machines_of(instance)} == {"terminated"}
    ended = [e for e in _events(provisor) if e["kind"] == "lease.ended"]
    assert len(ended) == 1 and ended[0]["details"]["action"] == "terminate"  # type: ignore[index]
    removed = _events(provisor, "deployment.terminated")
    assert [(e["actor"], e["outcome"]) for e in removed] == [("lease", "ok")]


def test_an_extension_before_the_end_postpones_it(provisor: Provisor, one: Path) -> None:
    provisor("up", str(one), "--lease", "1h", "--wait")
    first_end = datetime.now(UTC) + timedelta(seconds=40)
    provisor("lease", "extend", "one", "--until", first_end.isoformat(timespec="seconds"))
    _until("the notice", lambda: any(e["kind"] == "lease.expiring" for e in _events(provisor)))
    extended = json.loads(
        provisor("lease", "extend", "one", "--by", "1h", "--output", "json").stdout
    )
    assert extended["lease_seconds_left"] > 3000
    # Past the first end (and a few ticks more): nothing ended, nothing stopped.
    _until("the first end to pass", lambda: datetime.now(UTC) > first_end + timedelta(seconds=4))
    assert provisor.status("one")["state"] == "ready"
    kinds = [e["kind"] for e in _events(provisor)]
    assert kinds == ["lease.extended", "lease.expiring", "lease.extended"]
    answered = _events(provisor)[-1]["details"]
    assert isinstance(answered, dict) and answered["incident_state"] == "resolved"


def test_a_worker_killed_while_ending_a_lease_acts_once(
    provisor: Provisor, one: Path, tmp_path: Path
) -> None:
    """Killed after the end was recorded, before its step was checkpointed: the next
    worker runs the step again, which records nothing twice, and stops the deployment."""
    provisor("up", str(one), "--lease", "1h", "--wait")
    provisor("worker", "stop")  # the next worker is started with the crash point
    provisor.env.update(crash.environment("lease-ended:one", once=tmp_path / "killed"))
    provisor("lease", "extend", "one", "--until", _in(4))
    _until("stop after the restart", lambda: provisor.status("one")["state"] == "stopped")
    assert (tmp_path / "killed").exists()
    assert [e["kind"] for e in _events(provisor)].count("lease.ended") == 1
    assert len(_events(provisor, "deployment.stopped")) == 1


def _worker(provisor: Provisor) -> dict[str, object]:
    found: dict[str, object] = json.loads(provisor("worker", "status", "--output", "json").stdout)
    return found


def test_a_scheduled_deployment_starts_at_its_time(provisor: Provisor, one: Path) -> None:
    queued = provisor("up", str(one), "--at", "8s", "--lease", "2h").stdout
    assert "scheduled for" in " ".join(queued.split())
    status = provisor.status("one")
    assert status["state"] == "scheduled" and status["starts_at"]
    # Nothing queued, but a start to wait for: the background worker stays (an idle one
    # ends within about a second), the same one. Right after `up` only its supervisor may
    # be there yet: the worker's pid is known once it holds its lock.
    _until("the worker's pid", lambda: _worker(provisor)["pid"] is not None, 60)
    pid = _worker(provisor)["pid"]
    time.sleep(3)
    assert _worker(provisor)["running"] and _worker(provisor)["pid"] == pid
    _until("the scheduled start", lambda: provisor.status("one")["state"] == "ready")
    status = provisor.status("one")
    assert isinstance(status["lease_seconds_left"], int) and status["lease_seconds_left"] > 3600
    time.sleep(3)  # ready, with a lease to end: the worker stays
    assert _worker(provisor)["running"]


def test_wrong_times_are_refused_saying_why(provisor: Provisor, one: Path) -> None:
    error = _refused(provisor, "up", str(one), "--at", "2020-01-01T00:00")
    assert "--at 2020-01-01 00:00:00 UTC is in the past" in error, error
    assert "leave --at out to deploy now" in error
    for lease, message in (
        ("-1d", "invalid duration"),
        ("0s", "at least 1s"),
        ("99999w", "longer than the longest lease allowed (1830 days): give none"),
        ("soon", "invalid duration"),
        ("1d; rm -rf /", "invalid duration"),
    ):
        assert message in _refused(provisor, "up", str(one), "--lease", lease)
    assert "use stop or terminate" in _refused(provisor, "up", str(one), "--lease-end", "kill")
    assert "cannot read" in _refused(provisor, "up", str(one), "--at", "tomorrow-ish")
    assert "days ahead" in _refused(provisor, "up", str(one), "--at", "9999-01-01")
    assert json.loads(provisor("deployments", "list", "--output", "json").stdout) == []

    provisor("up", str(one), "--at", "1h")  # scheduled: nothing launched
    assert "in the past" in _refused(
        provisor, "lease", "extend", "one", "--until", "2020-01-01T00:00Z"
    )
    assert "give one of --by" in _refused(provisor, "lease", "extend", "one")
    assert "give one of --by" in _refused(
        provisor, "lease", "extend", "one", "--by", "1d", "--until", "2d"
    )
    assert "longer than the longest lease" in _refused(
        provisor, "lease", "extend", "one", "--by", "900w"
    )
    assert "more than 1830 days from now" in _refused(
        provisor, "lease", "extend", "one", "--until", "9000w"
    )
    assert "no deployment named 'nobody'" in _refused(
        provisor, "lease", "extend", "nobody", "--by", "1d"
    )
    assert [e["outcome"] for e in _events(provisor)] == ["failed"] * 6
    provisor("down", "one")  # scheduled, never started: removed at once
