"""The source tree of an earlier git revision, to measure beside the checkout's."""

from __future__ import annotations

import compileall
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export_revision(revision: str, into: Path) -> Path:
    """src/ of a git revision, byte-compiled as `make` compiles the checkout's."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "src"],
        capture_output=True,
        check=True,
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    compileall.compile_dir(into / "src", quiet=1)
    return into / "src"


def short_commit(revision: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True
    )
    return done.stdout.strip() or revision
