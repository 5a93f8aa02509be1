"""Test hook: SIGKILL this process at a named point (PROVISOR_TEST_KILL_AT=NAME).

The crash-safety tests kill the controller between an outside call (a provider's
API) and the checkpoint that records it; production never sets the variable.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("PROVISOR_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
