"""Nothing an API request sends is resolved as a path on the server, and no error echoes a
file: every field that once took a path, tried with /etc/passwd, a file holding a marker,
`../`, and a symlink to them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import Server

from db_rows import add_deployment

PASSWD = "root:x:0:0"


@pytest.fixture(scope="module")
def planted(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Paths on the server a caller might try: a file with a marker line, /etc/passwd, a
    symlink to each, and a relative climb."""
    directory = tmp_path_factory.mktemp("planted")
    marker = f"marker-{secrets.token_hex(8)}"
    secret_file = directory / "secret.txt"
    secret_file.write_text(f"{marker} 127.0.0.1\n{marker}-2\n")
    (directory / "to-secret").symlink_to(secret_file)
    (directory / "to-passwd").symlink_to("/etc/passwd")
    server.marker = marker  # type: ignore[attr-defined]
    yield [
        "/etc/passwd",
        str(secret_file),
        str(directory / "to-secret"),
        str(directory / "to-passwd"),
        "../../../../etc/passwd",
        f"{directory}/../{directory.name}/secret.txt",
    ]


def _clean(server: Server, text: str) -> None:
    assert PASSWD not in text and server.marker not in text  # type: ignore[attr-defined]


def test_job_fields_that_named_server_files_are_refused(server: Server, planted: list[str]) -> None:
    with server.client("operator") as api:
        assert api.post("/hosts", json={"name": "p-web", "address": "127.0.0.9"}).is_success
        for path in planted:
            attempts = [
                {"kind": "run", "target": f"@{path}", "command": "true"},
                {"kind": "run", "target": "p-web", "command": "true", "identity": path},
                {"kind": "copy", "target": "p-web", "sources": [path], "destination": "/tmp"},
                {"kind": "fetch", "target": "p-web", "sources": [path], "destination": path},
            ]
            for body in attempts:
                answer = api.post("/jobs", json=body)
                assert answer.status_code == 400, (body, answer.text)
                _clean(server, answer.text)
        assert api.get("/jobs").json() == []  # nothing ran


def test_host_credentials_may_not_name_a_server_file_or_agent(
    server: Server, planted: list[str]
) -> None:
    with server.client("operator") as api:
        for credentials in [*(f"key:{p}" for p in planted), "agent"]:
            made = api.post(
                "/hosts", json={"name": "c-web", "address": "127.0.0.9", "credentials": credentials}
            )
            assert made.status_code == 400 and made.json()["error"]["field"] == "credentials"
            _clean(server, made.text)
            assert api.post("/hosts", json={"name": "c-web", "address": "127.0.0.9"}).is_success
            changed = api.patch("/hosts/c-web", json={"credentials": credentials})
            assert changed.status_code == 400
            assert api.delete("/hosts/c-web").status_code == 204
            if credentials.startswith("key:"):  # an inventory names a key by its file
                key_file = credentials.removeprefix("key:")
                inventory = f"[g]\nc-web ansible_ssh_private_key_file={key_file}\n"
                imported = api.post("/hosts/import", json={"text": inventory, "source": "i.ini"})
                assert imported.status_code == 400 and "i.ini:2" in imported.text
                _clean(server, imported.text)
        assert api.get("/hosts/c-web").status_code == 404  # nothing half-applied


def test_stored_keys_take_content_not_paths(server: Server, planted: list[str]) -> None:
    with server.client("operator") as api:
        for path in planted:
            as_name = api.post("/keys", json={"name": path, "private_key": "x"})
            assert as_name.status_code == 400
            content = Path(path).read_text() if Path(path).exists() else path
            as_key = api.post("/keys", json={"name": "k", "private_key": content})
            assert as_key.status_code == 400 and as_key.json()["error"]["field"] == "private_key"
            _clean(server, as_name.text + as_key.text)


def test_report_machines_are_names_not_paths(server: Server, planted: list[str]) -> None:
    add_deployment(server.store, "r-dep", tenant="alpha", machines=[("web", 1)])
    with server.client("operator") as api:
        for path in planted:
            quoted = path.replace("/", "%2F")
            answer = api.get(f"/deployments/r-dep/reports/{quoted}")
            assert answer.status_code == 404, (path, answer.text)
            _clean(server, answer.text)
