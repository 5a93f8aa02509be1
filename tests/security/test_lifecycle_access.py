"""Stop, start and lease routes against a real server: another tenant's deployment is
not found, a role that may not is refused (403), hostile names and bodies are refused
saying what is wrong, and nothing changes on a refusal."""

from __future__ import annotations

import time

import pytest
from served import Server
from sqlalchemy import select, update

from db_rows import add_deployment
from provisor.services.events import list_events
from provisor.store.orchestration import Deployment

ROUTES = [("POST", "stop", None), ("POST", "start", None), ("POST", "lease", {"by": "1d"})]


def _state(server: Server, name: str) -> str:
    with server.store.session() as session:
        return str(session.scalar(select(Deployment.state).where(Deployment.name == name)))


def _deployment(server: Server, name: str, tenant: str = "alpha", owner: str = "tester") -> None:
    with server.store.session() as session:
        exists = session.scalar(select(Deployment.id).where(Deployment.name == name))
    if exists is None:
        add_deployment(server.store, name, tenant=tenant)
    with server.store.session() as session:
        session.execute(
            update(Deployment).where(Deployment.name == name).values(owner=owner, state="ready")
        )


@pytest.mark.parametrize(("method", "action", "body"), ROUTES)
def test_another_tenants_deployment_is_not_found(
    server: Server, method: str, action: str, body: dict[str, str] | None
) -> None:
    _deployment(server, "alpha-only")
    with server.client("admin", "beta") as beta:
        answer = beta.request(method, f"/deployments/alpha-only/{action}", json=body)
    assert answer.status_code == 404, answer.text
    assert "no deployment named 'alpha-only'" in answer.json()["error"]["message"]
    assert _state(server, "alpha-only") == "ready"
    refused = list_events(server.owner("beta"), kinds=["access.not_found"], limit=10000)
    assert refused


@pytest.mark.parametrize(("method", "action", "body"), ROUTES)
def test_a_requester_may_not_touch_someone_elses(
    server: Server, method: str, action: str, body: dict[str, str] | None
) -> None:
    _deployment(server, "not-yours", owner="someone")
    with server.client("requester") as api:
        answer = api.request(method, f"/deployments/not-yours/{action}", json=body)
    assert answer.status_code == 404, answer.text  # a requester sees only its own
    assert _state(server, "not-yours") == "ready"


@pytest.mark.parametrize("role", ["auditor", "approver"])
@pytest.mark.parametrize(("method", "action", "body"), ROUTES)
def test_a_role_that_may_not_manage_gets_403(
    server: Server, role: str, method: str, action: str, body: dict[str, str] | None
) -> None:
    _deployment(server, "guarded")
    with server.client(role) as api:
        answer = api.request(method, f"/deployments/guarded/{action}", json=body)
    assert answer.status_code == 403, answer.text
    assert role in answer.json()["error"]["message"]
    assert _state(server, "guarded") == "ready"


@pytest.mark.parametrize(
    "name",
    ["..%2F..%2Fetc", "a" * 5000, "%00", "x%20y", "%E2%80%AEevil", "deployment:*"],
)
@pytest.mark.parametrize(("method", "action", "body"), ROUTES)
def test_hostile_names_are_not_found(
    server: Server, name: str, method: str, action: str, body: dict[str, str] | None
) -> None:
    with server.client("admin") as api:
        answer = api.request(method, f"/deployments/{name}/{action}", json=body)
    assert answer.status_code in (404, 422), answer.text
    assert "error" in answer.json()


def test_the_owner_stops_and_starts_its_own_and_a_wrong_state_is_a_conflict(
    server: Server,
) -> None:
    _deployment(server, "mine", owner="requester-alpha")
    with server.client("requester") as api:
        again = api.post("/deployments/mine/start")
        assert again.status_code == 409, again.text
        assert again.json()["error"]["message"].startswith(
            "cannot start deployment 'mine': it is ready"
        )
        answer = api.post("/deployments/mine/stop")
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "stopping"
        deadline = time.monotonic() + 120
        while api.get("/deployments/mine").json()["state"] == "stopping":
            assert time.monotonic() < deadline, "the server's worker never stopped it"
            time.sleep(0.3)
        assert api.get("/deployments/mine").json()["state"] == "stopped"
        assert api.post("/deployments/mine/stop").status_code == 409
        with server.store.session() as session:
            session.execute(
                update(Deployment).where(Deployment.name == "mine").values(state="deploying")
            )
        refused = api.post("/deployments/mine/start")
        assert refused.status_code == 409
        assert "it is deploying" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({}, 400, "by", "give one of --by"),
        ({"by": "1d", "until": "2d"}, 400, "by", "give one of --by"),
        ({"by": "-1d"}, 400, "by", "invalid duration"),
        ({"by": "none"}, 400, "by", "needs a duration"),
        ({"by": "9" * 9 + "w"}, 400, "by", "too long"),
        ({"by": "1" * 41}, 422, None, ""),
        ({"by": 5}, 422, None, ""),
        ({"until": "2020-01-01T00:00Z"}, 400, "until", "in the past"),
        ({"until": "9000w"}, 400, "until", "more than 1830 days from now"),
        ({"until": "../../etc/passwd"}, 400, "until", "cannot read"),
        ({"until": "\u202e2099-01-01"}, 400, "until", "cannot read"),
    ],
)
def test_hostile_lease_changes_are_refused_saying_where(
    server: Server, body: dict[str, object], status: int, field: str | None, message: str
) -> None:
    _deployment(server, "leased")
    with server.client("operator") as api:
        answer = api.post("/deployments/leased/lease", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if field is not None:
        assert error["field"] == field and message in error["message"], error
    with server.store.session() as session:
        assert (
            session.scalar(select(Deployment.lease_expires_at).where(Deployment.name == "leased"))
            is None
        )


def test_an_operator_extends_a_lease_and_up_refuses_wrong_times(server: Server) -> None:
    _deployment(server, "leased-ok")
    with server.client("operator") as api:
        answer = api.post("/deployments/leased-ok/lease", json={"by": "2d"})
        assert answer.status_code == 200, answer.text
        assert 2 * 86400 - 60 < answer.json()["lease_seconds_left"] <= 2 * 86400
        assert answer.json()["lease_end"] == "stop"
        text = "name: timed\nversion: '1'\nnodes:\n  box:\n    image: debian-12\n"
        assert api.post("/blueprints", json={"text": text}).status_code == 201
        for extra, field, message in (
            ({"at": "2020-01-01T00:00"}, "at", "is in the past"),
            ({"lease": "soon"}, "lease", "invalid duration"),
            ({"lease_end": "explode"}, "lease_end", "use stop or terminate"),
        ):
            refused = api.post("/deployments", json={"blueprint": "timed", **extra})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["field"] == field
            assert message in refused.json()["error"]["message"]
        scheduled = api.post("/deployments", json={"blueprint": "timed", "at": "1h", "lease": "1d"})
        assert scheduled.status_code == 202, scheduled.text
        assert scheduled.json()["state"] == "scheduled"
        assert api.delete("/deployments/timed").status_code == 200
