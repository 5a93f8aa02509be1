"""Crash points: SIGKILL a provisor process at a named step, as a power cut would.

provisor raises the audit event `provisor.step` (PEP 578, `sys.audit`) at the step
boundaries crash tests care about, e.g. between a provider's API call and the checkpoint
that records it; production installs no hook, so the event costs next to nothing. Here
an audit hook kills the process when the step named by `PROVISOR_TEST_KILL_AT` is
reached. Processes started by the one under test (a worker the CLI spawns) get the hook
too: `environment()` puts `crashsite/`, whose `sitecustomize` installs it, on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

KILL_AT = "PROVISOR_TEST_KILL_AT"
STEP_EVENT = "provisor.step"
_SITE = Path(__file__).with_name("crashsite")


def install() -> None:
    """Kill this process at the step `PROVISOR_TEST_KILL_AT` names, if it names one."""
    step = os.environ.get(KILL_AT)
    if not step:
        return

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == STEP_EVENT and args and args[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def environment(step: str) -> dict[str, str]:
    """The variables to add to a child's environment to kill it (and its own children)
    at `step`."""
    path = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": f"{_SITE}{os.pathsep}{path}" if path else str(_SITE),
        KILL_AT: step,
    }
