"""Opening the database: engine, sessions, and migrations applied on first use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from provisor.core.errors import ProvisorError
from provisor.files import file_lock, keep_private, make_dirs, private_file

if TYPE_CHECKING:  # alembic is imported only when a migration has to run
    from alembic.config import Config

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 7_310_001  # PostgreSQL advisory lock key: one migrator at a time


class StoreUnavailable(ProvisorError):
    status = 503


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a killed process
    # loses nothing; only a power cut may lose the last commits, never consistency
    # (and the orchestrator finds a launch whose record was lost by its token).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_file(engine: Engine) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def _private_sqlite(path: Path) -> None:
    """The database file exists, 0600, before SQLite opens it: SQLite would make it
    0644 (less the umask), and it gives the -wal and -shm files the database's mode."""
    make_dirs(path.parent)
    if path.exists():
        # Only chmod, never open and close it: closing any descriptor of the file drops
        # the POSIX locks this process's SQLite connections hold on it (a second Store of
        # one database in a process, as a worker has), and another process may then take
        # the WAL from under them: "disk I/O error".
        keep_private(path)
    else:
        private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):  # an older install's, made 0644
        keep_private(path.with_name(path.name + suffix))


def create_store_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ProvisorError(f"invalid database URL: {exc}", field="database_url") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite(Path(parsed.database))
        engine = create_engine(parsed, connect_args={"timeout": 10})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]?([\w]+)?['\"]?", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration, read from the migration files without importing alembic.

    Opening the store happens on every CLI call; alembic costs a noticeable
    fraction of a second to import, so it is loaded only to actually migrate.
    """
    revisions: dict[str, str | None] = {}
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        found: dict[str, str | None] = {
            m.group(1): m.group(2) for m in _REVISION.finditer(path.read_text())
        }
        revision, parent = found.get("revision"), found.get("down_revision")
        if revision:
            revisions[revision] = None if parent in (None, "None") else parent
    parents = {p for p in revisions.values() if p}
    heads = [r for r in revisions if r not in parents]
    if len(heads) > 1:
        raise ProvisorError(f"migrations have several heads: {', '.join(sorted(heads))}")
    return heads[0] if heads else None


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError) as exc:
        if "alembic_version" in str(exc):
            return None  # a new, empty database
        raise


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is there."""
    head = head_revision()
    try:
        if current_revision(engine) == head:
            return
        from alembic import command

        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
                try:
                    config = _alembic_config(engine)
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    connection.commit()
                finally:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK}
                    )
                    connection.commit()
        else:
            path = _sqlite_file(engine)
            # One migrator at a time: two processes opening a new database at once
            # would both create its tables, and one would fail.
            with file_lock(path.with_name(path.name + ".lock")) if path else nullcontext():
                if current_revision(engine) != head:  # the other may have done it
                    command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise StoreUnavailable(
            f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}",
            field="database_url",
        ) from None


class Store:
    """One database: an engine plus a session factory, migrated on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
