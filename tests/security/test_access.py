"""Who may call what, against a real server: tokens, roles, tenants; every refusal an event."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from served import Server
from sqlalchemy import select, update

from db_rows import add_deployment
from provisor.services import identity, keys
from provisor.services.events import list_events
from provisor.store.identity import ApiToken
from provisor.store.orchestration import Deployment

SAMPLE = {
    "name": "x",
    "value": "x",
    "machine": "x",
    "token_id": "1",
    "job_id": "1",
    "apply_id": "1",
    "host": "x",
    "upload_id": "x",
    "alert_id": "1",
    "backup": "x",
    "node": "x",
}
PUBLIC = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/oauth2-redirect"}


def _routes(server: Server) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    routes = []
    for path, operations in spec["paths"].items():
        concrete = path.format(**SAMPLE)
        routes += [(method.upper(), concrete) for method in operations if path not in PUBLIC]
    return routes


def test_every_route_but_health_needs_a_token(server: Server) -> None:
    routes = _routes(server)
    assert len(routes) > 30  # the whole API, not a sample
    for method, path in routes:
        answer = httpx.request(method, f"{server.url}{path}", json={}, timeout=30)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error"]["field"] == "authorization"
    assert httpx.get(f"{server.url}/api/v1/health").status_code == 200


def _refused(server: Server, token: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_unknown_malformed_expired_and_revoked_tokens_are_refused(server: Server) -> None:
    good = server.token("operator")
    assert _refused(server, good).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/hosts").status_code == 401  # no token at all
    prefix, token_id, secret = good.split("_", 2)
    for bad in (
        "nonsense",
        f"{prefix}_{token_id}_{'A' * len(secret)}",  # the right id, a wrong secret
        f"{prefix}_999999_{secret}",  # a secret under an id that does not exist
        f"{prefix}_{'9' * 40}_{secret}",
        f"{prefix}_{token_id}_{secret}x",
    ):
        answer = _refused(server, bad)
        assert answer.status_code == 401, bad
        assert secret not in answer.text
    # Expired: its expiry moved into the past, as time would.
    server.token("auditor")  # the user
    expiring = identity.add_token(server.owner(), "auditor-alpha").secret
    with server.store.session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == int(expiring.split("_")[1]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert "expired" in _refused(server, expiring).json()["error"]["message"]
    # Revoked by the owner: refused from the next request on.
    revoked = identity.add_token(server.owner(), "operator-alpha").secret
    assert _refused(server, revoked).status_code == 200
    identity.revoke_token(server.owner(), int(revoked.split("_")[1]))
    assert "revoked" in _refused(server, revoked).json()["error"]["message"]
    refusals = list_events(server.owner("system"), kinds=["auth.refused"], limit=1000)
    reasons = {e.details["reason"] for e in refusals}
    assert {"invalid token", "a bearer token is required (Authorization: Bearer <token>)"} <= (
        reasons
    )
    assert any("expired" in r for r in reasons) and any("revoked" in r for r in reasons)


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("auditor", "POST", "/hosts", {"name": "h1", "address": "127.0.0.9"}),
        ("auditor", "POST", "/jobs", {"kind": "run", "target": "h1", "command": "true"}),
        ("requester", "GET", "/hosts", None),
        ("requester", "GET", "/events", None),
        ("requester", "POST", "/blueprints", {"text": "name: x\n"}),
        ("approver", "POST", "/jobs", {"kind": "run", "target": "h1", "command": "true"}),
        ("approver", "DELETE", "/hosts/h1", None),
        ("operator", "POST", "/providers", {"name": "p", "kind": "ec2"}),
        ("operator", "GET", "/users", None),
        ("operator", "POST", "/deployments/d/approve", None),
        ("auditor", "DELETE", "/deployments/d", None),
    ],
)
def test_a_role_that_may_not_gets_403_and_an_event(
    server: Server, role: str, method: str, path: str, body: dict[str, object] | None
) -> None:
    owner = server.owner()
    if not any(d == "d" for d in _deployment_names(server)):
        add_deployment(server.store, "d", tenant="alpha")
    with server.client(role) as api:
        answer = api.request(method, path, json=body)
    assert answer.status_code == 403, answer.text
    assert role in answer.json()["error"]["message"]
    denied = list_events(owner, kinds=["access.denied"], limit=1000)
    assert any(e.actor == f"{role}-alpha" for e in denied)


def _deployment_names(server: Server) -> list[str]:
    from provisor.store.orchestration import Deployment

    with server.store.session() as session:
        return list(session.scalars(select(Deployment.name)))


def test_what_each_role_may_do(server: Server) -> None:
    with server.client("auditor") as api:
        assert api.get("/hosts").status_code == 200
        assert api.get("/events").status_code == 200
    with server.client("requester") as api:
        assert api.get("/blueprints").status_code == 200
        assert api.get("/deployments").status_code == 200
    with server.client("approver") as api:
        assert api.get("/deployments").status_code == 200
    with server.client("operator") as api:
        assert api.post("/hosts", json={"name": "op-host", "address": "127.0.0.9"}).is_success


def test_a_requester_sees_and_removes_only_its_own_deployments(server: Server) -> None:
    add_deployment(server.store, "someone-elses", tenant="alpha")
    with server.client("requester") as api:
        names = [d["name"] for d in api.get("/deployments").json()]
        assert "someone-elses" not in names
        assert api.get("/deployments/someone-elses").status_code == 404
        assert api.get("/deployments/someone-elses/detail").status_code == 404
        assert api.get("/deployments/someone-elses/events").status_code == 404
        assert api.get("/deployments/someone-elses/health").status_code == 404
        assert api.delete("/deployments/someone-elses").status_code == 404


def test_a_deployments_detail_shows_what_the_role_may_read(server: Server) -> None:
    """Its own tenant's, whole for an auditor; a requester's own without the jobs and
    backups its role may not read; hostile names are just names that do not exist."""
    add_deployment(server.store, "detailed", tenant="alpha", machines=[("web", 1)])
    with server.store.session() as session:
        session.execute(
            update(Deployment)
            .where(Deployment.name == "detailed")
            .values(owner="requester-alpha", inputs={"size": "small"})
        )
    with server.client("auditor") as api:
        whole = api.get("/deployments/detailed/detail").json()
    assert whole["tenant"] == "alpha" and whole["blueprint"] == "webapp"
    assert whole["inputs"] == {"size": "small"} and whole["jobs"] == []
    assert whole["backups"] == {"counts": {}, "last_good_at": None, "last_good": None}
    assert [m["name"] for m in whole["machines"]] == ["detailed-web-1"]
    with server.client("requester") as api:
        own = api.get("/deployments/detailed/detail").json()
        assert own["name"] == "detailed" and own["jobs"] is None and own["backups"] is None
        for name in ("..%2F..%2Fetc", "a" * 5000, "%00", "deployment:*", "detailed%2Fx"):
            answer = api.get(f"/deployments/{name}/detail")
            assert answer.status_code == 404, (name, answer.text)
            assert "detailed" not in answer.text


def test_the_api_docs_page_needs_nothing_from_elsewhere(server: Server) -> None:
    """Swagger UI comes from the server itself (no CDN): every script, style sheet and
    icon the page names is on this server and answers 200; like the OpenAPI document,
    the page and its assets need no token (they hold nothing of any tenant)."""
    page = httpx.get(f"{server.url}/api/v1/docs", timeout=30)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", page.text)
    assert len(urls) >= 4, page.text  # the script, the style sheet, the icon, the document
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url  # same origin
        asset = httpx.get(f"{server.url}{url}", timeout=30)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert not re.search(r"https?://", page.text)  # nothing fetched from another site


def test_another_tenants_objects_are_not_found_and_the_attempt_is_recorded(
    server: Server,
) -> None:
    """Everything of tenant alpha, asked for by tenant beta's admin: 404 like a name that
    never existed, the attempt in beta's audit log and nothing in alpha's."""
    owner = server.owner("alpha")
    add_deployment(server.store, "a-dep", tenant="alpha", machines=[("web", 1)])
    with server.client("admin", "alpha") as alpha:
        assert alpha.post("/hosts", json={"name": "a-web", "address": "127.0.0.9"}).is_success
        assert alpha.post("/groups", json={"name": "a-group", "members": ["a-web"]}).is_success
        bp = "name: a-bp\nversion: '1'\nnodes:\n  app:\n    image: debian-12\n"
        assert alpha.post("/blueprints", json={"text": bp}).is_success
        alpha_token_id = alpha.get("/tokens").json()[0]["id"]
    keys.add_key(owner, "a-key", _private_key())
    before_alpha = len(list_events(owner, limit=10000))
    probes = [
        ("GET", "/hosts/a-web"),
        ("PATCH", "/hosts/a-web"),
        ("DELETE", "/hosts/a-web"),
        ("GET", "/groups/a-group"),
        ("GET", "/groups/a-group/members"),
        ("DELETE", "/groups/a-group"),
        ("GET", "/blueprints/a-bp"),
        ("GET", "/deployments/a-dep"),
        ("GET", "/deployments/a-dep/detail"),
        ("GET", "/deployments/a-dep/parameters"),
        ("GET", "/deployments/a-dep/events"),
        ("GET", "/deployments/a-dep/health"),
        ("PUT", "/deployments/a-dep/health/settings"),
        ("GET", "/deployments/a-dep/reports/a-dep-web-1"),
        ("POST", "/deployments/a-dep/approve"),
        ("DELETE", "/deployments/a-dep"),
        ("DELETE", "/keys/a-key"),
        ("DELETE", f"/tokens/{alpha_token_id}"),
        ("GET", "/jobs/1"),
    ]
    with server.client("admin", "beta") as beta:
        for method, path in probes:
            body = {"address": "127.0.0.8"} if method == "PATCH" else None
            body = {"failures": 2} if method == "PUT" else body
            answer = beta.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
        # Lists show nothing of alpha's.
        for path, key in (("/hosts", "name"), ("/groups", "name"), ("/keys", "name")):
            assert not [o for o in beta.get(path).json() if o[key].startswith("a-")]
        assert beta.get("/deployments").json() == []
        # A job on alpha's host is refused as for a host that never existed.
        run = {"kind": "run", "command": "true"}
        theirs = beta.post("/jobs", json={**run, "target": "a-web"})
        nobody = beta.post("/jobs", json={**run, "target": "no-such-host"})
        assert theirs.status_code == nobody.status_code == 400
        assert theirs.json()["error"]["message"].replace("a-web", "X") == nobody.json()["error"][
            "message"
        ].replace("no-such-host", "X")
        # Selecting alpha as the tenant: beta's admin is no member of it.
        assert beta.get("/hosts", headers={"X-Provisor-Tenant": "alpha"}).status_code == 404
    refused = list_events(server.owner("beta"), kinds=["access.not_found"], limit=10000)
    assert len(refused) >= len(probes)
    assert len(list_events(owner, limit=10000)) == before_alpha  # alpha's log unchanged
    with server.client("admin", "alpha") as alpha:  # and alpha's things are all still there
        assert alpha.get("/hosts/a-web").status_code == 200
        assert alpha.get("/deployments/a-dep").status_code == 200


def _private_key() -> str:
    from provisor._asyncssh import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


def test_deployments_of_one_name_in_two_tenants_keep_their_own_reports(server: Server) -> None:
    from provisor.core.masking import NO_SECRETS
    from provisor.orchestrator import reports
    from provisor.store.orchestration import Deployment

    for tenant in ("alpha", "beta"):
        deployment_id = add_deployment(server.store, "same", tenant=tenant, machines=[("web", 1)])
        with server.store.session() as session:
            instance = session.get(Deployment, deployment_id).instance  # type: ignore[union-attr]
        base = reports.deployment_dir(server.home, "same", instance)
        reports.write_reports(
            base, ["same-web-1"], {"same-web-1": f"{tenant}'s console"}, NO_SECRETS
        )
    for tenant in ("alpha", "beta"):
        with server.client("admin", tenant) as api:
            archive = api.get("/deployments/same/reports/same-web-1")
        assert archive.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as opened:
            console = opened.extractfile("same-web-1/console.log")
            assert console is not None and console.read().decode() == f"{tenant}'s console"
