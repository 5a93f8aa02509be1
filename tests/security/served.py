"""The provisor server a security test talks to: its address, data directory, store and
users of each role in each tenant."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api_access import token_for
from provisor.services.context import Context
from provisor.store import Store
from servers import start_server

__all__ = ["Server", "start_server"]


@dataclass
class Server:
    url: str
    home: Path
    store: Store
    process: subprocess.Popen[bytes]
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str, tenant: str = "alpha") -> str:
        """A token of a user with `role` in `tenant` (one user per role and tenant)."""
        key = (role, tenant)
        if key not in self.tokens:
            self.tokens[key] = token_for(
                self.store, f"{role}-{tenant}", role=role, tenants=(tenant,), home=self.home
            )
        return self.tokens[key]

    def client(self, role: str | None = "admin", tenant: str = "alpha") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(role, tenant)}"} if role else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60)

    def owner(self, tenant: str = "alpha") -> Context:
        """The data directory's owner (what the local CLI is), acting in `tenant`."""
        return Context(store=self.store, actor="owner", tenant=tenant, home=self.home)
