"""Backup stores: add, list, check and remove where a tenant's backups go.

`local` is built in (under the data directory). A store's secret (an S3 secret access
key) is sealed before it reaches the database and never shown; a `directory` store names
a path on the server, so only the data directory's owner may add one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.core.names import check_name
from provisor.services.backups import BUILT_IN_STORE
from provisor.services.context import Context, audited
from provisor.store.backups import Backup, BackupStoreConfig

_MAX_NAME = 64


class StoreView(BaseModel):
    name: str
    kind: str
    settings: dict[str, Any]
    has_secret: bool
    created_by: str | None


def _store_view(row: BackupStoreConfig) -> StoreView:
    return StoreView(
        name=row.name,
        kind=row.kind,
        settings=dict(row.settings),
        has_secret=row.secret is not None,
        created_by=row.created_by,
    )


def add_store(
    ctx: Context, name: str, kind: str, settings: dict[str, Any], secret: str | None
) -> StoreView:
    """Configure a store under a name; its secret (if any) is stored sealed."""
    from provisor.backups import registry

    ctx.require(Action.backups_manage)
    check_name(name, field="name")
    if len(name) > _MAX_NAME:
        raise InvalidInput(f"a store name has at most {_MAX_NAME} characters", field="name")
    if name.lower() == BUILT_IN_STORE:
        raise Conflict(f"{name!r} is the built-in store's name; pick another", field="name")
    if kind == "directory" and not ctx.is_local:
        raise InvalidInput(
            "a directory store names a path on the server: only its local owner may add one",
            field="type",
        )
    checked = registry.check_settings(kind, settings)
    if secret is not None and not secret.strip():
        raise InvalidInput("the secret access key is empty", field="secret_access_key")
    if kind == "s3" and (checked.get("access_key_id") is None) != (secret is None):
        raise InvalidInput(
            "give an access key id and its secret access key (PROVISOR_SECRET_ACCESS_KEY) "
            "together, or neither to use boto3's own credentials",
            field="secret_access_key",
        )
    if kind != "s3" and secret is not None:
        raise InvalidInput(f"a {kind} store takes no secret", field="secret_access_key")
    with audited(ctx, "backup.store_added", name) as (session, audit):
        audit.details = {"kind": kind, "settings": checked, "has_secret": secret is not None}
        existing = session.scalar(
            select(BackupStoreConfig.id).where(
                BackupStoreConfig.tenant_id == ctx.tenant_id(), BackupStoreConfig.name == name
            )
        )
        if existing is not None:
            raise Conflict(f"a backup store named {name!r} already exists", field="name")
        from provisor.orchestrator import secrets  # asyncssh: loaded when needed

        row = BackupStoreConfig(
            tenant_id=ctx.tenant_id(),
            name=name,
            kind=kind,
            settings=checked,
            secret=secrets.seal_given(ctx.home, secret),
            created_by=ctx.actor,
        )
        session.add(row)
        session.flush()
        return _store_view(row)


def list_stores(ctx: Context) -> list[StoreView]:
    ctx.require(Action.backups_read)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(BackupStoreConfig)
            .where(BackupStoreConfig.tenant_id == ctx.tenant_id())
            .order_by(BackupStoreConfig.name)
        )
        local = StoreView(
            name=BUILT_IN_STORE, kind="local", settings={}, has_secret=False, created_by=None
        )
        return [local, *(_store_view(r) for r in rows)]


def remove_store(ctx: Context, name: str) -> None:
    """Forget a store; refused while backups are kept there."""
    ctx.require(Action.backups_manage)
    if name == BUILT_IN_STORE:
        raise Conflict("the built-in store local cannot be removed", field="name")
    with audited(ctx, "backup.store_removed", name) as (session, _audit):
        row = session.scalar(
            select(BackupStoreConfig).where(
                BackupStoreConfig.tenant_id == ctx.tenant_id(), BackupStoreConfig.name == name
            )
        )
        if row is None:
            raise NotFound(f"no backup store named {name!r}", field="name")
        kept = session.scalar(
            select(Backup.id).where(Backup.tenant_id == row.tenant_id, Backup.store == name)
        )
        if kept is not None:
            raise Conflict(f"backups are kept in store {name!r}: delete them first", field="name")
        session.delete(row)


async def check_store(ctx: Context, name: str) -> str:
    """Reach the store with its credentials: a one-line description, or a StoreError."""
    from provisor.orchestrator.backup_store import close_store, open_store

    ctx.require(Action.backups_read)
    store = await asyncio.to_thread(open_store, ctx.store, ctx.home, ctx.tenant_id(), name)
    try:
        return await asyncio.to_thread(store.check)
    finally:
        await asyncio.to_thread(close_store, store)


__all__ = ["StoreView", "add_store", "check_store", "list_stores", "remove_store"]
