"""A real `provisor server` for a test: uvicorn on a free port of 127.0.0.1, with a data
directory of its own (or a test's), stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def start_server(
    home: Path,
    *args: str,
    scheme: str = "http",
    ca: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`provisor server` on a free port of 127.0.0.1, with a data directory of its own;
    (its URL, its process) once it answers, stopped afterwards. `log`: a file that gets
    the server's output (its access log among it), read as the test goes."""
    port = _free_port()
    env = {
        **os.environ,
        "PROVISOR_HOME": str(home),
        "PROVISOR_LOCAL_NETWORK": "127.141.0.0/16",
        **(env or {}),
    }
    for variable in ("PROVISOR_DATABASE_URL", "PROVISOR_TOKEN", "PROVISOR_ALLOWED_HOSTS"):
        env.pop(variable, None)
    output = log.open("ab") if log is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "provisor", "server", "--port", str(port), *args],
        env=env,
        stdout=output or subprocess.DEVNULL,  # uvicorn's access log goes to stdout
        stderr=output or subprocess.PIPE,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            # `ca` may be one the server makes as it starts: trusted once it is there.
            ready = ca is None or ca.exists()
            trust = ssl.create_default_context(cafile=str(ca)) if ca and ready else True
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{url}/api/v1/health", timeout=2, verify=trust)
                if ready and answer.is_success:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                stderr = log.read_text() if log is not None else stderr
                raise RuntimeError(f"the server did not start: {stderr[-2000:]}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        if output is not None:
            output.close()
        # A background worker the server started (for a lease, a schedule, checks) would
        # outlive the test: it stays while such a deployment is there.
        subprocess.run(
            [sys.executable, "-m", "provisor", "worker", "stop"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )


@contextlib.contextmanager
def served_cli(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A real `provisor server` with a data directory of its own, and the CLI of another
    home acting through it (`--server` from the environment) as an admin; (URL, CLI)."""
    from provisor_cli import Provisor

    home = tmp_path / "server-home"
    owner = Provisor(home)
    owner("users", "add", "boss", "--tenant", "default", "--role", "admin")
    token = owner("tokens", "add", "boss").stdout.strip()
    remote = Provisor(tmp_path / "client-home")
    remote.env["PROVISOR_TOKEN"] = token
    try:
        network = {"PROVISOR_LOCAL_NETWORK": owner.env["PROVISOR_LOCAL_NETWORK"]}
        with start_server(home, env=network) as (url, _):
            remote.env["PROVISOR_SERVER"] = url
            yield url, remote
    finally:
        owner("worker", "stop", check=False)  # the one the server started
