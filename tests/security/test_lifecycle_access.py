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
