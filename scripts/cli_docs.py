"""Write docs/cli.md (or the path given) from the CLI itself: typer's reference.

typer copies the help texts as written (the root's help is plain, not rich): rich's
escape of a bracket (`NAME\\[@VERSION]`, which a command's rich help needs) is turned
back into the bracket, and a `<` that would open an HTML tag in Markdown
(`LOCAL_DIR/<host>/`) is written `&lt;` outside code.

    python scripts/cli_docs.py [OUTPUT]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CODE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)  # fenced blocks and code spans
_TAG_OPENING = re.compile(r"<(?=[A-Za-z/!?])")


def readable(text: str) -> str:
    text = text.replace("\\[", "[")
    parts, end = [], 0
    for code in _CODE.finditer(text):
        parts += [_TAG_OPENING.sub("&lt;", text[end : code.start()]), code.group()]
        end = code.end()
    return "".join([*parts, _TAG_OPENING.sub("&lt;", text[end:])])


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
