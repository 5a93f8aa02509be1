"""Secrets that stay secret: separate keys, tokens bound to one deployment instance, the
masking helper and the ways `provisor up` takes a secret without the command line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import shlex
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from alembic import command
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select, text, update

from db_rows import add_deployment, instance_of
from provisor import logmask
from provisor.cli._params import MAX_VALUE, read_parameters
from provisor.core.errors import InvalidInput, ProvisorError
from provisor.core.masking import MASK, Masker
from provisor.fleet.results import HostResult, Outcome
from provisor.orchestrator import secrets
from provisor.orchestrator.params import ParameterBoard, ParameterServer, machine_token
from provisor.services.context import Context, audited
from provisor.services.events import list_events
from provisor.store import Store
from provisor.store.db import _alembic_config
from provisor.store.orchestration import Deployment, RuntimeParameter

# Keys


def test_sealing_and_signing_keys_are_derived_apart(tmp_path: Path) -> None:
    master = base64.urlsafe_b64decode(secrets.master_key(tmp_path))
    sealing, signing = secrets.sealing_key(tmp_path), secrets.signing_key(tmp_path)
    raw = base64.urlsafe_b64decode(sealing)
    halves = {master[:16], master[16:], raw[:16], raw[16:], signing[:16], signing[16:]}
    assert len(signing) == 32 and len(halves) == 6  # no key shares a part with another
    assert (secrets.sealing_key(tmp_path), secrets.signing_key(tmp_path)) == (sealing, signing)
    other = tmp_path / "other"
    assert secrets.signing_key(other) != signing  # another master, other keys


def test_values_sealed_before_the_split_still_open(tmp_path: Path) -> None:
    master = secrets.master_key(tmp_path)
    before = "sealed:" + Fernet(master).encrypt(b"old s3cret").decode()  # how 0.x sealed
    assert secrets.unseal(tmp_path, before) == "old s3cret"
    now = secrets.seal(tmp_path, "new s3cret")
    assert now.startswith("sealed:v2:") and secrets.is_sealed(now)
    assert secrets.unseal(tmp_path, now) == "new s3cret"
    with pytest.raises(InvalidToken):  # not sealed with the master key itself any more
        Fernet(master).decrypt(now.removeprefix("sealed:v2:").encode())
    with pytest.raises(ProvisorError, match="cannot unseal a secret with"):
        secrets.unseal(tmp_path / "elsewhere", now)
    (tmp_path / "secret.key").write_text("short\n")
    with pytest.raises(ProvisorError, match=r"secret.key is not a provisor key"):
        secrets.signing_key(tmp_path)


# Parameter tokens


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{url}/get?key=db.1.address", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def endpoint(store: Store, tmp_path: Path) -> Iterator[tuple[str, ParameterBoard]]:
    """The runtime-parameter endpoint of a worker whose data directory is `tmp_path`."""
    board = ParameterBoard(store)
    server = ParameterServer(board, secrets.signing_key(tmp_path))
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(server.start())
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(stop.wait(),), daemon=True)
    thread.start()
    try:
        yield url, board
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.run_until_complete(server.stop())
        loop.close()


def test_only_the_signing_key_makes_tokens(
    store: Store, tmp_path: Path, endpoint: tuple[str, ParameterBoard]
) -> None:
    url, _ = endpoint
    instance = instance_of(store, add_deployment(store, "shop", machines=[("db", 1)]))
    signed = machine_token(secrets.signing_key(tmp_path), instance, "shop-db-1")
    assert _status(url, signed) == 408  # accepted: the value is not there yet (wait=0)
    for key in (secrets.sealing_key(tmp_path), secrets.master_key(tmp_path)):
        assert _status(url, machine_token(key, instance, "shop-db-1")) == 401


def test_tokens_end_with_their_deployment(
    store: Store, tmp_path: Path, endpoint: tuple[str, ParameterBoard]
) -> None:
    url, _ = endpoint
    key = secrets.signing_key(tmp_path)
    first = add_deployment(store, "shop", machines=[("db", 1)])
    first_instance = instance_of(store, first)
    old = machine_token(key, first_instance, "shop-db-1")
    assert _status(url, old) == 408
    with store.session() as session:  # `provisor down` marks it first, then forgets it
        session.execute(update(Deployment).values(state="terminating"))
    assert _status(url, old) == 401
    with store.session() as session:
        session.execute(delete(Deployment))
    # The same name again; SQLite may even give it the same row id.
    second = add_deployment(store, "shop", machines=[("db", 1)])
    new = machine_token(key, instance_of(store, second), "shop-db-1")
    assert _status(url, new) == 408
    assert _status(url, old) == 401
    assert instance_of(store, second) != first_instance


def test_migration_gives_every_deployment_its_own_instance(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'provisor.db'}")
    config = _alembic_config(store.engine)
    command.downgrade(config, "0006")
    with store.engine.begin() as connection:
        connection.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 't', 0)"))
        for name in ("a", "b", "c"):
            connection.execute(
                text(
                    "INSERT INTO deployments (tenant_id, name, owner, blueprint, "
                    "blueprint_version, blueprint_text, inputs, provider, state, step, "
                    "outputs, created_at, updated_at) VALUES (1, :n, 'o', 'b', '1', '', '{}', "
                    "'local', 'ready', '', '{}', 0, 0)"
                ),
                {"n": name},
            )
    command.upgrade(config, "head")
    with store.session() as session:
        instances = session.scalars(select(Deployment.instance)).all()
    assert len(instances) == 3 and len(set(instances)) == 3
    assert all(len(i) == 32 for i in instances)
    store.close()


def test_a_runtime_parameter_holding_a_secret_is_sealed_at_rest(
    store: Store, tmp_path: Path
) -> None:
    deployment_id = add_deployment(store, "shop", machines=[("db", 1)])
    masker = Masker.of("db-s3cret-password")
    board = ParameterBoard(store, tmp_path, lambda _: masker)
    published = {
        "db.1.dsn": "postgres://app:db-s3cret-password@db/app",
        "db.1.port": "5432",
        "db.1.odd": "sealed:not-really",  # looks sealed: kept as published all the same
    }

    async def publish() -> None:
        for key, value in published.items():
            await board.publish(deployment_id, key, value, "shop-db-1")

    asyncio.run(publish())
    with store.session() as session:
        stored = dict(session.execute(select(RuntimeParameter.key, RuntimeParameter.value)).all())
    assert stored["db.1.port"] == "5432" and "s3cret" not in json.dumps(stored)
    assert stored["db.1.dsn"].startswith("sealed:v2:")
    assert {key: board.opened(value) for key, value in stored.items()} == published
    assert {key: board._read(deployment_id, key) for key in published} == published


# Masking


def test_masker_finds_a_secret_in_the_forms_output_takes() -> None:
    secret = "pa ss'w\"0rd\nline two"
    masker = Masker.of(secret, None, "")
    shown = "\n".join(
        [secret, shlex.quote(secret), json.dumps({"p": secret}), "line two", "pa ss'w\"0rd"]
    )
    masked = masker.text(shown)
    assert "0rd" not in masked and "line two" not in masked and masked.count(MASK) >= 5
    assert masker.data(secret.encode()) == MASK.encode()
    assert masker.value({"k": [secret, (b"x" + secret.encode(),)], secret: 1}) == {
        "k": [MASK, (b"x" + MASK.encode(),)],
        MASK: 1,
    }
    assert secret not in repr(masker) and not Masker() and Masker().text(secret) == secret


def test_a_short_secret_is_masked_only_where_it_stands_alone() -> None:
    masker = Masker.of("ab1")
    assert masker.text("ab1 and cab12 and (ab1)") == f"{MASK} and cab12 and ({MASK})"
    assert Masker.of("longer-one").text("xlonger-onex") == f"x{MASK}x"


def test_a_host_result_is_masked_in_all_it_reports() -> None:
    result = HostResult(
        "h",
        "127.0.0.1",
        Outcome.failed,
        error="s3cret-value in error",
        stdout=b"s3cret-value",
        stderr=b"x s3cret-value",
        details={"killed": ["sh -c s3cret-value"]},
    )
    masked = result.masked(Masker.of("s3cret-value"))
    assert "s3cret" not in repr(masked) and masked.stdout == MASK.encode()
    assert result.masked(Masker()) is result


def test_log_lines_mask_the_secrets_this_process_knows(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("provisor.test")
    logmask.remember("test", Masker.of("hunter2-hunter2"))
    try:
        with caplog.at_level(logging.INFO):
            log.info("password is %s", "hunter2-hunter2")
            try:
                raise ValueError("bad hunter2-hunter2")
            except ValueError:
                log.exception("failed")
        text = caplog.text + "".join(r.getMessage() for r in caplog.records)
        assert "hunter2" not in text and text.count(MASK) >= 2
    finally:
        logmask.forget("test")
    with caplog.at_level(logging.INFO):
        log.info("forgotten: %s", "hunter2-hunter2")
    assert caplog.records[-1].getMessage() == "forgotten: hunter2-hunter2"


# `provisor up -p`


def read(
    items: list[str], secret_names: Sequence[str] = (), **kw: object
) -> tuple[dict[str, str], list[str]]:
    warnings: list[str] = []
    kw.setdefault("interactive", False)
    kw.setdefault("environ", {})
    values = read_parameters(items, list(secret_names), warn=warnings.append, **kw)  # type: ignore[arg-type]
    return values, warnings


def test_values_from_a_file_and_from_standard_input(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"from file\n")
    values, warnings = read(
        ["db_password=@" + str(tmp_path / "pw"), "api_key=-", "greeting=@@home", "n= 3 "],
        ["db_password", "api_key"],
        stdin=io.BytesIO(b"from stdin\r\n"),
    )
    assert values == {
        "db_password": "from file",
        "api_key": "from stdin",
        "greeting": "@home",
        "n": "3",
    }
    assert warnings == []


def test_values_left_out_come_from_the_environment() -> None:
    environ = {
        "PROVISOR_INPUT_DB_PASSWORD": "from env",
        "PROVISOR_INPUT_SIZE": "env size",
        "PROVISOR_INPUT_OTHER": "another blueprint's",
        "PROVISOR_INPUTS": "not an input",
        "PROVISOR_PARAM_URL": "the machine channel's",
        "HOME": "/root",
    }
    declared = ["db_password", "size"]
    values, warnings = read(["size=3"], ["db_password"], environ=environ, declared=declared)
    assert values == {"size": "3", "db_password": "from env"}  # -p wins; others left alone
    assert warnings == []
    # A blueprint only the server knows: every PROVISOR_INPUT_* goes, for it to check.
    values, _ = read([], environ=environ)
    assert values == {"db_password": "from env", "size": "env size", "other": "another blueprint's"}
    with pytest.raises(InvalidInput, match=r"\$PROVISOR_INPUT_BIG holds more than"):
        read([], environ={"PROVISOR_INPUT_BIG": "x" * (MAX_VALUE + 1)})


def test_a_secret_on_the_command_line_is_warned_about() -> None:
    values, warnings = read(["db_password=hunter2", "greeting=hi"], ["db_password"])
    assert values == {"db_password": "hunter2", "greeting": "hi"}
    assert len(warnings) == 1 and "db_password" in warnings[0] and "ps" in warnings[0]
    assert "hunter2" not in warnings[0]


def test_what_cannot_be_read_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InvalidInput, match=f"cannot read {missing} for parameter pw: No such"):
        read([f"pw=@{missing}"])
    with pytest.raises(InvalidInput, match="standard input is read once"):
        read(["a=-", "b=-"], stdin=io.BytesIO(b"x"))
    (tmp_path / "big").write_bytes(b"x" * (MAX_VALUE + 1))
    with pytest.raises(InvalidInput, match=f"{tmp_path / 'big'} holds more than"):
        read([f"pw=@{tmp_path / 'big'}"])
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidInput, match="is not UTF-8 text") as caught:
        read([f"pw=@{tmp_path / 'bin'}"])
    assert caught.value.field == "param.pw"
    with pytest.raises(InvalidInput, match="expected NAME=VALUE"):
        read(["pw"])


def test_a_missing_secret_is_asked_for_on_a_terminal_only() -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "typed"

    values, _ = read(["greeting=hi"], ["db_password", "api_key"], interactive=True, ask=ask)
    assert values == {"greeting": "hi", "db_password": "typed", "api_key": "typed"}
    assert asked == ["db_password (secret, not shown): ", "api_key (secret, not shown): "]
    values, _ = read([], ["db_password"], interactive=False, ask=ask)
    assert values == {} and len(asked) == 2  # left to the blueprint's check: "missing"


def test_events_mask_the_secrets_this_process_holds(ctx: Context) -> None:
    """An error quoting a secret (a provider's answer, a machine's output) is recorded
    with the secret masked, whoever records it."""
    logmask.remember("test", Masker.of("provider-s3cret-key"))
    try:
        with pytest.raises(InvalidInput), audited(ctx, "provider.checked", "aws") as (_, audit):
            audit.details = {"answer": ["denied for provider-s3cret-key"]}
            raise InvalidInput("signature of provider-s3cret-key refused")
    finally:
        logmask.forget("test")
    (event,) = list_events(ctx)
    assert event.outcome == "failed" and "s3cret" not in json.dumps(event.details)
    assert event.details == {
        "answer": [f"denied for {MASK}"],
        "error": f"signature of {MASK} refused",
    }
