"""How a fleet job reaches its hosts, and how many at once (pssh's flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisor.core.errors import InvalidInput


@dataclass
class FleetOptions:
    parallel: int = 64
    connect_timeout: float = 10.0
    user: str | None = None  # -l: for hosts that do not name their own user
    identity: str | None = None  # -i: private key for hosts without credentials
    password: str | None = None  # -A: asked once, used for every host (and sudo)
    out_dir: Path | None = None  # -o: one stdout file per host
    err_dir: Path | None = None  # -e: one stderr file per host

    def check(self) -> None:
        if not 1 <= self.parallel <= 10_000:
            raise InvalidInput("parallel must be between 1 and 10000", field="parallel")
        if not 0 < self.connect_timeout <= 3600:
            raise InvalidInput(
                "connect timeout must be between 0 and 3600 seconds", field="connect-timeout"
            )
