"""Crash points: SIGKILL a provisor process at a named step, as a power cut would.

provisor raises the audit event `provisor.step` (PEP 578, `sys.audit`) at the step
boundaries crash tests care about, e.g. between a provider's API call and the checkpoint
that records it; production installs no hook, so the event costs next to nothing. Here
an audit hook kills the process when the step named by `PROVISOR_TEST_KILL_AT` is
reached. Processes started by the one under test (a worker the CLI spawns) get the hook
too: `environment()` puts `crashsite/`, whose `sitecustomize` installs it, on PYTHONPATH.

With `once`, only the first process to reach the step is killed (the background
worker's supervisor starts the worker again, and it must get past the step). A pause
(`pause_environment`) holds the process at the step instead, until the test lets it go:
to act (e.g. `down`) while a step is in progress.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

KILL_AT = "PROVISOR_TEST_KILL_AT"
KILL_ONCE = "PROVISOR_TEST_KILL_ONCE"  # a file made by the one kill; none after it
PAUSE_AT = "PROVISOR_TEST_PAUSE_AT"
PAUSE_DIR = "PROVISOR_TEST_PAUSE_DIR"  # `reached` is made there; `release` lets it go
PAUSE_LIMIT = 300.0  # a pause nobody ends ends by itself
STEP_EVENT = "provisor.step"
_SITE = Path(__file__).with_name("crashsite")


def _first(marker: str) -> bool:
    """Whether this is the first process to get here (it makes the marker file)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def install() -> None:
    """Kill this process at the step `PROVISOR_TEST_KILL_AT` names, or pause it at the
    step `PROVISOR_TEST_PAUSE_AT` names, if they name one."""
    kill, once = os.environ.get(KILL_AT), os.environ.get(KILL_ONCE)
    pause, pause_dir = os.environ.get(PAUSE_AT), os.environ.get(PAUSE_DIR)
    if not kill and not (pause and pause_dir):
        return

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != STEP_EVENT or not args:
            return
        if args[0] == kill and (once is None or _first(once)):
            os.kill(os.getpid(), signal.SIGKILL)
        if pause_dir and args[0] == pause and _first(os.path.join(pause_dir, "reached")):
            release = Path(pause_dir, "release")
            deadline = time.monotonic() + PAUSE_LIMIT
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    sys.addaudithook(hook)


def _on_path() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{_SITE}{os.pathsep}{path}" if path else str(_SITE)}


def environment(step: str, *, once: Path | None = None) -> dict[str, str]:
    """The variables to add to a child's environment to kill it (and its own children)
    at `step`; with `once` (a file that does not exist yet), only the first to get there."""
    return {**_on_path(), KILL_AT: step, **({KILL_ONCE: str(once)} if once else {})}


def pause_environment(step: str, directory: Path) -> dict[str, str]:
    """The variables that hold the first process reaching `step` there (its whole thread:
    the worker's event loop) until `directory/release` exists; `directory/reached`
    says it got there."""
    return {**_on_path(), PAUSE_AT: step, PAUSE_DIR: str(directory)}
