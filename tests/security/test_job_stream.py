"""POST /jobs/stream (start a job and follow it in one request) takes what POST /jobs
takes and refuses what it refuses, before anything streams: no token, a role that may
not run jobs, another tenant's hosts, a path of the server, hostile bodies."""

from __future__ import annotations

import httpx
import pytest
from served import Server

from provisor.services import hosts
from provisor.services.schemas import HostSpec, validate

RUN = {"kind": "run", "command": "true"}


@pytest.fixture(scope="module")
def alpha_host(server: Server) -> str:
    """A host of tenant alpha (nothing listens at its address: no job gets that far)."""
    if not any(h.name == "st-web" for h in hosts.list_hosts(server.owner("alpha"))):
        hosts.add_host(
            server.owner("alpha"), validate(HostSpec, {"name": "st-web", "address": "127.0.0.9"})
        )
    return "st-web"


def _stream(api: httpx.Client, body: object, **extra: object) -> httpx.Response:
    """The answer of POST /jobs/stream when it is not a stream (an error), read whole."""
    answer = api.post("/jobs/stream", json=body, **extra)  # type: ignore[arg-type]
    assert not answer.headers.get("content-type", "").startswith("text/event-stream"), answer.text
    return answer


def test_no_token_and_a_role_that_may_not_run_jobs_are_refused(
    server: Server, alpha_host: str
) -> None:
    with server.client(None) as anonymous:
        assert _stream(anonymous, {**RUN, "target": alpha_host}).status_code == 401
    for role in ("auditor", "requester", "approver"):
        with server.client(role) as api:
            answer = _stream(api, {**RUN, "target": alpha_host})
        assert answer.status_code == 403 and role in answer.json()["error"]["message"]


def test_another_tenants_host_is_no_host(server: Server, alpha_host: str) -> None:
    with server.client("admin", "beta") as beta:
        theirs = _stream(beta, {**RUN, "target": alpha_host})
        nobody = _stream(beta, {**RUN, "target": "no-such-host"})
        other = _stream(beta, {**RUN, "target": alpha_host}, headers={"X-Provisor-Tenant": "alpha"})
    assert theirs.status_code == nobody.status_code == 400
    assert theirs.json()["error"]["message"].replace(alpha_host, "X") == nobody.json()["error"][
        "message"
    ].replace("no-such-host", "X")
    assert other.status_code == 404  # beta's admin is no member of alpha


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({**RUN, "target": "st-web", "identity": "/etc/ssh/ssh_host_ed25519_key"}, 400, "identity"),
        (
            {"kind": "fetch", "target": "st-web", "sources": ["/etc"], "destination": "/tmp"},
            400,
            "kind",
        ),
        (
            {"kind": "copy", "target": "st-web", "sources": ["/etc/shadow"], "destination": "/"},
            400,
            "sources",
        ),
        ({**RUN, "target": "@/etc/passwd"}, 400, "target"),
        ({"kind": "run", "target": "st-web"}, 422, "command"),
        ({**RUN, "target": "st-web", "parallel": 0}, 422, "parallel"),
        (
            {**RUN, "target": "st-web", "signal": "NOPE", "kind": "kill", "pattern": "x"},
            422,
            "signal",
        ),
        ({**RUN, "target": "st-web" * 5000}, 400, "target"),
        ([1, 2, 3], 422, ""),
    ],
)
def test_hostile_bodies_are_refused_naming_what_is_wrong(
    server: Server, alpha_host: str, body: object, status: int, named: str
) -> None:
    with server.client("operator") as api:
        answer = _stream(api, body)
    assert answer.status_code == status, answer.text
    assert named in answer.text


def test_a_body_over_the_limit_is_refused(server: Server) -> None:
    with server.client("operator") as api:
        answer = _stream(api, {**RUN, "target": "st-web", "stdin": "x" * (2 * 1024 * 1024)})
    assert answer.status_code == 413
