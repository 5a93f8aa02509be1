"""A scheduled backup end to end on the local provider: the worker SIGKILLed right after
it started one, then stopped across two due times. Minutes of cron time, mostly waited:
a module of its own, so the suite's processes share it out apart from tests/test_backups.py."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisor.testing import crash
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def _scheduled(provisor: Provisor) -> list[tuple[str, str, str]]:
    """(scheduled time, state, workflow id) of every scheduled backup."""
    with sqlite3.connect(provisor.home / "provisor.db") as db:
        rows = db.execute(
            "SELECT scheduled_for, state, workflow_id FROM backups WHERE trigger = 'schedule' "
            "ORDER BY scheduled_for"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def _wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(1.0)
    raise AssertionError(f"not within {timeout:g}s: {what}")


SCHEDULED = """\
name: nightly
version: "1"
nodes:
  solo:
    image: debian-12
    backup: {schedule: "* * * * *", keep: 50}
"""


def _minute(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def test_scheduled_backup_runs_once_across_a_sigkill_and_a_stop(
    provisor: Provisor, tmp_path: Path
) -> None:
    """The worker is SIGKILLed right after it started a due backup, before it recorded
    doing so; the restarted worker starts nothing twice. Then no worker runs across two
    due times: the next one starts the latest of them, once, not every run it missed."""
    blueprint = tmp_path / "nightly.yaml"
    blueprint.write_text(SCHEDULED)
    killed = tmp_path / "killed"
    provisor("up", str(blueprint), "--wait", env=crash.environment("backup-scheduled", once=killed))
    _wait_for(killed.exists, 150, "the worker killed after starting a scheduled backup")
    _wait_for(
        lambda: any(state == "good" for _, state, _ in _scheduled(provisor)),
        150,
        "a good scheduled backup",
    )
    log = (provisor.home / "worker.log").read_text()
    assert "was killed by SIGKILL; starting it again" in log, log
    runs = _scheduled(provisor)
    times = [when[:16] for when, _, _ in runs]
    assert len(times) == len(set(times)), runs  # one backup per scheduled time
    # The background worker stays up while a deployment has a schedule.
    assert "not running" not in provisor("worker", "status").stdout
    provisor("worker", "stop")
    stopped = datetime.now(UTC)
    missed = [stopped.replace(second=0, microsecond=0) + timedelta(minutes=n) for n in (1, 2)]
    time.sleep((missed[1] - datetime.now(UTC)).total_seconds() + 2)
    provisor("worker", "start")
    _wait_for(
        lambda: any(when[:16] == _minute(missed[1]) for when, _, _ in _scheduled(provisor)),
        60,
        "the latest missed run started",
    )
    after = [when[:16] for when, _, _ in _scheduled(provisor)]
    assert _minute(missed[0]) not in after, after  # the missed runs collapsed into one
    assert after.count(_minute(missed[1])) == 1
    assert len(after) == len(set(after)), after
