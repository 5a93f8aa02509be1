"""Runtime parameters: the store upsert, the board's waits and the HTTP endpoint."""

from __future__ import annotations

import asyncio
import glob
import json
import socket
import ssl
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from db_rows import add_deployment, instance_of
from machines_needed import IN_CI
from provisor.orchestrator.params import (
    ParameterBoard,
    ParameterServer,
    _record_waits,
    get_parameter,
    machine_token,
    set_parameter,
    set_parameters,
)
from provisor.orchestrator.secrets import parameter_certificate, parameter_tls
from provisor.orchestrator.worker import _loopback
from provisor.store import Store
from provisor.store.orchestration import ParameterWait, RuntimeParameter

SECRET = b"k" * 32
FORGED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsa7rJ4hG8J7lDq3cQ7SxZkh7mL3n0wJYfWb0q9b6cN"


@pytest.fixture
def deployment_id(store: Store) -> int:
    return add_deployment(store, "shop", machines=[("db", 1), ("app", 1)])


def test_set_parameter_inserts_then_replaces(store: Store, deployment_id: int) -> None:
    with store.session() as session:
        set_parameter(session, deployment_id, "db.1.port", "5432", "shop-db-1")
    with store.session() as session:
        first = session.scalars(select(RuntimeParameter)).one().updated_at
        set_parameters(
            session, deployment_id, {"db.1.port": "6432", "app.1.port": "80"}, "provisor"
        )
    assert get_parameter(store, deployment_id, "db.1.port") == "6432"
    with store.session() as session:
        rows = {p.key: p for p in session.scalars(select(RuntimeParameter))}
    assert {k: (p.value, p.set_by) for k, p in rows.items()} == {
        "db.1.port": ("6432", "provisor"),
        "app.1.port": ("80", "provisor"),
    }
    assert rows["db.1.port"].updated_at >= first


def _pinned(home: Path) -> ssl.SSLContext:
    """A client context that trusts the endpoint's certificate alone, as the agent does."""
    tls = ssl.create_default_context(cadata=parameter_certificate(home))
    tls.check_hostname = False
    return tls


def _call(
    url: str,
    tls: ssl.SSLContext | None,
    token: str,
    path: str,
    body: dict[str, str] | None = None,
) -> tuple[int, str]:
    request = urllib.request.Request(
        url + path,
        method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=tls) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _raw(url: str, data: bytes, tls: ssl.SSLContext | None) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=tls)
    writer.write(data)
    await writer.drain()
    try:
        reply = await reader.read()
    except ConnectionResetError:
        reply = b""
    writer.close()
    return reply


def test_endpoint_sets_gets_and_waits(store: Store, deployment_id: int, tmp_path: Path) -> None:
    tls = _pinned(tmp_path)

    async def scenario() -> None:
        board = ParameterBoard(store)
        board.open_deployment(deployment_id)
        server = ParameterServer(board, SECRET, parameter_tls(tmp_path))
        url = await server.start()
        assert url.startswith("https://127.0.0.1:")

        async def call(
            token: str, path: str, body: dict[str, str] | None = None
        ) -> tuple[int, str]:
            return await asyncio.to_thread(_call, url, tls, token, path, body)

        instance = instance_of(store, deployment_id)
        db = machine_token(SECRET, instance, "shop-db-1")
        app = machine_token(SECRET, instance, "shop-app-1")
        try:
            # A wait answered by a value published meanwhile, through the endpoint.
            waiting = asyncio.ensure_future(call(app, "/get?key=db.1.ready&wait=20"))
            # The wait is visible while it lasts (once the request has arrived: the
            # machine is shared and loaded, so no fixed delay is enough).
            for _ in range(200):
                await asyncio.sleep(0.05)
                with store.session() as session:
                    waits = session.query(ParameterWait).filter_by(waiter="shop-app-1").count()
                if waits:
                    break
            assert waits == 1
            assert await call(db, "/set", {"key": "ready", "value": "yes"}) == (200, "ok")
            assert await waiting == (200, "yes")
            board.write_waits()  # records are written in bursts, shortly after
            with store.session() as session:
                assert session.query(ParameterWait).count() == 0
            assert get_parameter(store, deployment_id, "db.1.ready") == "yes"
            # A machine publishes only its own keys; values may change.
            await call(db, "/set", {"key": "ready", "value": "again"})
            assert await call(app, "/get?key=db.1.ready") == (
                200,
                "again",
            )
            timed_out = await call(app, "/get?key=db.1.port&wait=0.2")
            assert timed_out[0] == 408 and "shop-db-1" in timed_out[1]
            assert (await call("1.x.y", "/get?key=db.1.ready"))[0] == 401
            assert (await call(app, "/get?key=nope"))[0] == 400
            assert (await call(app, "/get?key=db.1.a&wait=x"))[0] == 400
            assert (await call(app, "/set", {"key": "a b"}))[0] == 400
            refused = await call(app, "/set", {"key": "address"})
            assert refused == (400, "address is set by provisor, machines cannot set it")
            assert (await call(app, "/other"))[0] == 404
            assert (await call(app, "/set"))[0] == 405
            stranger = machine_token(SECRET, instance, "shop-web-1")
            assert (await call(stranger, "/set", {"key": "a"}))[0] == 403
            # Malformed or oversized requests are refused, not crashed on.
            assert (await _raw(url, b"nonsense\r\n\r\n", tls)).startswith(b"HTTP/1.1 400")
            huge = b"POST /set HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\n"
            assert (await _raw(url, huge, tls)).startswith(b"HTTP/1.1 413")
            # Plain HTTP gets nothing, and a client that trusts anything else refuses it.
            assert not (await _raw(url, b"GET /get?key=db.1.ready HTTP/1.1\r\n\r\n", None))
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.to_thread(
                    _call, url, ssl.create_default_context(), app, "/get?key=db.1.ready"
                )
            chunked = b"POST /set HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            assert (await _raw(url, chunked, tls)).startswith(b"HTTP/1.1 400")
            assert (await _raw(url, b"GET /get HTTP/1.1\r\n" + b"x" * 20000, tls)).startswith(
                b"HTTP/1.1 400"
            )
        finally:
            await server.stop()
        # Without a certificate (the worker's choice on a loopback address): plain HTTP.
        plain = ParameterServer(board, SECRET)
        plain_url = await plain.start()
        try:
            assert plain_url.startswith("http://127.0.0.1:")
            answer = await asyncio.to_thread(_call, plain_url, None, app, "/get?key=db.1.ready")
            assert answer == (200, "again")
        finally:
            await plain.stop()
        # Once the workflow is over, values come from the database again.
        board.close_deployment(deployment_id)
        with store.session() as session:
            set_parameter(session, deployment_id, "db.1.ready", "changed", "provisor")
        assert await board.wait(deployment_id, "db.1.ready", 0, waiter="x") == "changed"

    asyncio.run(scenario())


def test_wait_records_of_a_burst_keep_only_each_waiters_last(
    store: Store, deployment_id: int
) -> None:
    now = datetime.now(UTC)
    burst = [
        (True, deployment_id, "db.1.ready", "shop-app-1", now),
        (True, deployment_id, "db.1.port", "shop-app-1", now),
        (False, deployment_id, "db.1.ready", "shop-app-1", now),  # ended in the same burst
        (True, deployment_id, "db.1.ready", "shop-db-1", now),
    ]
    with store.engine.begin() as connection:
        _record_waits(connection, burst)
    with store.session() as session:
        rows = {(w.key, w.waiter) for w in session.scalars(select(ParameterWait))}
    assert rows == {("db.1.port", "shop-app-1"), ("db.1.ready", "shop-db-1")}
    with store.engine.begin() as connection:
        _record_waits(connection, [(False, deployment_id, "db.1.port", "shop-app-1", now)])
    with store.session() as session:
        assert session.scalars(select(ParameterWait.waiter)).all() == ["shop-db-1"]


def test_the_endpoint_is_plain_http_only_on_loopback() -> None:
    assert _loopback("127.0.0.1") and _loopback("127.5.0.9") and _loopback("::1")
    assert not _loopback("10.0.0.5") and not _loopback("0.0.0.0")
    assert not _loopback("controller.example")  # a name may lead anywhere: HTTPS


def test_host_keys_are_reported_once_with_their_own_token(
    store: Store, deployment_id: int, tmp_path: Path
) -> None:
    """The first-boot report (the very commands a machine's user data runs) reaches the
    endpoint over HTTPS, trusting its certificate alone; the first report stands, another
    is refused; the report token does nothing else, and no other token reports."""
    from provisor.fleet.knownhosts import preferred_key, public_keys
    from provisor.orchestrator.key_report import host_keys_token, report_commands

    tls = _pinned(tmp_path)
    on_this_computer = "\n".join(
        Path(p).read_text().strip() for p in sorted(glob.glob("/etc/ssh/ssh_host_*_key.pub"))
    )
    if not on_this_computer:  # make system-deps installs sshd, which makes them
        missing = "no SSH host keys in /etc/ssh to report (make system-deps)"
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)

    async def scenario() -> None:
        board = ParameterBoard(store)
        board.open_deployment(deployment_id)
        server = ParameterServer(board, SECRET, parameter_tls(tmp_path))
        url = await server.start()
        instance = instance_of(store, deployment_id)
        report = host_keys_token(SECRET, instance, "shop-db-1")
        db = machine_token(SECRET, instance, "shop-db-1")

        async def call(token: str, path: str, body: dict[str, str]) -> tuple[int, str]:
            return await asyncio.to_thread(_call, url, tls, token, path, body)

        try:
            waiting = asyncio.ensure_future(
                board.wait(deployment_id, "db.1.host_keys", 30, waiter="provisor")
            )
            commands = report_commands(url, parameter_certificate(tmp_path), report)
            ran = await asyncio.create_subprocess_exec(
                "sh", "-c", commands, stdout=asyncio.subprocess.PIPE
            )
            output, _ = await ran.communicate()
            assert "SSH host keys reported" in output.decode()
            reported = await waiting
            assert reported == "\n".join(public_keys(on_this_computer))
            assert preferred_key(reported.splitlines()).startswith("ssh-ed25519 ")
            with store.session() as session:
                row = session.scalars(
                    select(RuntimeParameter).where(RuntimeParameter.key == "db.1.host_keys")
                ).one()
            assert row.set_by == "shop-db-1"
            # The same report again (a retry): fine. Another one: refused, the first stays.
            assert await call(report, "/host-keys", {"keys": on_this_computer}) == (200, "ok")
            forged = (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsa7rJ4hG8J7lDq3cQ7SxZkh7mL3n0wJYfWb0q9b6cN"
            )
            status, message = await call(report, "/host-keys", {"keys": forged})
            assert status == 409 and "shop-db-1" in message
            assert get_parameter(store, deployment_id, "db.1.host_keys") == reported
            # Each token does its own thing only.
            assert (await call(db, "/host-keys", {"keys": forged}))[0] == 401
            assert (await call(report, "/set", {"key": "ready", "value": "x"}))[0] == 401
            refused = await call(db, "/set", {"key": "host_keys", "value": forged})
            assert refused[0] == 400 and "reported once" in refused[1]
            other = host_keys_token(SECRET, instance, "shop-app-1")
            bad = await call(other, "/host-keys", {"keys": "ssh-ed25519 not-a-key"})
            assert bad[0] == 400 and "not an OpenSSH public key" in bad[1]
            assert (await call(other, "/host-keys", {"keys": ""}))[0] == 400
        finally:
            await server.stop()

    asyncio.run(scenario())


def _agent(directory: Path) -> list[str]:
    """`provisor-param` as machines run it (their python3), reading its files from
    `directory` instead of /etc/provisor."""
    from provisor.orchestrator.param_agent import AGENT

    script = directory / "provisor-param"
    script.write_text(AGENT.replace("/etc/provisor/", f"{directory}/"))
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    return [python, str(script)]


def _configure_agent(directory: Path, url: str, token: str, known: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "param.env").write_text(
        f"PROVISOR_PARAM_URL={url}\nPROVISOR_PARAM_TOKEN={token}\n"
    )
    (directory / "known.json").write_text(json.dumps(known))


async def _run(argv: list[str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_the_agent_sets_and_waits_for_several_keys_at_once(
    store: Store, deployment_id: int, tmp_path: Path, secure: bool
) -> None:
    """The agent itself (plain HTTP on its own socket, or HTTPS pinned to the endpoint's
    certificate): `set`, `get` of several keys with one wait, known values answered on
    the machine, and the endpoint's refusals passed on."""

    async def scenario() -> None:
        board = ParameterBoard(store)
        board.open_deployment(deployment_id)
        server = ParameterServer(board, SECRET, parameter_tls(tmp_path) if secure else None)
        url = await server.start()
        assert url.startswith("https:" if secure else "http:")
        instance = instance_of(store, deployment_id)
        db, app = tmp_path / "db", tmp_path / "app"
        _configure_agent(db, url, machine_token(SECRET, instance, "shop-db-1"), {})
        _configure_agent(
            app,
            url,
            machine_token(SECRET, instance, "shop-app-1"),
            {"db.1.address": "10.0.0.5", "db.1.hostname": 'db "1"', "db.1.note": "x\\y"},
        )
        for directory in (db, app):
            (directory / "param.crt").write_text(parameter_certificate(tmp_path))
        db_agent, app_agent = _agent(db), _agent(app)
        try:
            waiting = asyncio.ensure_future(
                _run(app_agent, "get", "db.1.address", "db.1.ready", "db.1.port", "--wait", "30")
            )
            assert await _run(db_agent, "set", "ready", "yes") == (0, "", "")
            assert await _run(db_agent, "set", "port", "5432") == (0, "", "")
            assert await waiting == (0, "10.0.0.5\nyes\n5432\n", "")
            # Known values are answered on the machine, escaped ones too.
            assert await _run(app_agent, "get", "db.1.hostname", "db.1.note") == (
                0,
                'db "1"\nx\\y\n',
                "",
            )
            code, _, err = await _run(app_agent, "get", "db.1.missing")
            assert code == 1 and "timed out waiting for db.1.missing" in err
            code, _, err = await _run(app_agent, "get", "db.1.ready", "nokey")
            assert code == 2 and "invalid key 'nokey'" in err
            code, _, err = await _run(db_agent, "set", "address", "1.2.3.4")
            assert code == 2 and "set by provisor" in err
            code, _, err = await _run(app_agent, "get", "db.1.ready", "--wait")
            assert code == 2 and "provisor-param get NODE.INDEX.KEY..." in err
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_agent_keeps_trying_while_the_controller_cannot_be_reached(
    store: Store, deployment_id: int, tmp_path: Path
) -> None:
    """A `get` without --wait of a value that is set is read once the controller answers
    again (it restarts, or was too busy to answer), as a `set` is written."""

    async def scenario() -> None:
        with socket.socket() as probe:  # a port nothing listens on, for now
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with store.session() as session:
            set_parameter(session, deployment_id, "db.1.ready", "yes", "shop-db-1")
        instance = instance_of(store, deployment_id)
        app = tmp_path / "app"
        _configure_agent(
            app, f"http://127.0.0.1:{port}", machine_token(SECRET, instance, "shop-app-1"), {}
        )
        reading = asyncio.ensure_future(_run(_agent(app), "get", "db.1.ready"))
        await asyncio.sleep(1.5)
        assert not reading.done()
        server = ParameterServer(ParameterBoard(store), SECRET, port=port)
        assert await server.start() == f"http://127.0.0.1:{port}"
        try:
            assert await reading == (0, "yes\n", "")
        finally:
            await server.stop()

    asyncio.run(scenario())
