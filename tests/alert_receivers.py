"""Real receivers of notifications on 127.0.0.1: an HTTP server for webhooks and an SMTP
server (aiosmtpd), each keeping what it received; and events written as the product's
parts write them (the events table is the contract alerts read)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from provisor.events import record_event
from provisor.store import Store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def emit(
    home: Path,
    kind: str,
    subject: str,
    *,
    outcome: str = "ok",
    tenant: str = "default",
    **details: Any,
) -> None:
    """An event in the data directory's audit log, as a backup or health check records it."""
    store = Store(f"sqlite:///{home / 'provisor.db'}")
    try:
        with store.session() as session:
            record_event(
                session,
                actor="provisor",
                tenant=tenant,
                kind=kind,
                subject=subject,
                outcome=outcome,
                details=details,
            )
    finally:
        store.close()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    url: str
    received: list[Request] = field(default_factory=list)
    status: int = 200  # what it answers

    def wait_for(self, count: int, timeout: float = 30) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@contextlib.contextmanager
def webhook_receiver(certificate: Path | None = None) -> Iterator[WebhookReceiver]:
    """An HTTP server on a free port of 127.0.0.1 (HTTPS with `certificate`: key and
    certificate, PEM) keeping every POST it receives."""
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, 1_000_000))
            receiver.received.append(
                Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.content)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    inbox: _Inbox
    start: Callable[[], None]
    stop: Callable[[], None]

    def wait_for(self, count: int, timeout: float = 30) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.inbox.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.inbox.messages


@contextlib.contextmanager
def smtp_server(
    *,
    started: bool = True,
    credentials: tuple[str, str] | None = None,
    tls: str | None = None,
    certificate: Path | None = None,
) -> Iterator[SmtpServer]:
    """aiosmtpd on a free port of 127.0.0.1: plain SMTP, or with `tls` "starttls"
    (required) or "tls" (implicit) with `certificate` (key and certificate, PEM); with
    `credentials`, AUTH required and checked."""
    inbox = _Inbox()
    port = free_port()
    options: dict[str, Any] = {}
    if tls is not None:
        assert certificate is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate)
        if tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        else:
            options.update(ssl_context=context)
    if credentials is not None:

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, auth: Any
        ) -> Any:
            from aiosmtpd.smtp import AuthResult

            given = (auth.login.decode(), auth.password.decode())
            inbox.logins.append(given)
            return AuthResult(success=given == credentials)

        options.update(authenticator=authenticate, auth_require_tls=False, auth_required=True)
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    running = [False]

    def start() -> None:
        controller.start()
        running[0] = True

    def stop() -> None:
        if running[0]:
            controller.stop()
            running[0] = False

    if started:
        start()
    try:
        yield SmtpServer(port, inbox, start, stop)
    finally:
        stop()
