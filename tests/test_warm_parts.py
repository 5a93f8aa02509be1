"""The parts of the warm path that need no SSH host: the CLI's client path loads nothing
heavy, new host keys are saved in bulk (and one by one only on a conflict), asyncssh's
logging still logs what it should and formats nothing it drops."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cli_modules import modules_loaded
from provisor._asyncssh import asyncssh
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.fleet.transport import Endpoint
from provisor.services.context import Context
from provisor.store.models import KnownHostKey


@pytest.mark.parametrize("token", ["environment", "login"])
def test_run_through_a_server_loads_no_store_ssh_or_http_library(
    tmp_path: Path, token: str
) -> None:
    """The client of `run --server` sends the request and shows the results: the store,
    asyncssh, httpx and the server side stay unloaded, whether its token is in
    PROVISOR_TOKEN or looked for where `provisor login` keeps it (a server that refuses:
    the client's whole path up to the request is taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PROVISOR_TOKEN": "pvs_1_x"}
    if token == "login":
        env = {"PROVISOR_TOKEN": ""}  # none: looked for where `provisor login` keeps it
    done, names = modules_loaded(
        tmp_path / "home",
        *["run", "--server", f"http://127.0.0.1:{port}", "group:web", "--", "uptime"],
        env=env,
    )
    expected = "cannot reach provisor server" if token == "environment" else "no token for"
    assert f"{expected} http://127.0.0.1:{port}" in done.stderr, done.stderr
    loaded = {name.split(".")[0] for name in names}
    heavy = {"sqlalchemy", "asyncssh", "cryptography", "httpx", "httpcore", "fastapi"}
    assert loaded & (heavy | {"uvicorn", "starlette", "alembic", "dbos"}) == set()
    assert "provisor.services.jobs" not in names


@pytest.mark.parametrize("server", ["file:///etc/passwd", "127.0.0.1:8080", "ftp://x"])
def test_a_server_that_is_no_http_url_is_refused(tmp_path: Path, server: str) -> None:
    env = {**os.environ, "PROVISOR_HOME": str(tmp_path), "PROVISOR_TOKEN": "pvs_1_x"}
    done = subprocess.run(
        [sys.executable, "-m", "provisor", "run", "--server", server, "x", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "an http:// or https:// URL" in done.stderr and "root:" not in done.stdout


def test_a_redirect_is_not_followed_and_the_token_stays_home(tmp_path: Path) -> None:
    """A server answering the job with a redirect gets an error said, not the token sent
    on to where it points."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(f"{self.path} {self.headers.get('Authorization')}")
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as redirecting:
        threading.Thread(target=redirecting.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{redirecting.server_port}"
        env = {**os.environ, "PROVISOR_HOME": str(tmp_path), "PROVISOR_TOKEN": "pvs_1_x"}
        done = subprocess.run(
            [sys.executable, "-m", "provisor", "run", "--server", url, "x", "--", "true"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        redirecting.shutdown()
    assert done.returncode == 1 and f"server {url} answered 307" in done.stderr, done.stderr
    assert asked == ["/api/v1/jobs/stream Bearer pvs_1_x"]


def _endpoint(i: int) -> Endpoint:
    return Endpoint(f"h{i}", f"127.0.9.{i}")


def _saved(ctx: Context) -> dict[str, str]:
    with ctx.store.session() as session:
        rows = session.query(KnownHostKey.subject, KnownHostKey.key).all()
    return dict(rows)


def test_new_host_keys_are_saved_together_and_a_conflict_loses_none(ctx: Context) -> None:
    """Two processes trust hosts on first use at once: the first saves all of its keys;
    the second, whose keys include one the first saved meanwhile, saves the others and
    keeps the key saved first."""
    first = DatabaseHostKeys(ctx.store, ctx.tenant_id())
    second = DatabaseHostKeys(ctx.store, ctx.tenant_id())
    for i in (1, 2, 3):
        first.remember(_endpoint(i), f"ssh-ed25519 FIRST{i}")
    for i in (3, 4, 5):
        second.remember(_endpoint(i), f"ssh-ed25519 SECOND{i}")
    assert first.flush() == 3
    assert second.flush() == 2
    saved = _saved(ctx)
    assert saved == {
        **{_endpoint(i).trusts: f"ssh-ed25519 FIRST{i}" for i in (1, 2, 3)},
        **{_endpoint(i).trusts: f"ssh-ed25519 SECOND{i}" for i in (4, 5)},
    }
    assert first.flush() == 0  # nothing new since


class _Loud:
    def __str__(self) -> str:
        raise AssertionError("formatted although nothing is logged")


def test_asyncssh_logs_what_is_kept_and_formats_nothing_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = asyncssh.logging.logger.get_child("test", "ctx")
    with caplog.at_level(logging.WARNING, logger="asyncssh"):
        logger.info("dropped %s", [_Loud()])  # a list argument: asyncssh formats its items
        logger.debug1("dropped %s", [_Loud()])
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger="asyncssh"):
        logger.info("kept %s and %s", [b"one", "two"], ("host", 22))
    (record,) = caplog.records
    assert record.getMessage() == "[ctx] kept one,two and host, port 22"


def test_standard_input_through_a_server_is_text(tmp_path: Path) -> None:
    """JSON carries text: a --stdin file that is not UTF-8 is refused before any request."""
    binary = tmp_path / "blob"
    binary.write_bytes(b"\xff\xfe\x00binary")
    env = {**os.environ, "PROVISOR_HOME": str(tmp_path), "PROVISOR_TOKEN": "pvs_1_x"}
    done = subprocess.run(
        [
            *[sys.executable, "-m", "provisor", "run", "--server", "http://127.0.0.1:9"],
            *["--stdin", str(binary), "x", "--", "cat"],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "stdin: through a server, --stdin must be UTF-8 text" in done.stderr, done.stderr
