"""Running fleet jobs through `provisor server`, whose connection pool stays warm.

A job through a server is one request (`POST /api/v1/jobs/stream`) whose answer streams
the job's results as they come. That request is made with the standard library, not
httpx: `provisor run --server` should cost little more than the job itself, and httpx
(with the modules it brings) is most of what a client would otherwise load. The other
calls (`ServerClient`, `whoami`) use httpx, loaded when first needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from provisor.core.errors import ProvisorError
from provisor.services.results import HostResult, Outcome

if TYPE_CHECKING:
    import httpx

# The server sends a keep-alive comment every 15 s while a job is quiet.
_READ_SECONDS = 60.0
_ERROR_BYTES = 65_536  # of an error answer: its message is short; the rest is not read
_CONNECT_SECONDS = 10.0


class ServerError(ProvisorError):
    status = 502


def _problem(status: int, body: bytes, server: str) -> ProvisorError:
    """The server's error as a ProvisorError with the same status (404 stays 404)."""
    try:
        error = json.loads(body)["error"]
        problem = ProvisorError(error["message"], field=error.get("field"))
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        return ServerError(f"server {server} answered {status}: {text}")
    problem.status = status
    return problem


def _raise_for(response: httpx.Response, server: str) -> None:
    if not response.is_success:
        raise _problem(response.status_code, response.read(), server)


def _timeout() -> httpx.Timeout:
    import httpx

    return httpx.Timeout(_READ_SECONDS, connect=_CONNECT_SECONDS)


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


def _events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a server-sent event stream; comments (keep-alives) are skipped."""
    event, data = "message", list[str]()
    for raw in lines:
        line = raw.rstrip("\r\n")
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


def server_token(server: str) -> str | None:
    """The token for `--server`: PROVISOR_TOKEN, else the one `provisor login` kept."""
    import os

    from provisor.cli.credentials import token_for
    from provisor.services.settings import data_home

    return os.environ.get("PROVISOR_TOKEN") or token_for(data_home(), server)


def _no_token(server: str) -> ProvisorError:
    return ProvisorError(
        f"no token for {server}: run `provisor login {server}` or set PROVISOR_TOKEN",
        field="server",
    )


class ServerClient:
    """Calls to one provisor server as the user of `token`, acting in `tenant`."""

    def __init__(self, server: str, token: str | None, tenant: str | None) -> None:
        if not token:
            raise _no_token(server)
        import httpx

        self._http_error = httpx.HTTPError
        self.server = server
        self._client = httpx.Client(
            base_url=server.rstrip("/"), headers=_headers(token, tenant), timeout=_timeout()
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
        except self._http_error as exc:
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
        except self._http_error as exc:
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
    import httpx

    try:
        with httpx.Client(base_url=server.rstrip("/"), timeout=_timeout()) as client:
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
    """Start a job on the server and follow its results, in one request; returns the
    finished job. A job the server refuses (bad target, no right) raises its error.

    A redirect is not followed (the token would go along): it is answered as an error.
    HTTPS checks the server's certificate against the system's CAs, or SSL_CERT_FILE or
    SSL_CERT_DIR when set, as the other calls (through httpx) do."""
    from http.client import HTTPConnection, HTTPException, HTTPSConnection
    from urllib.parse import urlsplit

    if not token:
        raise _no_token(server)
    if not server.lower().startswith(("http://", "https://")):
        raise ProvisorError(
            f"invalid server {server[:100]!r}: an http:// or https:// URL", field="server"
        )
    job: dict[str, Any] | None = None
    connection: HTTPConnection | None = None
    try:
        url = urlsplit(server)
        if url.scheme.lower() == "https":
            import ssl

            context = ssl.create_default_context()
            connection = HTTPSConnection(
                url.hostname or "", url.port, timeout=_READ_SECONDS, context=context
            )
        else:
            connection = HTTPConnection(url.hostname or "", url.port, timeout=_READ_SECONDS)
        connection.request(
            "POST",
            f"{url.path.rstrip('/')}/api/v1/jobs/stream",
            body=json.dumps(request).encode(),
            headers={
                **_headers(token, tenant),
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
            },
        )
        answer = connection.getresponse()
        if answer.status != 200:  # an answer, not a stream: the job did not start
            raise _problem(answer.status, answer.read(_ERROR_BYTES), server)
        for event, data in _events(line.decode("utf-8") for line in answer):
            if event == "job":
                job = json.loads(data)
                on_start(job)
            elif event == "result":
                on_result(host_result(json.loads(data)))
            elif event == "done":
                finished: dict[str, Any] = json.loads(data)
                return finished
    except (HTTPException, OSError, ValueError) as exc:
        raise ServerError(
            f"cannot reach provisor server {server}: {exc}"
            + (f" (job {job['id']} goes on there)" if job else ""),
            field="server",
        ) from None
    finally:
        if connection is not None:
            connection.close()
    raise ServerError(
        f"server {server} ended the job stream early"
        + (f" (job {job['id']} goes on there)" if job else ""),
        field="server",
    )
