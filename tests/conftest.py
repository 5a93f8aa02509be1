"""Shared fixtures: a store on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ec2_fixtures import moto, moto_server  # noqa: F401 (EC2 fixtures: moto_server, proxy)
from machines_needed import IN_CI
from provisor.services.context import Context
from provisor.store import Base, Store
from provisor_cli import Provisor

# The `testbed` fixture: real SSH hosts (provisor.testing is not part of the product).
pytest_plugins = ["provisor.testing.pytest_plugin"]

POSTGRES_ADMIN_URL = os.environ.get(
    "PROVISOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _unavailable(reason: str) -> None:
    """Skip a test for a missing service, except in CI where that is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests may not be skipped for a missing service)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    name = f"provisor_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        _unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store on each backend."""
    if request.param == "sqlite":
        opened = Store(f"sqlite:///{tmp_path / 'provisor.db'}")
        yield opened
        opened.close()
        return
    opened = Store(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with opened.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        opened.close()


@pytest.fixture
def ctx(store: Store) -> Context:
    return Context(store=store, actor="tester", tenant="default")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private PROVISOR_HOME for CLI and settings tests."""
    path = tmp_path / "home"
    monkeypatch.setenv("PROVISOR_HOME", str(path))
    monkeypatch.delenv("PROVISOR_DATABASE_URL", raising=False)
    monkeypatch.delenv("PROVISOR_CONFIG", raising=False)
    monkeypatch.delenv("PROVISOR_TENANT", raising=False)
    from provisor.settings import get_settings

    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.fixture
def provisor(tmp_path: Path) -> Iterator[Provisor]:
    """The CLI in a private PROVISOR_HOME; its deployments are removed afterwards, and
    the background worker stopped (no process outlives the test)."""
    cli = Provisor(tmp_path / "home")
    yield cli
    listed = cli("deployments", "list", "--output", "json", check=False)
    if listed.returncode == 0:
        for deployment in json.loads(listed.stdout):
            cli("down", deployment["name"], check=False)
    if (cli.home / "worker-supervisor.lock").exists() or (cli.home / "worker.lock").exists():
        cli("worker", "stop", check=False)
