"""`python -m provisor.testing`: a testbed from the shell, without writing Python."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from machines_needed import requires_root
from test_fleet import cli

pytestmark = [pytest.mark.testbed, requires_root]


def run_testing(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "provisor.testing", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # not under /tmp: namespace hosts overlay it
    base = Path("/run/provisor-test") / f"cli-{secrets.token_hex(4)}"
    base.mkdir(parents=True)
    (base / ".session-pid").write_text(f"{os.getpid()}\n")  # a live owner: not `cleanup`'s
    try:
        yield base
    finally:
        run_testing("cleanup", str(base))
        shutil.rmtree(base, ignore_errors=True)


def test_start_list_use_and_destroy_from_the_shell(base_dir: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "testbed.ini"
    started = run_testing("start", "2", "--base-dir", str(base_dir), "--inventory", str(inventory))
    assert started.returncode == 0, started.stderr
    assert "2 host(s) started" in started.stdout and "tb01" in started.stdout
    more = run_testing("start", "1", "--base-dir", str(base_dir), "--inventory", str(inventory))
    assert "tb03" in more.stdout  # numbering goes on after the hosts already there

    home = tmp_path / "home"
    assert cli("hosts", "import", str(inventory), home=home).returncode == 0
    ran = cli("run", "group:testbed", "--", "hostname", home=home)
    assert ran.returncode == 0, ran.stderr
    assert {line.split(": ")[1] for line in ran.stdout.splitlines()} == {"tb01", "tb02", "tb03"}

    # `list | head -1`: the pipe closes early, and that is no error
    piped = subprocess.run(
        f"{sys.executable} -m provisor.testing list --base-dir {base_dir} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stdout.startswith("tb01") and "Traceback" not in piped.stderr

    gone = run_testing("destroy", "--all", "--base-dir", str(base_dir))
    assert gone.stdout.strip() == "destroyed 3 host(s): tb[01-03]"  # folded: 2,000 stay short
    again = run_testing("destroy", "--all", "--base-dir", str(base_dir))
    assert "no hosts to destroy" in again.stderr


def test_usage_reads_as_written_and_bad_counts_are_refused() -> None:
    usage = run_testing("--help").stdout
    assert "    python -m provisor.testing start N [--base-dir DIR]" in usage
    refused = run_testing("start", "0")
    assert refused.returncode == 2 and "give 1 to 10000 hosts" in refused.stderr
