"""`POST /hosts/gather` and `GET /hosts?target=` against a real server and a real testbed
host: the happy path, another tenant's hosts are not gathered (not found, nothing runs,
nothing changes), each role may do what core/access.py says, and hostile bodies are
refused saying where, before any job."""

from __future__ import annotations

import pytest
from served import Server
from sqlalchemy import func, select

from provisor.machines import SandboxHost
from provisor.services import hosts as host_service
from provisor.services import importing, keys
from provisor.services.events import list_events
from provisor.services.schemas import HostChanges, validate
from provisor.store.models import Job
from provisor.testing.pytest_plugin import Testbed
from test_fleet import inventory

pytestmark = [pytest.mark.testbed]


@pytest.fixture(scope="module")
def host(module_testbed: Testbed, server: Server) -> SandboxHost:
    """One testbed host in tenant alpha's inventory (group ga-tb), with a stored key."""
    (found,) = module_testbed(1)
    ctx = server.owner("alpha")
    importing.import_hosts(ctx, inventory([found], "ga-tb"), source="ga.ini")
    keys.add_key(ctx, "ga-testbed", found.client_key.read_text())
    host_service.update_host(
        ctx, found.name, validate(HostChanges, {"credentials": "key:ga-testbed"})
    )
    return found


def _jobs(server: Server) -> int:
    with server.store.session() as session:
        return int(session.scalar(select(func.count(Job.id))) or 0)


def test_gather_over_the_api_and_not_across_tenants(server: Server, host: SandboxHost) -> None:
    with server.client("operator") as api:
        answer = api.post("/hosts/gather", json={"target": "group:ga-tb", "timeout": 30})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["job"]["kind"] == "gather" and report["failed"] == {}
        assert report["gathered"][host.name]["cpu"]["count"] >= 1
        shown = api.get(f"/hosts/{host.name}").json()
        assert shown["facts"]["gathered"]["job"] == report["job"]["id"]
        selected = api.get("/hosts", params={"target": "group:ga-tb"})
        assert [h["name"] for h in selected.json()] == [host.name]
    before = _jobs(server)
    with server.client("admin", "beta") as beta:
        for body, words in (
            ({"target": host.name}, f"no host named {host.name}"),
            ({"target": "group:ga-tb"}, "no group named 'ga-tb'"),
            ({"target": host.address}, f"no host has the address {host.address}"),
        ):
            refused = beta.post("/hosts/gather", json=body)
            assert refused.status_code in (400, 404), refused.text
            assert words in refused.text
        assert beta.get("/hosts", params={"target": "group:ga-tb"}).status_code == 404
        assert beta.get("/hosts").json() == []
    assert _jobs(server) == before  # nothing ran
    with server.client("auditor") as api:
        after = api.get(f"/hosts/{host.name}").json()["facts"]
    assert after == shown["facts"]  # alpha's host is as its own gather left it
    events = list_events(server.owner(), kinds=["hosts.gathered"], limit=100)
    assert [(e.outcome, e.details["hosts"]) for e in events] == [("ok", 1)]


def test_what_each_role_may_do_with_gather(server: Server) -> None:
    with server.client("admin") as admin:
        added = admin.post("/hosts", json={"name": "ga-down", "address": "127.0.0.1", "port": 9})
        assert added.status_code == 201, added.text
    for role in ("auditor", "requester", "approver"):
        with server.client(role) as api:
            answer = api.post("/hosts/gather", json={"target": "ga-down"})
        assert answer.status_code == 403, (role, answer.text)
    with server.client(None) as anonymous:
        assert anonymous.post("/hosts/gather", json={"target": "ga-down"}).status_code == 401
        assert anonymous.get("/hosts", params={"target": "ga-down"}).status_code == 401
    with server.client("operator") as api:
        answer = api.post("/hosts/gather", json={"target": "ga-down", "connect_timeout": 5})
        assert answer.status_code == 200, answer.text
        assert answer.json()["failed"].keys() == {"ga-down"}  # reported, not an error
        assert api.get("/hosts/ga-down").json()["facts"] == {}
    denied = list_events(server.owner(), kinds=["access.denied"], limit=10000)
    assert any(e.actor == "auditor-alpha" and "inventory.write" in str(e.details) for e in denied)


def test_hostile_gather_input_is_refused_saying_where(server: Server) -> None:
    before = _jobs(server)
    with server.client("admin") as api:
        cases = [
            ({"target": "@/etc/passwd"}, 400, "a target file (@FILE) is read on the computer"),
            ({"target": "root@127.0.0.1:9"}, 400, "not in the inventory"),
            ({"target": "ga-x;reboot"}, 400, "target:1:"),
            ({"target": "x", "identity": "/root/.ssh/id_ed25519"}, 400, "identity"),
            ({"target": "x", "parallel": 0}, 422, "parallel"),
            ({"target": "x", "timeout": 0}, 422, "timeout"),
            ({"target": "x", "timeout": 10**9}, 422, "timeout"),
            ({"target": "x", "connect_timeout": -1}, 422, "connect_timeout"),
            ({"target": "x", "user": "u" * 65}, 422, "user"),
            ({"target": ""}, 422, "target"),
            ({"target": "x" * 10_001}, 422, "target"),
            ({"target": "x", "command": "reboot"}, 422, "command"),
            ({}, 422, "target"),
        ]
        for body, status, words in cases:
            answer = api.post("/hosts/gather", json=body)
            assert answer.status_code == status, (body, answer.text[:300])
            assert words in answer.text, (words, answer.text[:300])
            assert "root:x:0:0" not in answer.text
        for target, status in (("@/etc/passwd", 400), ("", 422), ("a" * 10_001, 422)):
            listed = api.get("/hosts", params={"target": target})
            assert listed.status_code == status, (target, listed.text[:300])
            assert "root:x:0:0" not in listed.text
    assert _jobs(server) == before
