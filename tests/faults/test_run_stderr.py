"""`provisor run` prints no Python warnings: cryptography's DSA deprecation, which
asyncssh triggers on import, is filtered at start-up for asyncssh alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisor.testing.pytest_plugin import Testbed
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed]


def test_provisor_run_stderr_holds_only_its_summary(testbed: Testbed, tmp_path: Path) -> None:
    (host,) = testbed(1)
    cli = Provisor(tmp_path / "home")
    cli.env.pop("PYTHONWARNINGS", None)
    target = f"{host.address}:{host.port}"
    run = cli("run", target, "-l", host.user, "-i", str(host.client_key), "--", "true")
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr  # nothing before the summary
    assert re.fullmatch(r"1 host\(s\): 1 ok \(job 1, [0-9.]+s\)", lines[0]), run.stderr


def test_the_filter_is_for_asyncssh_only() -> None:
    """The same warning raised by anything else still shows: only the known, harmless
    one is silenced."""
    probe = (
        "import warnings\n"
        "from cryptography.utils import CryptographyDeprecationWarning\n"
        "import provisor._asyncssh\n"
        "warnings.warn('from elsewhere', CryptographyDeprecationWarning)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "CryptographyDeprecationWarning: from elsewhere" in run.stderr
    assert "DSA" not in run.stderr
