"""Runtime parameters: stored values, blocking waits, and the HTTP endpoint machines call.

A machine proves who it is with a token signed with the controller's signing key,
naming its deployment's instance (never reused, unlike row ids) and itself, so it can
publish only its own keys (`node.index.name`), and only while its deployment lasts:
once the deployment is being removed or gone, its tokens are refused.
Values live in the database (one that holds a secret of its deployment is sealed
there, as secret inputs are); waits are answered as soon as a value arrives in
this process, and by polling the database otherwise (another worker may set it).
While this process runs a deployment's workflow, the values it has written or
read are also kept in memory: a machine's calls and the workflow's waits are
answered from there without a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from sqlalchemy import bindparam, delete, func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from provisor.core.blueprint import AUTOMATIC_KEYS, HOST_KEYS
from provisor.core.masking import Masker
from provisor.fleet.knownhosts import public_keys
from provisor.orchestrator import secrets
from provisor.orchestrator.key_report import host_keys_token
from provisor.store import Store
from provisor.store.models import utcnow
from provisor.store.orchestration import Deployment, Machine, ParameterWait, RuntimeParameter

KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}\.[0-9]{1,5}\.[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
# Values set through this process wake its waiters at once; the database is polled
# only for values another worker process sets, which is rare (a machine calls the
# worker running its deployment).
_POLL_SECONDS = 3.0
ENDED = ("terminating", "terminated")  # a token of a deployment in these states is refused

MAX_KEYS_PER_MACHINE = 256
"""The most runtime parameters one machine may set (a deployment's total is bounded by
its machines): a machine that loops over new names cannot fill the database."""

MAX_VALUE_BYTES = 64 * 1024
"""The longest value a machine may set, in bytes (UTF-8)."""


class TooManyParameters(Exception):
    """A machine has set as many runtime parameters as it may."""


def machine_token(key: bytes, instance: str, machine: str) -> str:
    """The token of a machine of the deployment `instance`, signed with `key`."""
    digest = hmac.new(key, f"{instance}/{machine}".encode(), hashlib.sha256).hexdigest()
    return f"{instance}.{machine}.{digest[:32]}"


TokenOf = Callable[[bytes, str, str], str]  # (key, instance, machine) -> token


def _caller(key: bytes, header: str, token_of: TokenOf = machine_token) -> tuple[str, str] | None:
    """(deployment instance, machine) of a token that `token_of` makes with `key`; None
    otherwise."""
    token = header.removeprefix("Bearer ").strip()
    try:
        instance, machine, _ = token.split(".", 2)
    except ValueError:
        return None
    expected = token_of(key, instance, machine)
    return (instance, machine) if hmac.compare_digest(expected, token) else None


# Insert or replace, in the syntax SQLite and PostgreSQL share; written out rather than
# built per call: a parameter is set for every machine, and building the statement
# cost ten times what running it does.
def _insert(on_conflict: str) -> TextClause:
    return text(
        f"INSERT INTO {RuntimeParameter.__tablename__}"
        ' (deployment_id, "key", "value", set_by, updated_at)'
        " VALUES (:deployment_id, :key, :value, :set_by, :updated_at)"
        f' ON CONFLICT (deployment_id, "key") {on_conflict}'
    ).bindparams(bindparam("updated_at", type_=RuntimeParameter.__table__.c.updated_at.type))


_UPSERT = _insert(
    'DO UPDATE SET "value" = excluded."value", set_by = excluded.set_by,'
    " updated_at = excluded.updated_at"
)
_INSERT_FIRST = _insert("DO NOTHING")  # a value set once: the first one stays


def set_parameters(
    connection: Connection | Session, deployment_id: int, values: Mapping[str, str], set_by: str
) -> None:
    """Set (insert or replace) values of a deployment, in the caller's transaction."""
    if values:
        now = utcnow()
        connection.execute(
            _UPSERT,
            [
                {
                    "deployment_id": deployment_id,
                    "key": k,
                    "value": v,
                    "set_by": set_by,
                    "updated_at": now,
                }
                for k, v in values.items()
            ],
        )


def set_parameter(
    connection: Connection | Session, deployment_id: int, key: str, value: str, set_by: str
) -> None:
    set_parameters(connection, deployment_id, {key: value}, set_by)


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
    # Where the sealing key is, and the secrets of a deployment (by id): a value that
    # holds one is sealed in the database. Without them values are kept as given.
    home: Path | None = None
    secrets_of: Callable[[int], Masker] | None = None
    _waiters: dict[tuple[int, str], list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Values written or read by this process, for the deployments whose workflow it
    # runs (a value only changes through `publish`, and a deployment's machines
    # publish through the worker running it), and the machines' key prefixes.
    _values: dict[tuple[int, str], str] = field(default_factory=dict)
    _prefixes: dict[tuple[int, str], str] = field(default_factory=dict)
    _active: dict[int, int] = field(default_factory=dict)
    _complete: set[int] = field(default_factory=set)  # every stored value was read
    # Waits start and end in bursts (every worker waits for the head at once): their
    # records are written together, in order, a transaction per burst.
    _wait_log: list[tuple[bool, int, str, str, datetime]] = field(default_factory=list)
    _wait_log_flushing: bool = False
    _wait_log_writer: threading.Lock = field(default_factory=threading.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def live_deployment(self, instance: str) -> int | None:
        """The id of the deployment `instance` if it exists and has not ended; None for
        a removed, terminating or unknown one. Asked of the database on every call:
        another process removes deployments, and a token must stop working at once."""
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(Deployment.id, Deployment.state).where(Deployment.instance == instance)
            ).first()
        return None if row is None or row[1] in ENDED else int(row[0])

    def open_deployment(self, deployment_id: int) -> None:
        """This process runs the deployment's workflow: keep its values in memory."""
        with self._lock:
            self._active[deployment_id] = self._active.get(deployment_id, 0) + 1

    def close_deployment(self, deployment_id: int) -> None:
        """The workflow ended here: forget its values (the database keeps them)."""
        with self._lock:
            left = self._active.pop(deployment_id, 1) - 1
            if left > 0:
                self._active[deployment_id] = left
                return
            self._complete.discard(deployment_id)
            for cache in (self._values, self._prefixes):
                for entry in [k for k in cache if k[0] == deployment_id]:
                    del cache[entry]

    def remember(self, deployment_id: int, values: dict[str, str]) -> None:
        """Every value the database has for the deployment, just read.

        From then on a value missing in memory is one nobody has set yet, unless
        another process sets it: waits find those by polling the database.
        """
        with self._lock:
            if deployment_id in self._active:
                for key, value in values.items():
                    self._values.setdefault((deployment_id, key), self.opened(value))
                self._complete.add(deployment_id)

    def _keep(
        self, cache: dict[tuple[int, str], str], deployment_id: int, key: str, value: str
    ) -> None:
        with self._lock:
            if deployment_id in self._active:
                cache[(deployment_id, key)] = value

    def _sealed(self, deployment_id: int, value: str) -> str:
        """The value as stored: sealed when a secret of the deployment is in it, and
        when it looks sealed itself (so that it opens as what was published)."""
        if self.home is None or self.secrets_of is None:
            return value
        hidden = secrets.is_sealed(value) or self.secrets_of(deployment_id).text(value) != value
        return secrets.seal(self.home, value) if hidden else value

    def opened(self, value: str) -> str:
        """A stored value as it was published."""
        if self.home is not None and secrets.is_sealed(value):
            return secrets.unseal(self.home, value)
        return value

    async def publish(
        self,
        deployment_id: int,
        key: str,
        value: str,
        set_by: str,
        *,
        max_keys: int | None = None,
    ) -> None:
        """Store a value and wake its waiters. With `max_keys`, a key `set_by` has not
        set before is refused (`TooManyParameters`) once it has set that many."""

        def save() -> None:
            stored = self._sealed(deployment_id, value)
            with self.store.engine.begin() as connection:  # no ORM session needed
                if max_keys is not None and self.known(deployment_id, key) is None:
                    _check_room(connection, deployment_id, key, set_by, max_keys)
                set_parameter(connection, deployment_id, key, stored, set_by)

        await asyncio.to_thread(save)
        self._wake(deployment_id, key, value)

    async def publish_first(self, deployment_id: int, key: str, value: str, set_by: str) -> str:
        """Set `key` unless it is set already; the value it has now (the first one set).
        For what is never secret (host public keys): stored as given."""

        def save() -> str:
            with self.store.engine.begin() as connection:
                connection.execute(
                    _INSERT_FIRST,
                    {
                        "deployment_id": deployment_id,
                        "key": key,
                        "value": value,
                        "set_by": set_by,
                        "updated_at": utcnow(),
                    },
                )
                stored = connection.scalar(
                    select(RuntimeParameter.value).where(
                        RuntimeParameter.deployment_id == deployment_id,
                        RuntimeParameter.key == key,
                    )
                )
                assert stored is not None  # inserted, or there before
                return stored

        stored = await asyncio.to_thread(save)
        self._wake(deployment_id, key, stored)
        return stored

    def _wake(self, deployment_id: int, key: str, value: str) -> None:
        """A value was stored: keep it, and wake whoever waits for it in this process."""
        self._keep(self._values, deployment_id, key, value)
        with self._lock:
            waiting = list(self._waiters.get((deployment_id, key), ()))
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)

    def known(self, deployment_id: int, key: str) -> str | None:
        """The value in memory, if any (no database query)."""
        with self._lock:
            return self._values.get((deployment_id, key))

    def _read(self, deployment_id: int, key: str) -> str | None:
        """The stored value."""
        with self.store.engine.connect() as connection:
            value = connection.scalar(
                select(RuntimeParameter.value).where(
                    RuntimeParameter.deployment_id == deployment_id, RuntimeParameter.key == key
                )
            )
        if value is not None:
            value = self.opened(value)
            self._keep(self._values, deployment_id, key, value)
        return value

    def prefix(self, deployment_id: int, machine: str) -> str | None:
        """`node.index` of a machine of the deployment, as its keys begin; None: no such."""
        with self._lock:
            known = self._prefixes.get((deployment_id, machine))
        if known is not None:
            return known
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(Machine.node, Machine.index).where(
                    Machine.deployment_id == deployment_id, Machine.name == machine
                )
            ).first()
        if row is None:
            return None
        prefix = f"{row[0]}.{row[1]}"
        self._keep(self._prefixes, deployment_id, machine, prefix)
        return prefix

    def remember_prefixes(self, deployment_id: int, prefixes: dict[str, str]) -> None:
        """`node.index` of machines, by name, as the workflow loaded them."""
        for machine, prefix in prefixes.items():
            self._keep(self._prefixes, deployment_id, machine, prefix)

    def known_prefix(self, deployment_id: int, machine: str) -> str | None:
        with self._lock:
            return self._prefixes.get((deployment_id, machine))

    def _note_wait(self, waiting: bool, deployment_id: int, key: str, waiter: str) -> None:
        """Record that `waiter` waits for `key` (or no longer does), for `provisor params`."""
        entry = (waiting, deployment_id, key, waiter, datetime.now(UTC))
        with self._lock:
            self._wait_log.append(entry)
            if self._wait_log_flushing:
                return  # the coming write takes it along
            self._wait_log_flushing = True
        task = asyncio.get_running_loop().create_task(self._flush_waits())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_waits(self) -> None:
        await asyncio.sleep(0.01)  # the others of the burst
        try:
            await asyncio.to_thread(self.write_waits)
        except RuntimeError:  # the executor is shut down: the worker is stopping
            self.write_waits()

    def write_waits(self) -> None:
        """Write the wait records noted so far (in the order noted)."""
        with self._wait_log_writer:
            with self._lock:
                batch, self._wait_log = self._wait_log, []
                self._wait_log_flushing = False
            if not batch:
                return
            with self.store.engine.begin() as connection:
                _record_waits(connection, batch)

    async def wait(
        self, deployment_id: int, key: str, timeout: float, *, waiter: str
    ) -> str | None:
        """The value of `key` once set, or None after `timeout` seconds."""
        value = self.known(deployment_id, key)
        if value is not None:
            return value
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.setdefault((deployment_id, key), []).append(entry)
        recorded = False
        try:
            # Registered first: a value published from now on wakes this wait. When
            # memory holds all the stored values, the database has nothing more to say
            # now (a value another process sets is found by the polls below).
            with self._lock:
                complete = deployment_id in self._complete
            if not complete or timeout <= 0:
                value = await asyncio.to_thread(self._read, deployment_id, key)
            if value is None and timeout > 0:
                self._note_wait(True, deployment_id, key, waiter)
                recorded = True
            while True:
                value = value if value is not None else self.known(deployment_id, key)
                left = deadline - loop.time()
                if value is not None or left <= 0:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, _POLL_SECONDS))
                if event.is_set():  # published in this process: in memory now
                    event.clear()
                else:  # another process may set it: look in the database now and then
                    value = await asyncio.to_thread(self._read, deployment_id, key)
        finally:
            with self._lock:
                entries = self._waiters.get((deployment_id, key), [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiters.pop((deployment_id, key), None)
            if recorded:
                self._note_wait(False, deployment_id, key, waiter)


def _check_room(
    connection: Connection, deployment_id: int, key: str, set_by: str, limit: int
) -> None:
    """Refuse a new key of `set_by` once it has set `limit` keys (a key it sets again
    replaces its value and is always allowed)."""
    exists = connection.scalar(
        select(RuntimeParameter.id).where(
            RuntimeParameter.deployment_id == deployment_id, RuntimeParameter.key == key
        )
    )
    if exists is not None:
        return
    count = connection.scalar(
        select(func.count()).where(
            RuntimeParameter.deployment_id == deployment_id, RuntimeParameter.set_by == set_by
        )
    )
    if count is not None and count >= limit:
        raise TooManyParameters(
            f"{set_by} has set {count} runtime parameters, the most a machine may set "
            f"({limit}); set one of them again rather than a new name"
        )


def _record_waits(
    connection: Connection, batch: list[tuple[bool, int, str, str, datetime]]
) -> None:
    """Apply wait records in order: only the last of each waiter's wait counts."""
    last = {(d, key, waiter): (waiting, since) for waiting, d, key, waiter, since in batch}
    connection.execute(
        delete(ParameterWait).where(
            ParameterWait.deployment_id == bindparam("d"),
            ParameterWait.key == bindparam("k"),
            ParameterWait.waiter == bindparam("w"),
        ),
        [{"d": d, "k": key, "w": waiter} for d, key, waiter in last],
    )
    waiting = [
        {"deployment_id": d, "key": key, "waiter": waiter, "since": since}
        for (d, key, waiter), (still, since) in last.items()
        if still
    ]
    if waiting:
        connection.execute(insert(ParameterWait), waiting)


_MAX_BODY = 256 * 1024  # a /set body: a key and a value
_REFUSED = "unknown machine token, or its deployment has ended"


class ParameterServer:
    """The endpoint of `provisor-param` (`POST /set`, `GET /get`), on a port of this
    process. Machines reach it, so the HTTP itself is uvicorn's, not ours. With `tls`
    (a PEM file with key and certificate) it speaks HTTPS, and machines trust that
    certificate alone: they are given it with their agent."""

    def __init__(
        self,
        board: ParameterBoard,
        signing_key: bytes,
        tls: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.board = board
        self._key = signing_key
        self._tls = tls
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/set", self._set, methods=["POST"]),
                Route("/get", self._get, methods=["GET"]),
                Route("/host-keys", self._host_keys, methods=["POST"]),
            ]
        )

    async def _authorized(
        self, request: Request, token_of: TokenOf = machine_token
    ) -> tuple[int, str] | None:
        """(deployment id, machine) of the caller's token (as `token_of` makes them), if it
        is valid and its deployment has not ended."""
        signed = _caller(self._key, request.headers.get("authorization", ""), token_of)
        if signed is None:
            return None
        instance, machine = signed
        deployment_id = await asyncio.to_thread(self.board.live_deployment, instance)
        return None if deployment_id is None else (deployment_id, machine)

    async def _body(
        self, request: Request, token_of: TokenOf, fields: str
    ) -> tuple[int, str, dict[str, object]] | Response:
        """The caller (by a token `token_of` makes) and its JSON object, or the refusal."""
        if "transfer-encoding" in request.headers:
            return PlainTextResponse("send the body with a content-length", status_code=400)
        try:
            length = int(request.headers.get("content-length", "0"))
        except ValueError:
            return PlainTextResponse("invalid content-length", status_code=400)
        if length > _MAX_BODY:
            return PlainTextResponse(
                f"a request body is at most {_MAX_BODY} bytes", status_code=413
            )
        caller = await self._authorized(request, token_of)
        if caller is None:
            return PlainTextResponse(_REFUSED, status_code=401)
        try:
            data = json.loads(await request.body())
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return PlainTextResponse(f"the body must be a JSON object with {fields}", 400)
        return caller[0], caller[1], data

    async def _prefix(self, deployment_id: int, machine: str) -> str | None:
        prefix = self.board.known_prefix(deployment_id, machine)
        if prefix is None:
            prefix = await asyncio.to_thread(self.board.prefix, deployment_id, machine)
        return prefix

    async def _set(self, request: Request) -> Response:
        body = await self._body(request, machine_token, "key and value")
        if isinstance(body, Response):
            return body
        deployment_id, machine, data = body
        name, value = str(data.get("key", "")), str(data.get("value", ""))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}", name):
            return PlainTextResponse(f"invalid parameter name {name!r}", status_code=400)
        if name in AUTOMATIC_KEYS:  # provisor's: set at launch, never changed
            return PlainTextResponse(
                f"{name} is set by provisor, machines cannot set it", status_code=400
            )
        if name == HOST_KEYS:
            return PlainTextResponse(
                f"{name} is reported once, at first boot (POST /host-keys); it cannot be set",
                status_code=400,
            )
        try:
            size = len(value.encode())
        except UnicodeEncodeError:  # JSON may carry lone surrogates, which no text holds
            return PlainTextResponse(f"the value of {name} is not valid text", status_code=400)
        if size > MAX_VALUE_BYTES:
            return PlainTextResponse(
                f"the value of {name} is {size:,} bytes; a runtime parameter holds at most "
                f"{MAX_VALUE_BYTES:,}",
                status_code=413,
            )
        prefix = await self._prefix(deployment_id, machine)
        if prefix is None:
            return PlainTextResponse(f"unknown machine {machine}", status_code=403)
        try:
            await self.board.publish(
                deployment_id, f"{prefix}.{name}", value, machine, max_keys=MAX_KEYS_PER_MACHINE
            )
        except TooManyParameters as exc:
            return PlainTextResponse(str(exc), status_code=403)
        return PlainTextResponse("ok")

    async def _host_keys(self, request: Request) -> Response:
        """A machine's SSH host public keys, reported at first boot; the first report
        stands (the workflow pins from it), a different one later is refused."""
        body = await self._body(request, host_keys_token, "keys")
        if isinstance(body, Response):
            return body
        deployment_id, machine, data = body
        try:
            keys = "\n".join(public_keys(str(data.get("keys", ""))))
        except ValueError as exc:
            return PlainTextResponse(f"invalid host keys: {exc}", status_code=400)
        prefix = await self._prefix(deployment_id, machine)
        if prefix is None:
            return PlainTextResponse(f"unknown machine {machine}", status_code=403)
        stored = await self.board.publish_first(
            deployment_id, f"{prefix}.{HOST_KEYS}", keys, machine
        )
        if stored != keys:
            return PlainTextResponse(
                f"the host keys of {machine} were reported before, and were others",
                status_code=409,
            )
        return PlainTextResponse("ok")

    async def _get(self, request: Request) -> Response:
        caller = await self._authorized(request)
        if caller is None:
            return PlainTextResponse(_REFUSED, status_code=401)
        deployment_id, machine = caller
        key = request.query_params.get("key", "")
        if not KEY.match(key):
            return PlainTextResponse(f"invalid key {key!r}: use NODE.INDEX.NAME", status_code=400)
        try:
            wait = max(0.0, min(float(request.query_params.get("wait", "0")), 60.0))
        except ValueError:
            wait = float("nan")
        if wait != wait:  # not a number (NaN included)
            return PlainTextResponse("wait must be a number of seconds", status_code=400)
        value = await self.board.wait(deployment_id, key, wait, waiter=machine)
        if value is None:
            setter = await asyncio.to_thread(expected_setter, self.board.store, deployment_id, key)
            return PlainTextResponse(
                f"timed out waiting for {key}, which {setter} should set", status_code=408
            )
        return PlainTextResponse(value)

    async def start(self) -> str:
        """Serve on `port` (when given and free), else on a free port; returns the URL
        machines use."""
        ipv6 = ":" in self._host
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            if not self._port:
                raise
            sock.bind((self._host, 0))  # taken meanwhile: machines told the old URL retry
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_level="warning", lifespan="off", ssl_certfile=self._tls
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        scheme = "https" if self._tls else "http"
        where = f"[{self._host}]" if ipv6 else self._host
        self.url = f"{scheme}://{where}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._server = None
