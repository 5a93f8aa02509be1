"""What every request passes before any route: the Host it names, the site it comes
from, and the size of its body.

- `Host` must be one the server answers to (its address, localhost, `--allowed-host`
  names): a web page that rebinds a name of its own to 127.0.0.1 gets 400.
- A browser's cross-site request (an `Origin` of another host) gets 403.
- A body over the limit gets 413, counted as it arrives (chunked bodies included).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1024 * 1024  # bytes of one request body


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_name(authority: str) -> str:
    """`example.com:8080` -> `example.com`; `[::1]:8080` -> `::1`."""
    host = urlsplit(f"//{authority}").hostname
    return (host or "").lower()


class RequestGuard:
    """Host allow-list, same-site check and body limit, as one ASGI middleware."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        max_body: int = MAX_BODY,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.allowed = {name.lower() for name in allowed_hosts}
        self.max_body = max_body
        self.larger = dict(larger or {})  # path -> its own limit (uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _host_name(_header(scope, b"host") or "")
        if host not in self.allowed:
            await _refuse(send, 400, f"this server does not answer to the host {host[:100]!r}")
            return
        origin = _header(scope, b"origin")
        if origin is not None and _host_name(urlsplit(origin).netloc) not in self.allowed:
            await _refuse(send, 403, "cross-site requests are refused")
            return
        limit = self.larger.get(scope.get("path", ""), self.max_body)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, f"the request body is over {limit:,} bytes")
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with the body counted as it arrives. Past the limit the app is told
        the client went away, its answer (if any) is dropped, and 413 goes out instead."""
        seen, exceeded, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _refuse(send, 413, f"the request body is over {limit:,} bytes")
