"""The CLI reference in docs/ is generated from the CLI and must match it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current(tmp_path: Path) -> None:
    generated = tmp_path / "cli.md"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_docs.py"), str(generated)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    current = (ROOT / "docs" / "cli.md").read_text()
    assert generated.read_text() == current, "docs/cli.md is stale: run `make docs`"
    assert "&#x27;" not in current and "&quot;" not in current  # readable as plain text
