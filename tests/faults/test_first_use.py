"""The first use of a data directory by several processes at once: every one succeeds.

Each process finds an empty PROVISOR_HOME and must create the directory, its keys, the
database and its schema; the migrations run under a lock, the keys are created once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from provisor.store.db import head_revision

# Commands that open the store (and its keys) the first time they run.
_COMMANDS = [
    ("hosts", "add", "web01", "--address", "127.0.0.1"),
    ("hosts", "list"),
    ("groups", "list"),
    ("jobs", "list"),
    ("events",),
    ("deployments", "list"),
    ("blueprints", "list"),
    ("providers", "list"),
]


def test_eight_processes_on_an_empty_data_directory_all_succeed(tmp_path: Path) -> None:
    home = tmp_path / "home"  # does not exist yet: the first one to come makes it
    env = {**os.environ, "PROVISOR_HOME": str(home)}
    env.pop("PROVISOR_DATABASE_URL", None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "provisor", *command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in _COMMANDS
    ]
    failures = []
    for command, process in zip(_COMMANDS, processes, strict=True):
        out, err = process.communicate(timeout=300)
        if process.returncode != 0 or "Traceback" in err:
            failures.append(f"{' '.join(command)} -> {process.returncode}\n{out}\n{err}")
    assert not failures, "\n".join(failures)

    with sqlite3.connect(home / "provisor.db") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        (hosts,) = db.execute("SELECT count(*) FROM hosts WHERE name = 'web01'").fetchone()
    assert revision == head_revision()
    assert hosts == 1
    assert os.stat(home).st_mode & 0o777 == 0o700
