"""Write docs/cli.md (or the path given) from the CLI itself: typer's reference, with
the HTML entities it writes for quotes and `<=` turned back into text (they show as
`&#x27;` in plain-text readers); an entity that would otherwise open an HTML tag in
Markdown (`&lt;host&gt;`) stays.

    python scripts/cli_docs.py [OUTPUT]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PLAIN = {"&#x27;": "'", "&quot;": '"'}


def readable(text: str) -> str:
    for entity, plain in _PLAIN.items():
        text = text.replace(entity, plain)
    return re.sub(r"&lt;(?=[=\d ])", "<", text)  # `1<=x`, `< 5`: no tag can start so


def generate(output: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "cli.md"
        subprocess.run(
            [
                sys.executable, "-m", "typer", "provisor.cli", "utils", "docs",
                "--name", "provisor", "--title", "provisor CLI reference", "--output", str(raw),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        output.write_text(readable(raw.read_text()))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "cli.md")
