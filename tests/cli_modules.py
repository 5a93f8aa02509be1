"""The modules a real `provisor` process loaded: what the start-up tests guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# Runs `provisor ARGS` as the entry point does, writes the loaded modules' names, and ends
# with the command's exit status.
_PROGRAM = """
import json, sys
report, *args = sys.argv[1:]
sys.argv = ["provisor", *args]
status = 0
try:
    from provisor.cli import main
    main()
except SystemExit as exit:
    status = exit.code
finally:
    with open(report, "w") as out:
        json.dump(sorted(sys.modules), out)
sys.exit(status)
"""


def modules_loaded(
    home: Path, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`provisor ARGS` run in a fresh process with PROVISOR_HOME=home (the store's default
    place), and every module it imported by the time it ended."""
    report = home.parent / "modules.json"
    environment = {**os.environ, "PROVISOR_HOME": str(home), "COLUMNS": "120", **(env or {})}
    environment.pop("PROVISOR_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(report), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    return done, json.loads(report.read_text())
