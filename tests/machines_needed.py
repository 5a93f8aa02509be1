"""What tests of real local machines share: the root they need, and a last clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Namespace-mode machines need root. In CI these tests run whatever the user, and fail
# loudly without root: nothing may be skipped there.
requires_root = pytest.mark.skipif(
    os.geteuid() != 0 and not IN_CI, reason="local machines (network namespaces) need root"
)


def clean_up_machines(hosts_dir: Path) -> None:
    """Stop and remove whatever machines a failed test left in `hosts_dir`."""
    subprocess.run(
        [sys.executable, "-m", "provisor.testing", "cleanup", str(hosts_dir)],
        capture_output=True,
        check=False,
    )
