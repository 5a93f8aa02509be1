"""The CLI run as a user runs it: a real `provisor` process in a private PROVISOR_HOME."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import sqlite3
import stat
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from provisor.providers.local import LocalProvider
from provisor.testing.blocks import claim_test_block


class Provisor:
    """The CLI in a private PROVISOR_HOME with its own loopback block for machines."""

    program: tuple[str, ...] = ("-m", "provisor")  # what sys.executable runs

    def __init__(self, home: Path) -> None:
        self.home = home
        # Held as long as this object: no testbed, provider test or other CLI of any
        # concurrent session gets the same block (a random one once collided).
        block, self._block_lock = claim_test_block(range(101, 200))
        self.env = {
            **os.environ,
            "PROVISOR_HOME": str(home),
            "PROVISOR_LOCAL_NETWORK": f"127.{block}.0.0/16",
            "COLUMNS": "200",
        }
        self.env.pop("PROVISOR_DATABASE_URL", None)

    def __call__(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: int = 400,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, *self.program, *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        assert "Traceback" not in result.stderr, result.stderr
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    def command(self, *args: str) -> list[str]:
        """The command line of `provisor ARGS` (for a test that starts it its own way)."""
        return [sys.executable, *self.program, *args]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """The CLI started in the background, its output piped."""
        return subprocess.Popen(
            [sys.executable, *self.program, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def status(self, name: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(self("status", name, "--output", "json").stdout)
        return data

    def machines_of(self, instance: str) -> list[dict[str, str]]:
        """What the provider itself has for the deployment instance (not what provisor
        recorded): its machines are tagged with it."""
        provider = LocalProvider(
            self.home / "local-provider", network=self.env["PROVISOR_LOCAL_NETWORK"]
        )
        found = asyncio.run(provider.describe(tags={"provisor:deployment": instance}))
        return [{"id": m.id, "state": m.state.value, "name": m.name} for m in found]

    def instance(self, name: str) -> str:
        """The instance of the deployment `name` (the one there is now)."""
        with sqlite3.connect(self.home / "provisor.db") as db:
            row = db.execute("SELECT instance FROM deployments WHERE name = ?", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    def host_keys(self) -> list[tuple[str, int | None, str]]:
        """(subject, host id, key type and blob) of every key the tenant trusts."""
        with sqlite3.connect(self.home / "provisor.db") as db:
            rows = db.execute("SELECT subject, host_id, key FROM known_host_keys").fetchall()
        return sorted((subject, host, " ".join(key.split()[:2])) for subject, host, key in rows)

    def reports(self, name: str) -> Path:
        """Where the deployment `name` (the one there is now) keeps its reports."""
        with sqlite3.connect(self.home / "provisor.db") as db:
            row = db.execute("SELECT instance FROM deployments WHERE name = ?", (name,)).fetchone()
        assert row is not None
        return self.home / "deployments" / f"{name}.{row[0]}" / "reports"

    def deployment_id(self, name: str) -> int:
        with sqlite3.connect(self.home / "provisor.db") as db:
            row = db.execute("SELECT id FROM deployments WHERE name = ?", (name,)).fetchone()
        assert row is not None
        return int(row[0])

    def on_terminal(self, *args: str, typed: list[str], timeout: float = 400) -> Terminal:
        """The CLI with a terminal (a pty, its controlling terminal) as standard input,
        typing each of `typed` when it prompts; standard output and error are piped."""
        primary, secondary = os.openpty()
        process = subprocess.Popen(
            [sys.executable, *self.program, *args],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,  # then the pty becomes its controlling terminal:
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(secondary)
        screen = b""
        deadline = time.monotonic() + timeout
        try:
            for answer in typed:
                while not screen.rstrip().endswith(b":"):  # a prompt
                    assert time.monotonic() < deadline, f"no prompt: {screen!r}"
                    if select.select([primary], [], [], 1.0)[0]:
                        screen += os.read(primary, 4096)
                os.write(primary, answer.encode() + b"\n")
                screen += b"\n"  # the next prompt follows this one
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            while select.select([primary], [], [], 0.2)[0]:
                try:
                    screen += os.read(primary, 4096)
                except OSError:  # the other side is closed
                    break
        finally:
            os.close(primary)
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "Traceback" not in stderr, stderr
        return Terminal(process.returncode, screen.decode(errors="replace"), stdout, stderr)


@dataclass
class Terminal:
    """What a command run on a terminal did: exit status, the terminal, stdout, stderr."""

    returncode: int
    screen: str
    stdout: str
    stderr: str


def open_to_others(home: Path) -> list[str]:
    """Everything in `home` (itself included) that is not exactly 0700 (a directory) or
    0600 (a file): provisor keeps its files to its user."""
    wrong = []
    for path in [home, *sorted(home.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{path.relative_to(home.parent)} {mode:04o}")
    return wrong
