"""Backups over the API: another tenant's backups and stores are not found, each role
may do what core/access.py says, and hostile input is refused saying where."""

from __future__ import annotations

from served import Server
from sqlalchemy import select

from db_rows import add_deployment
from provisor.services.events import list_events
from provisor.store.backups import Backup, BackupObject
from provisor.store.orchestration import Deployment

SECRET = "s3cr3t-access-key-never-shown"


def _add_backup(server: Server, deployment: str, backup_id: str) -> None:
    with server.store.session() as session:
        found = session.scalar(select(Deployment).where(Deployment.name == deployment))
        assert found is not None
        backup = Backup(
            backup_id=backup_id,
            tenant_id=found.tenant_id,
            deployment=found.name,
            instance=found.instance,
            machine=f"{deployment}-web-1",
            node="web",
            workflow_id=f"backup:{found.instance}:{deployment}-web-1:now-{backup_id}",
            trigger="manual",
            store="local",
            state="good",
            data_key="sealed:v2:not-used-here",
        )
        backup.objects.append(
            BackupObject(
                name="disk.tar.gz",
                key=f"{found.instance}/{deployment}-web-1/{backup_id}/disk.tar.gz",
                size=10,
                sha256="0" * 64,
                plain_size=5,
                plain_sha256="1" * 64,
            )
        )
        session.add(backup)


def test_another_tenants_backups_and_stores_are_not_found(server: Server) -> None:
    add_deployment(server.store, "b-dep", tenant="alpha", machines=[("web", 1)])
    _add_backup(server, "b-dep", "alphabackup1")
    with server.client("admin", "alpha") as alpha:
        added = alpha.post(
            "/backup-stores",
            json={
                "name": "a-store",
                "kind": "s3",
                "settings": {
                    "bucket": "a-bucket",
                    "endpoint": "http://127.0.0.1:9",
                    "access_key_id": "AK",
                },
                "secret_access_key": SECRET,
            },
        )
        assert added.status_code == 201, added.text
        assert SECRET not in added.text and added.json()["has_secret"] is True
        assert alpha.get("/backups/alphabackup1").status_code == 200
        assert SECRET not in alpha.get("/backup-stores").text
    probes = [
        ("GET", "/backups/alphabackup1", None),
        ("DELETE", "/backups/alphabackup1", None),
        ("POST", "/backups/verify", {"backup": "alphabackup1"}),
        ("POST", "/deployments/b-dep/backups", {}),
        ("POST", "/deployments/b-dep/machines/b-dep-web-1/restore", {}),
        ("PUT", "/deployments/b-dep/backup-schedules/web", {"schedule": "off"}),
        ("DELETE", "/backup-stores/a-store", None),
        ("POST", "/backup-stores/a-store/check", None),
    ]
    with server.client("admin", "beta") as beta:
        for method, path, body in probes:
            answer = beta.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
        assert beta.get("/backups").json() == []
        assert [s["name"] for s in beta.get("/backup-stores").json()] == ["local"]
    with server.client("admin", "alpha") as alpha:  # all still there
        assert alpha.get("/backups/alphabackup1").status_code == 200
        assert "a-store" in {s["name"] for s in alpha.get("/backup-stores").json()}
    events = list_events(server.owner("alpha"), limit=10000)
    assert not any(SECRET in str(e.details) for e in events)


def test_what_each_role_may_do_with_backups(server: Server) -> None:
    if not any(n == "r-dep" for n in _names(server)):
        add_deployment(server.store, "r-dep", tenant="alpha", machines=[("web", 1)])
    refused = [
        ("requester", "GET", "/backups", None),
        ("approver", "GET", "/backups", None),
        ("auditor", "POST", "/deployments/r-dep/backups", {}),
        ("auditor", "POST", "/backups/verify", {}),
        (
            "auditor",
            "POST",
            "/backup-stores",
            {"name": "x", "kind": "s3", "settings": {"bucket": "abc"}},
        ),
        ("requester", "POST", "/deployments/r-dep/machines/r-dep-web-1/restore", {}),
        ("approver", "DELETE", "/backups/whatever", None),
    ]
    for role, method, path, body in refused:
        with server.client(role) as api:
            answer = api.request(method, path, json=body)
        assert answer.status_code == 403, (role, method, path, answer.text)
    with server.client("auditor") as api:
        assert api.get("/backups").status_code == 200
        assert api.get("/backup-stores").status_code == 200
    with server.client("operator") as api:
        assert api.post("/backups/verify", json={}).status_code == 200
    denied = list_events(server.owner(), kinds=["access.denied"], limit=10000)
    assert any(e.actor == "auditor-alpha" for e in denied)


def _names(server: Server) -> list[str]:
    with server.store.session() as session:
        return list(session.scalars(select(Deployment.name)))


def test_hostile_backup_input_is_refused_saying_where(server: Server) -> None:
    if not any(n == "h-dep" for n in _names(server)):
        add_deployment(server.store, "h-dep", tenant="alpha", machines=[("web", 1)])
    with server.client("admin") as api:
        cases = [
            (
                "PUT",
                "/deployments/h-dep/backup-schedules/web",
                {"schedule": "61 * * * *"},
                "schedule",
            ),
            (
                "PUT",
                "/deployments/h-dep/backup-schedules/web",
                {"schedule": "x" * 100_000},
                "schedule",
            ),
            ("PUT", "/deployments/h-dep/backup-schedules/nosuch", {"schedule": "off"}, "node"),
            ("POST", "/deployments/h-dep/backups", {"store": "no-such-store"}, "store"),
            ("POST", "/deployments/h-dep/backups", {"store": "../etc"}, "store"),
            ("POST", "/deployments/h-dep/backups", {"machines": ["nope"]}, "machine"),
            ("POST", "/deployments/h-dep/backups", {"machines": ["m"] * 5000}, "machines"),
            (
                "POST",
                "/backup-stores",
                {"name": "d", "kind": "directory", "settings": {"path": "/etc"}},
                "type",
            ),
            (
                "POST",
                "/backup-stores",
                {"name": "../x", "kind": "s3", "settings": {"bucket": "abc"}},
                "name",
            ),
            (
                "POST",
                "/backup-stores",
                {"name": "local", "kind": "s3", "settings": {"bucket": "abc"}},
                "name",
            ),
            (
                "POST",
                "/backup-stores",
                {"name": "q", "kind": "s3", "settings": {"bucket": "A_B"}},
                "bucket",
            ),
            (
                "POST",
                "/backup-stores",
                {
                    "name": "q",
                    "kind": "s3",
                    "settings": {"bucket": "abc", "endpoint": "file:///etc/passwd"},
                },
                "endpoint",
            ),
            ("POST", "/backup-stores", {"name": "q", "kind": "nfs"}, "type"),
            (
                "POST",
                "/backup-stores",
                {
                    "name": "q",
                    "kind": "s3",
                    "settings": {"bucket": "abc"},
                    "secret_access_key": SECRET,
                },
                "secret_access_key",
            ),
        ]
        for method, path, body, field in cases:
            answer = api.request(method, path, json=body)
            assert answer.status_code in (400, 404, 409, 422), (path, body, answer.text)
            text = answer.text
            assert field in text, (path, field, text[:500])
            assert SECRET not in text and len(text) < 20_000
