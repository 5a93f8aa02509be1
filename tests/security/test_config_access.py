"""Configuration changes over the API against a real server and real testbed hosts: the
happy path (plan, apply, check, rollback, history, set-password), another tenant's
applies and hosts are not found, each role may do what core/access.py says, and hostile
change sets and bodies are refused saying where, before any job."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from served import Server
from sqlalchemy import func, select

from provisor import machines
from provisor.machines import SandboxHost
from provisor.services import hosts as host_service
from provisor.services import importing, keys
from provisor.services.schemas import HostChanges, validate
from provisor.store.models import Job
from provisor.testing.pytest_plugin import Testbed
from test_fleet import inventory

pytestmark = [pytest.mark.testbed]

CHANGE = (
    "name: motd\nresources:\n  - type: file\n    path: /etc/motd-api\n"
    '    content: "managed\\n"\n    mode: "0644"\n'
)


@pytest.fixture(scope="module")
def host(module_testbed: Testbed, server: Server) -> SandboxHost:
    """One testbed host in tenant alpha's inventory, logging in with a stored key."""
    (found,) = module_testbed(1)
    ctx = server.owner("alpha")
    importing.import_hosts(ctx, inventory([found], "cfg"), source="cfg.ini")
    keys.add_key(ctx, "cfg-testbed", found.client_key.read_text())
    host_service.update_host(
        ctx, found.name, validate(HostChanges, {"credentials": "key:cfg-testbed"})
    )
    return found


def _jobs(server: Server) -> int:
    with server.store.session() as session:
        return int(session.scalar(select(func.count(Job.id))) or 0)


def _finished(api: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it is done, with its results."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found: dict[str, Any] = api.get(f"/jobs/{job['id']}").json()
        if found["state"] != "running":
            return found
        time.sleep(0.2)
    raise AssertionError(f"job {job['id']} still running")


def test_plan_apply_check_rollback_and_history_over_the_api(
    server: Server, host: SandboxHost
) -> None:
    with server.client("operator") as api:
        planned = api.post("/config/plan", json={"change_set": CHANGE, "target": host.name})
        assert planned.status_code == 202, planned.text
        plan = _finished(api, planned.json())
        (result,) = plan["results"]
        assert result["outcome"] == "ok" and result["details"]["changes"] == 1
        assert "+managed" in result["stdout"]
        assert not machines.host_file(host, "/etc/motd-api").exists()

        applied = _finished(
            api, api.post("/config/apply", json={"change_set": CHANGE, "target": host.name}).json()
        )
        assert applied["kind"] == "config-apply" and applied["summary"] == {"ok": 1}
        assert machines.host_file(host, "/etc/motd-api").read_text() == "managed\n"
        check = _finished(
            api, api.post("/config/check", json={"change_set": CHANGE, "target": host.name}).json()
        )
        assert check["results"][0]["details"]["changes"] == 0

        back = api.post(f"/config/applies/{applied['id']}/rollback", json={})
        assert back.status_code == 202, back.text
        assert _finished(api, back.json())["summary"] == {"ok": 1}
        assert not machines.host_file(host, "/etc/motd-api").exists()
        history = api.get(f"/config/history/{host.name}").json()
        assert [h["kind"] for h in history[:3]] == [
            "config-rollback",
            "config-check",
            "config-apply",
        ]


def test_another_tenant_finds_neither_the_apply_nor_the_host(
    server: Server, host: SandboxHost
) -> None:
    with server.client("admin", "alpha") as alpha:
        applied = _finished(
            alpha,
            alpha.post("/config/apply", json={"change_set": CHANGE, "target": host.name}).json(),
        )
    before = _jobs(server)
    with server.client("admin", "beta") as beta:
        answer = beta.post(f"/config/applies/{applied['id']}/rollback", json={})
        assert answer.status_code == 404, answer.text
        assert beta.get(f"/config/history/{host.name}").json() == []
        for path in ("/config/plan", "/config/apply"):
            answer = beta.post(path, json={"change_set": CHANGE, "target": host.name})
            assert answer.status_code in (400, 404), answer.text
            assert host.name in answer.text
        answer = beta.post("/config/set-password", json={"user": "root", "target": host.name})
        assert answer.status_code in (400, 404), answer.text
        assert (
            beta.get(f"/config/passwords/{host.name}", params={"user": "root"}).status_code == 404
        )
    assert _jobs(server) == before  # nothing ran
    assert machines.host_file(host, "/etc/motd-api").read_text() == "managed\n"
    with server.client("admin", "alpha") as alpha:
        _finished(alpha, alpha.post(f"/config/applies/{applied['id']}/rollback", json={}).json())


@pytest.mark.parametrize("user", ["-rf", "a b", "x;id", "root:0", "$(id)", "é" * 3])
def test_set_password_refuses_a_user_name_no_host_has(
    server: Server, host: SandboxHost, user: str
) -> None:
    before = _jobs(server)
    with server.client("admin") as api:
        answer = api.post("/config/set-password", json={"user": user, "target": host.name})
    assert answer.status_code == 400, answer.text
    assert "name" in answer.json()["error"]["message"].lower() or "name" in answer.text
    assert _jobs(server) == before


def test_what_each_role_may_do(server: Server, host: SandboxHost) -> None:
    body = {"change_set": CHANGE, "target": host.name}
    refused = [
        ("requester", "/config/plan", body),
        ("approver", "/config/check", body),
        ("auditor", "/config/apply", body),
        ("auditor", "/config/set-password", {"user": "root", "target": host.name}),
        ("auditor", "/config/applies/1/rollback", {}),
        ("requester", "/config/applies/1/rollback", {}),
    ]
    before = _jobs(server)
    for role, path, data in refused:
        with server.client(role) as api:
            answer = api.post(path, json=data)
        assert answer.status_code == 403, (role, path, answer.text)
    with server.client("operator") as api:
        answer = api.get(f"/config/passwords/{host.name}", params={"user": "root"})
        assert answer.status_code == 403, answer.text  # reading passwords: admins only
    with server.client(None) as anonymous:
        assert anonymous.post("/config/plan", json=body).status_code == 401
        assert anonymous.get(f"/config/history/{host.name}").status_code == 401
    assert _jobs(server) == before
    with server.client("auditor") as api:  # compliance: an auditor may check for drift
        answer = api.post("/config/check", json=body)
        assert answer.status_code == 202, answer.text
        _finished(api, answer.json())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"change_set": "resources: [", "target": "x"}, "line"),
        ({"change_set": "resources:\n  - type: file\n    path: etc\n", "target": "x"}, "path"),
        ({"change_set": CHANGE, "target": "x", "identity": "/root/.ssh/id_ed25519"}, "identity"),
        ({"change_set": CHANGE, "target": "x", "batch": "lots"}, "batch"),
        ({"change_set": CHANGE, "target": "x", "max_failures": "150%"}, "max_failures"),
        ({"change_set": CHANGE, "target": ""}, "target"),
        ({"change_set": "x" * 2_000_001, "target": "x"}, "request body is over"),
        ({"change_set": CHANGE, "target": "x", "parallel": 0}, "parallel"),
        (
            {
                "change_set": "resources:\n  - type: file\n    path: /etc/x\n"
                "    template: \"{{ ''.__class__.__mro__ }}\"\n",
                "target": "HOST",
            },
            "unsafe",
        ),
        (
            {
                "change_set": "resources:\n  - type: line\n    path: /etc/x\n    line: a\n"
                "    regexp: '(a'\n",
                "target": "x",
            },
            "regexp",
        ),
    ],
)
def test_hostile_bodies_are_refused_saying_where_before_any_job(
    server: Server, host: SandboxHost, body: dict[str, Any], words: str
) -> None:
    body = {k: (host.name if v == "HOST" else v) for k, v in body.items()}
    before = _jobs(server)
    with server.client("admin") as api:
        answer = api.post("/config/apply", json=body)
    assert answer.status_code in (400, 404, 413, 422), answer.text
    assert words in json.dumps(answer.json()).lower(), answer.text[:600]
    assert _jobs(server) == before
    assert not machines.host_file(host, "/etc/x").exists()
