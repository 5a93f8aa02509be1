"""Running fleet jobs through `provisor server`, whose connection pool stays warm."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from provisor.core.errors import ProvisorError
from provisor.services.results import HostResult, Outcome

# The server sends a keep-alive comment every 15 s while a job is quiet.
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class ServerError(ProvisorError):
    status = 502


def _raise_for(response: httpx.Response, server: str) -> None:
    """The server's error as a ProvisorError with the same status (404 stays 404)."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        problem = ProvisorError(error["message"], field=error.get("field"))
    except (ValueError, KeyError, TypeError):
        raise ServerError(
            f"server {server} answered {response.status_code}: {response.text[:200]}"
        ) from None
    problem.status = response.status_code
    raise problem


def host_result(data: dict[str, Any]) -> HostResult:
    return HostResult(
        host=data["host"],
        address=data["address"],
        outcome=Outcome(data["outcome"]),
        exit_code=data.get("exit_code"),
        error=data.get("error"),
        stdout=str(data.get("stdout") or "").encode(),
        stderr=str(data.get("stderr") or "").encode(),
        details=data.get("details") or {},
        connect_seconds=data.get("connect_seconds"),
        run_seconds=data.get("run_seconds"),
    )


def _events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    event, data = "message", list[str]()
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def _headers(token: str | None, tenant: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if tenant:
        headers["X-Provisor-Tenant"] = tenant
    return headers


class ServerClient:
    """Calls to one provisor server as the user of `token`, acting in `tenant`."""

    def __init__(self, server: str, token: str | None, tenant: str | None) -> None:
        if not token:
            raise ProvisorError(
                f"no token for {server}: run `provisor login {server}` or set PROVISOR_TOKEN",
                field="server",
            )
        self.server = server
        self._client = httpx.Client(
            base_url=server.rstrip("/"), headers=_headers(token, tenant), timeout=_TIMEOUT
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer of `method path`; the server's error as a ProvisorError."""
        try:
            answer = self._client.request(method, f"/api/v1{path}", json=body, params=query)
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach provisor server {self.server}: {exc}", field="server"
            ) from None
        _raise_for(answer, self.server)
        return answer.json() if answer.content else None

    def upload(self, data: bytes, name: str) -> str:
        """Send a file's content (`POST /uploads`); its upload id."""
        try:
            answer = self._client.post(
                "/api/v1/uploads",
                params={"name": name},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach provisor server {self.server}: {exc}", field="server"
            ) from None
        _raise_for(answer, self.server)
        upload_id: str = answer.json()["id"]
        return upload_id

    def close(self) -> None:
        self._client.close()


def whoami(server: str, token: str) -> dict[str, Any]:
    """What the server says of the token: user, tenant, role (`GET /api/v1/me`)."""
    try:
        with httpx.Client(base_url=server.rstrip("/"), timeout=_TIMEOUT) as client:
            answer = client.get("/api/v1/me", headers=_headers(token, None))
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach provisor server {server}: {exc}", field="server") from None
    _raise_for(answer, server)
    me: dict[str, Any] = answer.json()
    return me


def run_remote(
    server: str,
    request: dict[str, Any],
    *,
    token: str | None,
    tenant: str | None,
    on_start: Callable[[dict[str, Any]], None],
    on_result: Callable[[HostResult], None],
) -> dict[str, Any]:
    """Start a job on the server and follow its results; returns the finished job."""
    headers = _headers(token, tenant)
    base = server.rstrip("/")
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=_TIMEOUT) as client:
            started = client.post("/api/v1/jobs", json=request)
            _raise_for(started, server)
            job = started.json()
            on_start(job)
            with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
                _raise_for(stream, server)
                for event, data in _events(stream):
                    if event == "result":
                        on_result(host_result(json.loads(data)))
                    elif event == "done":
                        finished: dict[str, Any] = json.loads(data)
                        return finished
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach provisor server {server}: {exc}", field="server") from None
    raise ServerError(f"server {server} ended the job stream early", field="server")
