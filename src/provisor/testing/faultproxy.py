"""An HTTP proxy in front of an EC2 API that injects the faults real clouds show.

moto answers every call at once and never fails on its own; EC2 throttles, returns
5xx, sits behind load balancers that answer HTML, is eventually consistent (an
instance just created is "not found" for a while) and boots machines in its own time.
The proxy forwards requests unchanged and, when told, answers instead of moto or
rewrites its answer, so the `ec2` provider's retries and waits are tested against
these behaviours over real HTTP. It also counts requests per EC2 Action.

    with FaultProxy(moto.url) as proxy:
        proxy.throttle(2, action="RunInstances")
        ec2 = ec2_client(proxy.url, "us-east-1")
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from provisor.testing._background import Background

__all__ = ["FaultProxy"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
_EC2_NS = "{http://ec2.amazonaws.com/doc/2016-11-15}"


@dataclass
class _Fault:
    """`left` more matching requests get `status` and `body` instead of moto's answer."""

    left: int
    action: str | None
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class _Window:
    """Instances made by RunInstances after `since` are affected for `seconds`."""

    seconds: float
    action: str
    since: float

    def covers(self, created: float | None, now: float) -> bool:
        return created is not None and created >= self.since and now - created < self.seconds


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _error_xml(code: str, message: str) -> bytes:
    """An error body as EC2 sends it (no namespace, unlike moto's own)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def _instance_ids(params: Iterable[tuple[str, str]]) -> set[str]:
    """The instance ids a request names (InstanceId, InstanceId.N, ResourceId.N)."""
    return {
        v for k, v in params if k == "InstanceId" or k.startswith(("InstanceId.", "ResourceId."))
    }


class FaultProxy(Background):
    """A threaded forwarding proxy on a free 127.0.0.1 port with programmable faults.

    Count faults (`throttle`, `server_errors`, `html_error`) queue up and are consumed
    in order, each by requests of its `action` (any action when None). Time faults
    (`not_found_after_create`, `slow_boot`) apply to instances that RunInstances
    answers create after they are set.
    """

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        if target.hostname is None or target.port is None:
            raise ValueError(f"target URL needs a host and a port: {target_url!r}")
        self._target = (target.hostname, target.port)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._not_found: _Window | None = None
        self._slow_boot: _Window | None = None
        self._created: dict[str, float] = {}  # instance id -> when RunInstances answered
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"faultproxy {self.url}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # --- faults ----------------------------------------------------------------------------

    def throttle(self, n: int, action: str | None = None) -> None:
        """The next n matching requests get EC2's 400 RequestLimitExceeded."""
        body = _error_xml("RequestLimitExceeded", "Request limit exceeded.")
        self._add(_Fault(n, action, 400, body, "text/xml"))

    def server_errors(self, n: int, status: int = 503, action: str | None = None) -> None:
        """The next n matching requests get an EC2 5xx error (Unavailable / InternalError)."""
        code = "Unavailable" if status == 503 else "InternalError"
        message = (
            "The service is unavailable." if status == 503 else "An internal error has occurred."
        )
        self._add(_Fault(n, action, status, _error_xml(code, message), "text/xml"))

    def html_error(self, n: int, status: int = 500, action: str | None = None) -> None:
        """The next n matching requests get an HTML page, as from a broken load balancer."""
        reason = http.client.responses.get(status, "Error")
        body = f"<html><body><h1>{status} {reason}</h1><p>upstream failed</p></body></html>\n"
        self._add(_Fault(n, action, status, body.encode(), "text/html"))

    def not_found_after_create(self, seconds: float, action: str = "DescribeInstances") -> None:
        """For `seconds` after RunInstances made them, `action` naming those instances
        gets InvalidInstanceID.NotFound (EC2's eventual consistency)."""
        with self._lock:
            self._not_found = _Window(seconds, action, time.monotonic())

    def slow_boot(self, seconds: float) -> None:
        """DescribeInstances shows instances `pending` for `seconds` after RunInstances."""
        with self._lock:
            self._slow_boot = _Window(seconds, "DescribeInstances", time.monotonic())

    def clear(self) -> None:
        """No pending faults, no tracked instances, no counts."""
        with self._lock:
            self._faults.clear()
            self._not_found = None
            self._slow_boot = None
            self._created.clear()
            self.counts.clear()

    def _add(self, fault: _Fault) -> None:
        if fault.left > 0:
            with self._lock:
                self._faults.append(fault)

    # --- the proxy -------------------------------------------------------------------------

    def _handle(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Answer:
        query = urlsplit(path).query
        params = parse_qsl(query) + parse_qsl(body.decode("utf-8", "replace"))
        action = dict(params).get("Action")
        now = time.monotonic()
        with self._lock:
            if action is not None:
                self.counts[action] += 1
            fault = next((f for f in self._faults if f.action in (None, action)), None)
            if fault is not None:
                fault.left -= 1
                if fault.left == 0:
                    self._faults.remove(fault)
                return _Answer(fault.status, [("Content-Type", fault.content_type)], fault.body)
            window = self._not_found
            if window is not None and action == window.action:
                ids = sorted(_instance_ids(params))
                fresh = [i for i in ids if window.covers(self._created.get(i), now)]
                if fresh:
                    message = f"The instance ID '{fresh[0]}' does not exist"
                    error = _error_xml("InvalidInstanceID.NotFound", message)
                    return _Answer(400, [("Content-Type", "text/xml")], error)
        answer = self._forward(method, path, headers, body)
        if answer.status == 200 and action == "RunInstances":
            with self._lock:
                for instance_id in self._ids_in(answer.body):
                    self._created[instance_id] = time.monotonic()
        elif answer.status == 200 and action == "DescribeInstances":
            answer = self._maybe_pending(answer)
        return answer

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Answer:
        connection = http.client.HTTPConnection(*self._target, timeout=120)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return _Answer(response.status, kept, response.read())
        finally:
            connection.close()

    @staticmethod
    def _ids_in(xml: bytes) -> list[str]:
        root = ET.fromstring(xml)  # noqa: S314 (moto's answer, not untrusted input)
        return [e.text for e in root.iter(f"{_EC2_NS}instanceId") if e.text]

    def _maybe_pending(self, answer: _Answer) -> _Answer:
        """Rewrite `running` to `pending` for instances still booting (slow_boot)."""
        with self._lock:
            window, now = self._slow_boot, time.monotonic()
            if window is None:
                return answer
            booting = {i for i, t in self._created.items() if window.covers(t, now)}
        if not booting:
            return answer
        root = ET.fromstring(answer.body)  # noqa: S314 (moto's answer)
        changed = False
        for instances in root.iter(f"{_EC2_NS}instancesSet"):
            for item in instances.findall(f"{_EC2_NS}item"):
                state = item.find(f"{_EC2_NS}instanceState")
                if item.findtext(f"{_EC2_NS}instanceId") not in booting or state is None:
                    continue
                code, name = state.find(f"{_EC2_NS}code"), state.find(f"{_EC2_NS}name")
                if code is not None and name is not None and name.text == "running":
                    code.text, name.text, changed = "0", "pending", True
        if not changed:
            return answer
        body = ET.tostring(
            root, encoding="utf-8", xml_declaration=True, default_namespace=_EC2_NS[1:-1]
        )
        return _Answer(answer.status, answer.headers, body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    answer = proxy._handle(self.command, self.path, self.headers.items(), body)
                except Exception as exc:  # say so to the client instead of hanging it up
                    message = f"fault proxy: {type(exc).__name__}: {exc}".encode()
                    answer = _Answer(502, [("Content-Type", "text/plain")], message)
                self.send_response_only(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

            def log_message(self, format: str, *args: object) -> None:
                """Silent: a line per request on stderr would drown the test output."""

        return Handler
