"""Patching over the API: another tenant's catalog and hosts are not found, each role may
do what core/access.py says, and bad input is refused before any job, saying where."""

from __future__ import annotations

from datetime import UTC, datetime

from served import Server
from sqlalchemy import select

from provisor.services.events import list_events
from provisor.store.models import Job, Tenant
from provisor.store.patches import PatchEntry


def _catalog_row(server: Server, tenant: str, host: str) -> None:
    server.owner(tenant).tenant_id()  # the tenant exists
    with server.store.session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        assert tenant_id is not None
        session.add(
            PatchEntry(
                tenant_id=tenant_id,
                host=host,
                package="hello-provisor",
                installed="1.0-1",
                candidate="2.0-1",
                security=True,
                origin="Debian-Security:stable-security",
                analyzed_at=datetime.now(UTC),
            )
        )


def _jobs(server: Server) -> int:
    with server.store.session() as session:
        return len(session.scalars(select(Job.id)).all())


def test_another_tenants_catalog_and_hosts_are_not_found(server: Server) -> None:
    _catalog_row(server, "alpha", "pa-web01")
    with server.client("admin", "alpha") as alpha:
        assert alpha.post("/groups", json={"name": "pa-tb"}).status_code == 201
        rows = alpha.get("/patches").json()
        assert [(r["host"], r["package"]) for r in rows] == [("pa-web01", "hello-provisor")]
    before = _jobs(server)
    with server.client("admin", "beta") as beta:
        assert beta.get("/patches").json() == []
        assert beta.get("/patches", params={"security": True}).json() == []
        for path, body in (
            ("/patches/analyze", {"target": "group:pa-tb"}),
            ("/patches/apply", {"target": "group:pa-tb", "packages": ["hello-provisor"]}),
        ):
            answer = beta.post(path, json=body)
            assert answer.status_code in (400, 404), (path, answer.text)
            assert "pa-tb" in answer.text
    assert _jobs(server) == before  # nothing ran
    with server.client("auditor", "alpha") as alpha:
        assert len(alpha.get("/patches").json()) == 1  # still there


def test_what_each_role_may_do_with_patches(server: Server) -> None:
    with server.client("admin", "alpha") as admin:
        admin.post("/groups", json={"name": "pa-empty"})
        # a host on a closed loopback port: a job that runs, and reaches nothing
        added = admin.post("/hosts", json={"name": "pa-down", "address": "127.0.0.1", "port": 9})
        assert added.status_code == 201, added.text
    refused = [
        ("requester", "GET", "/patches", None),
        ("approver", "GET", "/patches", None),
        ("auditor", "POST", "/patches/analyze", {"target": "group:pa-empty"}),
        ("auditor", "POST", "/patches/apply", {"target": "group:pa-empty"}),
        ("approver", "POST", "/patches/apply", {"target": "group:pa-empty"}),
        ("requester", "POST", "/patches/analyze", {"target": "group:pa-empty"}),
    ]
    for role, method, path, body in refused:
        with server.client(role) as api:
            answer = api.request(method, path, json=body)
        assert answer.status_code == 403, (role, method, path, answer.text)
    with server.client(None) as anonymous:
        assert anonymous.get("/patches").status_code == 401
        assert anonymous.post("/patches/apply", json={"target": "x"}).status_code == 401
    with server.client("auditor") as api:
        assert api.get("/patches").status_code == 200
    with server.client("operator") as api:
        empty = api.post("/patches/analyze", json={"target": "group:pa-empty"})
        assert empty.status_code == 400 and "matches no host" in empty.text  # allowed, no hosts
        analyzed = api.post("/patches/analyze", json={"target": "pa-down"})
        assert analyzed.status_code == 200, analyzed.text
        assert analyzed.json()["job"]["kind"] == "patch-analyze"
        assert analyzed.json()["failed"].keys() == {"pa-down"}
        applied = api.post("/patches/apply", json={"target": "pa-down", "batch": "10%"})
        assert applied.status_code == 200, applied.text
        assert applied.json()["job"]["kind"] == "patch-apply"
    denied = list_events(server.owner(), kinds=["access.denied"], limit=10000)
    assert any(e.actor == "auditor-alpha" and "patches" in str(e.details) for e in denied)
    kinds = {e.kind for e in list_events(server.owner(), kinds=["patch."], limit=10000)}
    assert {"patch.analyzed", "patch.applied"} <= kinds


def test_bad_patch_input_is_refused_saying_where(server: Server) -> None:
    before = _jobs(server)
    with server.client("admin") as api:
        cases = [
            ({"target": "x", "packages": ["hello;reboot"]}, "packages"),
            ({"target": "x", "packages": ["--purge"]}, "packages"),
            ({"target": "x", "packages": ["$(id)"]}, "packages"),
            ({"target": "x", "reboot": "sometimes"}, "reboot"),
            ({"target": "x", "batch": "lots"}, "batch"),
            ({"target": "x", "batch": "150%"}, "batch"),
            ({"target": "x", "timeout": -1}, "timeout"),
            ({"target": "x", "parallel": 0}, "parallel"),
            ({"target": ""}, "target"),
            ({"target": "x", "unknown": 1}, "unknown"),
            ({"target": "group:pa-empty", "identity": "/root/.ssh/id_ed25519"}, "identity"),
        ]
        for body, field in cases:
            answer = api.post("/patches/apply", json=body)
            assert answer.status_code in (400, 422), (body, answer.text)
            assert field in answer.text, (field, answer.text[:500])
        answer = api.post("/patches/analyze", json={"target": "x", "refresh_timeout": 0})
        assert answer.status_code == 422 and "refresh_timeout" in answer.text
    assert _jobs(server) == before
