"""Files a copy job sends through the server arrive as uploads (content, by id), never as
paths: sent, copied to a real host, kept to their tenant, bounded in size and name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
from served import Server

from provisor.services import hosts, importing, keys
from provisor.services.schemas import HostChanges, validate
from provisor.testing.pytest_plugin import Testbed

MIB = 1024 * 1024


def _host_with_stored_key(server: Server, testbed: Testbed, tenant: str) -> str:
    (host,) = testbed(1)
    owner = server.owner(tenant)
    importing.import_hosts(
        owner,
        f"[up]\n{host.name} ansible_host={host.address} ansible_port={host.port} "
        f"ansible_user={host.user}\n",
        source="up.ini",
    )
    if not any(k.name == "testbed" for k in keys.list_keys(owner)):
        keys.add_key(owner, "testbed", host.client_key.read_text())
    hosts.update_host(owner, host.name, validate(HostChanges, {"credentials": "key:testbed"}))
    return host.name


def _finished(api: httpx.Client, job_id: int) -> dict[str, object]:
    for _ in range(600):
        job: dict[str, object] = api.get(f"/jobs/{job_id}").json()
        if job["state"] == "done":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_an_upload_is_copied_to_a_host_by_its_id(server: Server, testbed: Testbed) -> None:
    host = _host_with_stored_key(server, testbed, "alpha")
    content = secrets.token_bytes(300_000)
    with server.client("operator") as api:
        made = api.post(
            "/uploads",
            params={"name": "payload.bin"},
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert made.status_code == 201, made.text
        upload = made.json()
        assert upload["size"] == len(content) and upload["name"] == "payload.bin"
        copy = {"kind": "copy", "target": host, "uploads": [upload["id"]], "destination": "/tmp"}
        job = _finished(api, api.post("/jobs", json=copy).json()["id"])
        assert job["summary"] == {"ok": 1}
        assert str(server.home) not in str(job["command"])  # no server path in the record
        assert "upload:payload.bin" in str(job["command"])
        check = {"kind": "run", "target": host, "command": "sha256sum /tmp/payload.bin"}
        ran = _finished(api, api.post("/jobs", json=check).json()["id"])
        digest = ran["results"][0]["stdout"].split()[0]  # type: ignore[index]
        assert digest == upload["sha256"]


def test_copy_through_the_server_from_the_cli_uploads_the_files(
    server: Server, testbed: Testbed, tmp_path: Path
) -> None:
    host = _host_with_stored_key(server, testbed, "alpha")
    local = tmp_path / "site.conf"
    local.write_text("listen 8080\n")
    env = {**os.environ, "PROVISOR_TOKEN": server.token("operator"), "PROVISOR_HOME": str(tmp_path)}

    def copy(source: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "provisor", "copy", host, str(source), "/tmp"]
        return subprocess.run(
            [*command, "--server", server.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    copied = copy(local)
    assert copied.returncode == 0, copied.stderr
    directory = copy(tmp_path)
    assert directory.returncode == 2 and "copy sends files" in directory.stderr
    huge = tmp_path / "huge.img"
    with huge.open("wb") as sparse:
        sparse.truncate(65 * MIB)  # refused before a byte is read or sent
    refused = copy(huge)
    assert refused.returncode == 2 and "at most" in refused.stderr, refused.stderr


def test_uploads_are_named_bounded_and_kept_to_their_tenant(server: Server) -> None:
    octets = {"Content-Type": "application/octet-stream"}
    with server.client("operator") as api:
        for name in ("../escape", "a/b", ".hidden", "-rf", "", "x" * 200):
            bad = api.post("/uploads", params={"name": name}, content=b"x", headers=octets)
            assert bad.status_code in (400, 422), (name, bad.text)
        big = api.post(
            "/uploads", params={"name": "big"}, content=b"\0" * (65 * MIB), headers=octets
        )
        assert big.status_code == 413
        mine = api.post("/uploads", params={"name": "mine"}, content=b"alpha's", headers=octets)
        assert mine.status_code == 201
    upload_id = mine.json()["id"]
    with server.client("admin", "beta") as beta:
        assert upload_id not in [u["id"] for u in beta.get("/uploads").json()]
        copy = {"kind": "copy", "target": "127.0.0.9", "uploads": [upload_id], "destination": "/"}
        assert beta.post("/jobs", json=copy).status_code == 404
        assert beta.delete(f"/uploads/{upload_id}").status_code == 404
    with server.client("operator") as api:
        assert api.delete(f"/uploads/{upload_id}").status_code == 204
        assert upload_id not in [u["id"] for u in api.get("/uploads").json()]
