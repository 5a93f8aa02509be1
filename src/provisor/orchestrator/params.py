"""Runtime parameters: stored values, blocking waits, and the HTTP endpoint machines call.

A machine proves who it is with a token derived from the controller's secret
and its own name, so it can publish only its own keys (`node.index.name`).
Values live in the database; waits are answered as soon as a value arrives in
this process, and by polling the database otherwise (another worker may set it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import uvicorn
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from provisor.store import Store
from provisor.store.orchestration import Machine, ParameterWait, RuntimeParameter

KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}\.[0-9]{1,5}\.[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_POLL_SECONDS = 1.0


def machine_token(secret: bytes, deployment_id: int, machine: str) -> str:
    digest = hmac.new(secret, f"{deployment_id}/{machine}".encode(), hashlib.sha256).hexdigest()
    return f"{deployment_id}.{machine}.{digest[:32]}"


def _caller(secret: bytes, header: str) -> tuple[int, str] | None:
    token = header.removeprefix("Bearer ").strip()
    try:
        deployment, machine, _ = token.split(".", 2)
        deployment_id = int(deployment)
    except ValueError:
        return None
    expected = machine_token(secret, deployment_id, machine)
    return (deployment_id, machine) if hmac.compare_digest(expected, token) else None


def set_parameter(session: Session, deployment_id: int, key: str, value: str, set_by: str) -> None:
    row = session.scalar(
        select(RuntimeParameter).where(
            RuntimeParameter.deployment_id == deployment_id, RuntimeParameter.key == key
        )
    )
    if row is None:
        session.add(
            RuntimeParameter(deployment_id=deployment_id, key=key, value=value, set_by=set_by)
        )
    else:
        row.value, row.set_by = value, set_by


def get_parameter(store: Store, deployment_id: int, key: str) -> str | None:
    with store.session() as session:
        return session.scalar(
            select(RuntimeParameter.value).where(
                RuntimeParameter.deployment_id == deployment_id, RuntimeParameter.key == key
            )
        )


def expected_setter(store: Store, deployment_id: int, key: str) -> str:
    """The machine that should publish `key`, for messages about waits that time out."""
    node, index, _ = key.split(".", 2)
    with store.session() as session:
        name = session.scalar(
            select(Machine.name).where(
                Machine.deployment_id == deployment_id,
                Machine.node == node,
                Machine.index == int(index),
            )
        )
    return name or f"no machine (the deployment has no {node}.{index})"


@dataclass
class ParameterBoard:
    """Values and waiters of every deployment this process works on.

    Waiters live on different event loops (the HTTP endpoint's, the workflows'),
    so a new value wakes each one through its own loop, thread-safely.
    """

    store: Store
    _waiters: dict[tuple[int, str], list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def publish(self, deployment_id: int, key: str, value: str, set_by: str) -> None:
        def save() -> None:
            with self.store.session() as session:
                set_parameter(session, deployment_id, key, value, set_by)

        await asyncio.to_thread(save)
        with self._lock:
            waiting = list(self._waiters.get((deployment_id, key), ()))
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)

    async def wait(
        self, deployment_id: int, key: str, timeout: float, *, waiter: str
    ) -> str | None:
        """The value of `key` once set, or None after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        value = await asyncio.to_thread(get_parameter, self.store, deployment_id, key)
        if value is not None:  # already there: nobody needs to see this wait
            return value
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.setdefault((deployment_id, key), []).append(entry)
        await asyncio.to_thread(self._record_wait, deployment_id, key, waiter, True)
        try:
            while True:
                event.clear()
                value = await asyncio.to_thread(get_parameter, self.store, deployment_id, key)
                left = deadline - loop.time()
                if value is not None or left <= 0:
                    return value
                # Another process may set it too: look again now and then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, _POLL_SECONDS))
        finally:
            with self._lock:
                entries = self._waiters.get((deployment_id, key), [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiters.pop((deployment_id, key), None)
            await asyncio.to_thread(self._record_wait, deployment_id, key, waiter, False)

    def _record_wait(self, deployment_id: int, key: str, waiter: str, waiting: bool) -> None:
        with self.store.session() as session:
            session.execute(
                delete(ParameterWait).where(
                    ParameterWait.deployment_id == deployment_id,
                    ParameterWait.key == key,
                    ParameterWait.waiter == waiter,
                )
            )
            if waiting:
                session.add(
                    ParameterWait(
                        deployment_id=deployment_id,
                        key=key,
                        waiter=waiter,
                        since=datetime.now(UTC),
                    )
                )


class ParameterServer:
    """The HTTP endpoint of `provisor-param`, on a loopback port of this process."""

    def __init__(self, board: ParameterBoard, secret: bytes, host: str = "127.0.0.1") -> None:
        self.board = board
        self._secret = secret
        self._host = host
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/set", self._set, methods=["POST"]),
                Route("/get", self._get, methods=["GET"]),
            ]
        )

    def _authorized(self, request: Request) -> tuple[int, str] | None:
        return _caller(self._secret, request.headers.get("authorization", ""))

    async def _set(self, request: Request) -> Response:
        caller = self._authorized(request)
        if caller is None:
            return PlainTextResponse("unknown machine token", status_code=401)
        deployment_id, machine = caller
        body = await request.json()
        name, value = str(body.get("key", "")), str(body.get("value", ""))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}", name):
            return PlainTextResponse(f"invalid parameter name {name!r}", status_code=400)
        prefix = await asyncio.to_thread(self._prefix_of, deployment_id, machine)
        if prefix is None:
            return PlainTextResponse(f"unknown machine {machine}", status_code=403)
        await self.board.publish(deployment_id, f"{prefix}.{name}", value, machine)
        return PlainTextResponse("ok")

    def _prefix_of(self, deployment_id: int, machine: str) -> str | None:
        with self.board.store.session() as session:
            row = session.execute(
                select(Machine.node, Machine.index).where(
                    Machine.deployment_id == deployment_id, Machine.name == machine
                )
            ).first()
        return f"{row[0]}.{row[1]}" if row else None

    async def _get(self, request: Request) -> Response:
        caller = self._authorized(request)
        if caller is None:
            return PlainTextResponse("unknown machine token", status_code=401)
        deployment_id, machine = caller
        key = request.query_params.get("key", "")
        if not KEY.match(key):
            return PlainTextResponse(f"invalid key {key!r}: use NODE.INDEX.NAME", status_code=400)
        try:
            wait = max(0.0, min(float(request.query_params.get("wait", "0")), 60.0))
        except ValueError:
            return PlainTextResponse("wait must be a number of seconds", status_code=400)
        value = await self.board.wait(deployment_id, key, wait, waiter=machine)
        if value is None:
            setter = await asyncio.to_thread(expected_setter, self.board.store, deployment_id, key)
            return PlainTextResponse(
                f"timed out waiting for {key}, which {setter} should set", status_code=408
            )
        return PlainTextResponse(value)

    async def start(self) -> str:
        """Serve on a free port; returns the URL machines use."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
