"""The server's own state: is the store answering, which database, which version."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import text

from provisor import __version__
from provisor.services.context import Settings, Store
from provisor.services.jobs import JobRunner


class PoolStats(BaseModel):
    connections: int = Field(description="SSH connections open and ready for the next job")
    handshakes: int = Field(description="SSH handshakes made since the server started")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    pool: PoolStats
    jobs_in_memory: int = Field(
        default=0,
        description="jobs whose results the server holds for followers: the running ones "
        "and those finished within job_live_seconds (the rest are read from the database)",
    )


def health(store: Store, runner: JobRunner, jobs_in_memory: int = 0) -> Health:
    """Answers only when the database does (a query, not a cached flag). Asked without a
    token, so it tells nothing of any tenant."""
    with store.session() as session:
        session.execute(text("SELECT 1"))
    return Health(
        status="ok",
        version=__version__,
        database=store.engine.dialect.name,
        pool=PoolStats(connections=runner.connections, handshakes=runner.handshakes),
        jobs_in_memory=jobs_in_memory,
    )


def server_certificate(settings: Settings, names: list[str]) -> tuple[Path, Path, str]:
    """A self-signed certificate for the API server under `names`: the file with its key
    (for the server), the certificate alone (for clients), and its SHA-256 fingerprint
    (for clients to check), all in the data directory."""
    from provisor.orchestrator import secrets

    return secrets.server_tls(settings.home, names)


__all__ = ["Health", "PoolStats", "health", "server_certificate"]
