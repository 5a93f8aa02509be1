"""The health routes against a real server: tenant-scoped, role-checked, inputs checked."""

from __future__ import annotations

from served import Server
from sqlalchemy import update

from db_rows import add_deployment
from provisor.store.orchestration import Deployment

CHECKED = """name: webapp
version: '1'
nodes:
  web:
    image: debian-12
    checks: {interval: 10s, probes: [ssh]}
    recovery: [reboot]
  db:
    image: debian-12
"""


def _checked(server: Server, name: str, tenant: str) -> int:
    deployment_id = add_deployment(
        server.store, name, tenant=tenant, machines=[("web", 1), ("db", 1)]
    )
    with server.store.session() as session:
        session.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(blueprint_text=CHECKED)
        )
    return deployment_id


def test_health_of_another_tenants_deployment_is_not_found(server: Server) -> None:
    _checked(server, "h-dep", "alpha")
    with server.client("admin", "alpha") as alpha:
        own = alpha.get("/deployments/h-dep/health")
        assert own.status_code == 200, own.text
        view = own.json()
        assert view["checked"] is True
        # Only the node with checks; never checked yet.
        assert [(m["machine"], m["state"]) for m in view["machines"]] == [("web.1", "unchecked")]
    with server.client("admin", "beta") as beta:
        assert beta.get("/deployments/h-dep/health").status_code == 404
        put = beta.put("/deployments/h-dep/health/settings", json={"interval": "20s"})
        assert put.status_code == 404
    with server.client("requester", "alpha") as requester:  # not its own deployment
        assert requester.get("/deployments/h-dep/health").status_code == 404


def test_only_who_manages_deployments_changes_their_checks(server: Server) -> None:
    _checked(server, "h-roles", "alpha")
    for role in ("auditor", "approver"):
        with server.client(role, "alpha") as api:
            assert api.get("/deployments/h-roles/health").status_code == 200
            refused = api.put("/deployments/h-roles/health/settings", json={"failures": 5})
            assert refused.status_code == 403, (role, refused.text)
    with server.client("operator", "alpha") as api:
        done = api.put(
            "/deployments/h-roles/health/settings",
            json={"node": "web", "interval": "20s", "failures": 5, "recovery": False},
        )
        assert done.status_code == 200, done.text
        assert done.json()["overrides"] == {
            "web": {"interval": "20s", "failures": 5, "recovery": False}
        }


HOSTILE = [
    ({"interval": "0s"}, "between 1s and 3600s"),
    ({"interval": "5s", "timeout": "10s"}, "longer than the interval"),
    ({"interval": "1" * 39 + "s"}, "invalid duration"),
    ({"interval": "soon"}, "invalid duration"),
    ({"failures": 0}, "greater than or equal to 1"),
    ({"successes": 10**9}, "less than or equal to 100"),
    ({"node": "db", "failures": 2}, "no node 'db' with checks"),
    ({"node": "../../etc", "failures": 2}, "no node"),
    ({"node": "x" * 65}, "at most 64"),
    ({"colour": "red"}, "colour"),
    ({"failures": "many"}, "failures"),
]


def test_hostile_health_settings_are_refused_saying_what_and_where(server: Server) -> None:
    _checked(server, "h-bad", "alpha")
    with server.client("admin", "alpha") as api:
        for body, says in HOSTILE:
            answer = api.put("/deployments/h-bad/health/settings", json=body)
            assert answer.status_code in (400, 404, 422), (body, answer.text)
            assert says in answer.text, (body, answer.text)
        assert api.get("/deployments/h-bad/health").json()["overrides"] == {}
