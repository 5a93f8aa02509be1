"""Secrets on real deployments (the local provider) and fleet jobs: a secret planted in a
deployment and a job surfaces nowhere provisor keeps or shows anything; a machine's
parameter token dies with its deployment; a secret input need not be on the command
line; and the data directory stays private throughout."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import secrets
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from provisor.core.masking import MASK
from provisor.orchestrator import secrets as sealing
from provisor.store import Store
from provisor.store.orchestration import Deployment
from provisor_cli import Provisor, open_to_others
from servers import start_server

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


@dataclass
class Surfaces:
    """Every place a secret could surface: the data directory's files (databases and
    their -wal files, reports, script logs, job output, worker.log; archives opened),
    and everything a command printed. Add a place with `add`; `hits` searches them all."""

    home: Path
    shown: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.shown.append((where, text))

    def cli(self, result: subprocess.CompletedProcess[str], where: str) -> None:
        self.add(f"{where} (stdout)", result.stdout)
        self.add(f"{where} (stderr)", result.stderr)

    def _files(self) -> Iterator[tuple[str, bytes]]:
        for path in sorted(self.home.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            yield str(path.relative_to(self.home)), data
            if path.name.endswith(".tar.gz"):
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                    for member in archive.getmembers():
                        content = archive.extractfile(member)
                        if content is not None:
                            yield f"{path.name}:{member.name}", content.read()
            elif path.suffix == ".gz":
                yield f"{path.name} (unpacked)", gzip.decompress(data)

    def hits(self, secret: str) -> list[str]:
        places = [where for where, data in self._files() if secret.encode() in data]
        return places + [where for where, text in self.shown if secret in text]


def _wait(condition: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not {condition} after {timeout}s"
        time.sleep(0.2)


def _worker_gone(home: Path) -> bool:
    """No process holds the worker lock (the background worker has exited)."""
    with (home / "worker.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


VAULT = """\
name: vault
version: '1'
parameters:
  token: {type: secret, min: 12}
  other: {type: secret}
nodes:
  a:
    image: debian-12
    publishes: [leaked]
    scripts:
      - |
        echo "token=$TOKEN other=$OTHER"
        echo "on stderr: $TOKEN" >&2
        provisor-param set leaked "$TOKEN"
        printf %s "$TOKEN$OTHER" | sha256sum
outputs:
  leaked: "{{ a.1.leaked }}"
"""

BROKEN = """\
name: broken
version: '1'
parameters:
  token: {type: secret}
nodes:
  b:
    image: debian-12
    scripts: ['echo "dying with $TOKEN" >&2; exit 3']
"""


def test_a_planted_secret_surfaces_nowhere(provisor: Provisor, tmp_path: Path) -> None:
    token, other, password = (secrets.token_urlsafe(18) for _ in range(3))  # 24 characters
    surfaces = Surfaces(provisor.home)
    surfaces.cli(provisor("hosts", "list"), "hosts list")
    assert open_to_others(provisor.home) == []  # after a first command
    (tmp_path / "vault.yaml").write_text(VAULT)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "token").write_text(token + "\n")
    # Without --wait: a background worker, with debug logs, writes worker.log.
    debug = {"PROVISOR_LOG_LEVEL": "debug"}
    up = provisor(
        "up", str(tmp_path / "vault.yaml"), "--param", f"token=@{tmp_path / 'token'}",
        "--param", "other=-",
        input=other + "\n", env=debug,
    )  # fmt: skip
    surfaces.cli(up, "up vault")
    # From the environment: the value reaches the script (its echo is masked below).
    failing = provisor(
        "up", str(tmp_path / "broken.yaml"), env={**debug, "PROVISOR_INPUT_TOKEN": token}
    )
    surfaces.cli(failing, "up broken")
    followed = provisor("status", "vault", "--wait")
    surfaces.cli(followed, "status vault --wait")
    surfaces.cli(provisor("status", "broken", "--wait", check=False), "status broken --wait")

    status = provisor.status("vault")
    assert status["state"] == "ready" and status["inputs"] == {"token": MASK, "other": MASK}
    assert status["outputs"] == {"leaked": MASK}  # a runtime parameter holding the secret
    broken = provisor("status", "broken", "--output", "json")
    surfaces.cli(broken, "status broken")
    assert f"dying with {MASK}" in json.loads(broken.stdout)["error"]
    params = provisor("params", "vault", "--output", "json")
    surfaces.cli(params, "params")
    values = {p["key"]: p["value"] for p in json.loads(params.stdout)["values"]}
    assert values["a.1.leaked"] == MASK
    # The machine got the values (their digest is no secret), and the report masks them.
    report = provisor.reports("vault") / "vault-a-1.tar.gz"
    with tarfile.open(report) as archive:
        member = archive.extractfile("vault-a-1/script-01.stdout")
        assert member is not None
        stdout = member.read().decode()
    digest = hashlib.sha256((token + other).encode()).hexdigest()
    assert stdout.startswith(f"token={MASK} other={MASK}\n") and digest in stdout

    # A job with a sudo password (-A): `cat` echoes the password sudo did not need, and
    # the machine's environment file holds the deployment's secrets.
    job = provisor.on_terminal(
        "run", "deployment:vault", "--sudo", "-A", "--output", "json", "--",
        "cat; cat /etc/provisor/env",
        typed=[password],
    )  # fmt: skip
    surfaces.add("run -A (terminal)", job.screen)
    surfaces.add("run -A (stdout)", job.stdout)
    surfaces.add("run -A (stderr)", job.stderr)
    assert job.returncode == 0, job.stderr
    shown = json.loads(job.stdout)["stdout"]
    assert shown.startswith(f"{MASK}\n") and f"TOKEN={MASK}" in shown and f"OTHER={MASK}" in shown
    for command in (
        ("jobs", "show", "1", "--output", "json"),
        ("jobs", "list"),
        ("events", "--limit", "1000", "--output", "json"),
        ("deployments", "list", "--output", "json"),
        ("status", "vault"),
        ("params", "vault"),
        ("deployments", "show", "vault"),
        ("deployments", "show", "broken", "--output", "json"),
    ):
        surfaces.cli(provisor(*command), " ".join(command))
    _wait("done", lambda: _worker_gone(provisor.home))  # worker.log is complete
    _through_the_api(provisor, surfaces)

    assert b"DEBUG:" in (provisor.home / "worker.log").read_bytes()  # it logged all it could
    assert list((provisor.home / "jobs" / "1").iterdir())
    for secret in (token, other, password):
        assert surfaces.hits(secret) == []
    assert surfaces.hits(digest)  # the search finds what is there
    assert open_to_others(provisor.home) == []  # after a deployment and a job


def _through_the_api(provisor: Provisor, surfaces: Surfaces) -> None:
    """Every answer a `provisor server` on the same data gives about the deployments and
    the job, to an admin of the tenant (report archives opened)."""
    provisor("users", "add", "auditor", "--tenant", "default", "--role", "admin")
    token = provisor("tokens", "add", "auditor").stdout.strip()
    with start_server(provisor.home) as (url, _):
        auth = {"Authorization": f"Bearer {token}"}
        for path in (
            "/deployments",
            "/deployments/vault",
            "/deployments/vault/detail",
            "/deployments/vault/parameters",
            "/deployments/vault/events",
            "/deployments/broken",
            "/deployments/broken/detail",
            "/deployments/broken/events",
            "/jobs",
            "/jobs/1",
            "/jobs/1/events",
            "/events?limit=10000",
        ):
            answer = httpx.get(f"{url}/api/v1{path}", headers=auth, timeout=60)
            assert answer.status_code == 200, (path, answer.text)
            surfaces.add(f"GET {path}", answer.text)
        remote = provisor(
            "deployments", "show", "vault", "--server", url, env={"PROVISOR_TOKEN": token}
        )  # the CLI through the server: the same detail
        assert "vault-a-1" in remote.stdout and MASK in remote.stdout
        surfaces.cli(remote, "deployments show --server")
        report = httpx.get(f"{url}/api/v1/deployments/vault/reports/vault-a-1", headers=auth)
        assert report.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(report.content), mode="r:gz") as archive:
            for member in archive.getmembers():
                content = archive.extractfile(member)
                if content is not None:
                    surfaces.add(f"GET report {member.name}", content.read().decode())


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
        _wait("the worker", lambda: lock.exists() and f'"pid": {worker.pid},' in lock.read_text())
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
        "up", str(tmp_path / "asked.yaml"), "--name", "inline", "--param", f"token={typed}"
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
