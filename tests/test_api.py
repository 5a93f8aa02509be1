"""The REST API over the same services, through a real ASGI app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_access import api_client, token_for
from provisor.settings import Settings
from provisor.store import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(database_url=store.url)
    with api_client(settings, token_for(store)) as client:
        yield client


def test_health_and_openapi(client: TestClient) -> None:
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["database"] in ("sqlite", "postgresql")
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/hosts", "/api/v1/groups/{name}/members", "/api/v1/events"} <= set(
        spec["paths"]
    )


def test_hosts_crud(client: TestClient) -> None:
    created = client.post("/api/v1/hosts", json={"name": "web01", "address": "10.0.0.5"})
    assert created.status_code == 201 and created.json()["address"] == "10.0.0.5"
    assert [h["name"] for h in client.get("/api/v1/hosts").json()] == ["web01"]
    patched = client.patch("/api/v1/hosts/web01", json={"tags": {"env": "prod"}, "port": 2222})
    assert patched.json()["tags"] == {"env": "prod"} and patched.json()["port"] == 2222
    assert client.delete("/api/v1/hosts/web01").status_code == 204
    missing = client.get("/api/v1/hosts/web01")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"message": "no host named 'web01'", "field": "name", "location": "name"}
    }
    kinds = [e["kind"] for e in client.get("/api/v1/events?kind=host.").json()]
    assert kinds == ["host.added", "host.changed", "host.removed"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"name": "bad name"}, "name", "invalid name"),
        ({"name": "db01", "port": 70000}, "port", "1-65535"),
        ({"name": "db01", "tags": {"": "x"}}, "tags", "invalid tag"),
        ({"name": "db01", "credentials": "password123"}, "credentials", "credentials"),
        ({"name": "db01", "colour": "red"}, "colour", "Extra inputs"),
        ({}, "name", "Field required"),
    ],
)
def test_bad_host_input_names_the_field(
    client: TestClient, body: dict[str, object], field: str, fragment: str
) -> None:
    response = client.post("/api/v1/hosts", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field and fragment in error["message"]
    assert client.get("/api/v1/hosts").json() == []


def test_duplicate_is_a_conflict(client: TestClient) -> None:
    client.post("/api/v1/hosts", json={"name": "web01"})
    again = client.post("/api/v1/hosts", json={"name": "web01"})
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"


def test_groups_and_members(client: TestClient) -> None:
    for name, env in (("a", "prod"), ("b", "dev")):
        client.post("/api/v1/hosts", json={"name": name, "tags": {"env": env}})
    assert client.post("/api/v1/groups", json={"name": "site"}).status_code == 201
    static = client.post("/api/v1/groups", json={"name": "web", "parent": "site", "members": ["a"]})
    assert static.json()["members"] == ["a"]
    smart = client.post("/api/v1/groups", json={"name": "prod", "rule": "tags.env == 'prod'"})
    assert smart.json()["kind"] == "smart" and smart.json()["members"] == ["a"]
    changed = client.post("/api/v1/groups/web/members", json={"add": ["b"]})
    assert changed.json()["members"] == ["a", "b"]
    members = client.get("/api/v1/groups/site/members").json()
    assert [m["name"] for m in members] == ["a", "b"]
    moved = client.patch("/api/v1/groups/web", json={"parent": None})
    assert moved.json()["parent"] is None
    bad = client.post("/api/v1/groups", json={"name": "x", "rule": "tags.env =="})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "rule"
    assert bad.json()["error"]["location"].startswith("rule:1:")
    assert client.delete("/api/v1/groups/site").status_code == 204


def test_import_reports_every_bad_line(client: TestClient) -> None:
    text = "web01:22\nweb02:notaport\nweb03:0\n"
    response = client.post(
        "/api/v1/hosts/import", json={"text": text, "source": "hosts", "format": "pssh"}
    )
    assert response.status_code == 400
    errors = response.json()["error"]["errors"]
    assert [e["location"].split(":")[1] for e in errors] == ["2", "3"]
    assert client.get("/api/v1/hosts").json() == []


def test_events_filters(client: TestClient) -> None:
    client.post("/api/v1/hosts", json={"name": "a"})
    client.post("/api/v1/groups", json={"name": "g"})
    assert [e["kind"] for e in client.get("/api/v1/events?kind=group.").json()] == ["group.added"]
    assert len(client.get("/api/v1/events?since=5m&kind=host.&kind=group.").json()) == 2
    bad = client.get("/api/v1/events?since=yesterday")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "since"
