"""A command imports only what it needs: the CLI's start time, guarded without a clock.

Every `provisor` call pays for its imports before it does anything (typer, rich and
pydantic cost tens of milliseconds each; SQLAlchemy, asyncssh, DBOS, FastAPI and boto3
hundreds). Each case runs the real CLI in a fresh process and lists the libraries and
command modules it loaded: one eager import added anywhere on a command's path fails
here. bench/startup.py measures the times these choices give.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from cli_modules import modules_loaded
from provisor.cli import app
from provisor.cli._root import COMMANDS, load

SERVER_SIDE = {"dbos", "fastapi", "uvicorn", "starlette", "boto3", "botocore", "alembic"}
STORE = {"sqlalchemy", "pydantic_settings"}
SSH = {"asyncssh", "cryptography"}
COMMAND_MODULES = {f"provisor.cli.{entry.module}" for entry in COMMANDS.values()}


def loaded(home: Path, *args: str) -> set[str]:
    """The modules `provisor ARGS` imported, top-level packages and provisor's own."""
    done, names = modules_loaded(home, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return {n for n in names if n.startswith("provisor.")} | {n.split(".")[0] for n in names}


@pytest.fixture(scope="module")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose (empty) store exists: the first call migrates it."""
    home = tmp_path_factory.mktemp("startup") / "home"
    loaded(home, "hosts", "list")
    return home


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("option", ["--version", "-V"])
def test_the_version_loads_no_library(tmp_path: Path, option: str) -> None:
    found = loaded(tmp_path / "home", option)
    assert found & {"typer", "rich", "pydantic", *STORE, *SSH} == set()
    assert found & {"provisor.cli._root", *COMMAND_MODULES} == set()


def test_the_root_help_loads_no_command(tmp_path: Path) -> None:
    done, names = modules_loaded(tmp_path / "home", "--help")
    found = {n.split(".")[0] for n in names} | {n for n in names if n.startswith("provisor.")}
    # rich's help rendering costs more than the rest of it: the root's help is plain text
    assert found & {"rich", "pydantic", *STORE, *SSH, *SERVER_SIDE} == set()
    assert found & COMMAND_MODULES == set()
    # Every command with its whole summary (click would cut a long one short with "...").
    shown = " ".join(done.stdout.split())
    for name, entry in COMMANDS.items():
        assert f"{name} {' '.join(entry.summary.split())}" in shown, name
    assert "..." not in shown.partition("Commands:")[2]


def test_every_help_text_shows_as_written() -> None:
    """A command's help is rich markup: a bracket that could open a tag (`NAME[@VERSION]`,
    `[user@]host`) is written escaped, or rich's help drops it with what it encloses."""
    from rich.text import Text

    def texts(command: Any, path: str) -> Iterator[tuple[str, str]]:
        yield path, command.help or ""
        for param in command.params:
            yield f"{path} {param.name}", getattr(param, "help", None) or ""
        for name, sub in getattr(command, "commands", {}).items():
            yield from texts(sub, f"{path} {name}")

    dropped = [
        (where, text)
        for name in COMMANDS
        for where, text in texts(load(name), name)
        if Text.from_markup(text).plain != text.replace("\\[", "[")
    ]
    assert dropped == []


def test_a_command_help_loads_that_command_only(tmp_path: Path) -> None:
    found = loaded(tmp_path / "home", "hosts", "--help")
    assert "provisor.cli.hosts" in found
    assert found & (COMMAND_MODULES - {"provisor.cli.hosts"}) == set()
    assert found & {*STORE, *SSH, *SERVER_SIDE} == set()


def test_listing_hosts_loads_no_ssh_and_no_server(store_home: Path) -> None:
    found = loaded(store_home, "hosts", "list")
    assert "sqlalchemy" in found  # it did read the store
    assert found & {*SSH, *SERVER_SIDE, "re2", "yaml"} == set()
    # the tables of other commands (alerts, backups, deployments...) stay unloaded
    assert {n for n in found if n.startswith("provisor.store.")} == {
        "provisor.store.db",
        "provisor.store.models",
    }


def test_run_loads_ssh_but_nothing_of_the_server(store_home: Path, refusing_port: int) -> None:
    found = loaded(store_home, "run", f"127.0.0.1:{refusing_port}", "--", "true")
    assert "asyncssh" in found  # it did try to connect
    assert found & {*SERVER_SIDE, "httpx", "yaml"} == set()


def test_the_root_lists_each_command_with_its_own_summary() -> None:
    """The summaries the root's help shows without loading a command are the commands'
    own first paragraphs, as typer would show them had it loaded every one."""
    for name, entry in COMMANDS.items():
        command = load(name)
        assert command.name == name
        first = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        assert first.strip() == entry.summary, name


def test_command_names_and_sub_commands_complete() -> None:
    root = typer.main.get_command(app)
    ctx = root.make_context("provisor", [], resilient_parsing=True)
    completed = {item.value: item.help for item in root.shell_complete(ctx, "ho")}
    assert completed == {"hosts": "Manage the inventory of hosts."}
    ctx = root.make_context("provisor", ["hosts"], resilient_parsing=True)
    hosts = root.get_command(ctx, "hosts")
    assert hosts is not None
    sub = hosts.make_context("hosts", [], parent=ctx, resilient_parsing=True)
    assert [item.value for item in hosts.shell_complete(sub, "li")] == ["list"]
