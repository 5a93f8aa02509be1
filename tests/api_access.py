"""Calling the API as a real user would: a user with a role, and a token for them."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from provisor.api import create_app
from provisor.services import identity
from provisor.services.context import Context
from provisor.settings import Settings
from provisor.store import Store


def token_for(
    store: Store,
    user: str = "admin",
    *,
    role: str = "admin",
    tenants: tuple[str, ...] = ("default",),
    home: Path | None = None,
) -> str:
    """A token of `user`, who holds `role` in each of `tenants` (made by the data
    directory's owner, as `provisor users add` and `provisor tokens add` do)."""
    owner = Context(
        store=store, actor="owner", tenant=tenants[0], **({"home": home} if home else {})
    )
    for tenant in tenants:
        identity.grant(owner, user, tenant=tenant, role=role)
    return identity.add_token(owner, user, tenant=tenants[0]).secret


def api_client(settings: Settings, token: str | None) -> TestClient:
    """The application in-process, answering to TestClient's host, with `token` sent."""
    settings = settings.model_copy(update={"allowed_hosts": "testserver"})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(settings), headers=headers)
