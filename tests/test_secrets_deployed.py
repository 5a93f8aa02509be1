"""Secrets on real deployments (the local provider): a machine's parameter token dies
with its deployment, and a secret input need not be on the command line."""

from __future__ import annotations

import json
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from provisor.orchestrator import secrets as sealing
from provisor.store import Store
from provisor.store.orchestration import Deployment
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def _wait(condition: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not {condition} after {timeout}s"
        time.sleep(0.2)


TINY = """\
name: tiny
version: '1'
nodes:
  a:
    image: debian-12
    scripts: ['true']
"""


def _token(provisor: Provisor, deployment: str) -> tuple[str, str]:
    """The parameter endpoint's URL and the token, as the machine has them."""
    shown = provisor(
        "run", f"deployment:{deployment}", "--output", "json", "--", "cat /etc/provisor/param.env"
    )
    lines = json.loads(shown.stdout)["stdout"].splitlines()
    settings = dict(line.split("=", 1) for line in lines)
    return settings["PROVISOR_PARAM_URL"], settings["PROVISOR_PARAM_TOKEN"]


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{url}/get?key=a.1.hostname", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_machine_token_dies_with_its_deployment(provisor: Provisor, tmp_path: Path) -> None:
    """One worker throughout. The token of a removed deployment is refused, and stays
    refused when a new deployment of the same name (SQLite may even give it the same
    row id) is up."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    worker = provisor.popen("worker")
    try:
        lock = provisor.home / "worker.lock"
        _wait("the worker", lambda: lock.exists() and lock.read_text().strip() == str(worker.pid))
        provisor("up", str(tmp_path / "tiny.yaml"))
        provisor("status", "tiny", "--wait")
        url, old = _token(provisor, "tiny")
        assert _get(url, old) == 200
        provisor("down", "tiny")
        assert _get(url, old) == 401
        provisor("up", str(tmp_path / "tiny.yaml"))
        provisor("status", "tiny", "--wait")
        url_now, new = _token(provisor, "tiny")
        assert url_now == url  # the same worker's endpoint
        assert new.split(".")[0] != old.split(".")[0]  # another instance
        assert _get(url, new) == 200
        assert _get(url, old) == 401
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


APPROVAL = """\
name: asked
version: '1'
approval: required
parameters:
  token: {type: secret, min: 12}
  greeting: {type: string, default: hi}
nodes:
  a:
    image: debian-12
"""


def test_a_missing_secret_is_asked_for_without_echo(provisor: Provisor, tmp_path: Path) -> None:
    typed = secrets.token_urlsafe(18)
    (tmp_path / "asked.yaml").write_text(APPROVAL)
    refused = provisor("up", str(tmp_path / "asked.yaml"), check=False)  # no terminal
    assert refused.returncode == 2 and "missing required parameter 'token'" in refused.stderr
    asked = provisor.on_terminal("up", str(tmp_path / "asked.yaml"), typed=[typed])
    assert asked.returncode == 0, asked.stderr
    assert "token (secret, not shown): " in asked.screen and typed not in asked.screen
    inline = provisor(
        "up", str(tmp_path / "asked.yaml"), "--name", "inline", "-p", f"token={typed}"
    )
    assert "visible to other users (ps)" in inline.stderr and typed not in inline.stderr
    store = Store(f"sqlite:///{provisor.home / 'provisor.db'}")
    try:
        with store.session() as session:
            sealed = session.scalars(select(Deployment.inputs).order_by(Deployment.id)).all()
    finally:
        store.close()
    assert [sealing.unseal(provisor.home, s["token"]) for s in sealed] == [typed, typed]
    for name in ("asked", "inline"):
        waiting = lambda n=name: provisor.status(n)["state"] == "awaiting_approval"  # noqa: E731
        _wait("awaiting approval", waiting)
        provisor("reject", name, "--reason", "a test")
