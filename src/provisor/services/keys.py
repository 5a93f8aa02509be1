"""SSH keys a tenant's jobs log in with, stored by name and sealed at rest.

Over the API nothing names a file on the server, so a host's credentials there are
`key:NAME`: a key uploaded here. The local CLI may still write `key:/path/to/file`, a
file on its own computer. The private half never leaves the store again: views show
the public key and its fingerprint.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.services.context import Context, audited
from provisor.store.identity import SshKey

MAX_KEY = 64 * 1024  # characters of a private key in OpenSSH or PEM form
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KeyView(BaseModel):
    name: str
    public_key: str
    fingerprint: str
    created_at: datetime


def is_stored_reference(credentials: str | None) -> bool:
    """`key:NAME` (a stored key) rather than `key:/path` (a file on this computer)."""
    return bool(credentials and credentials.startswith("key:") and "/" not in credentials)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid key name {name[:40]!r}: letters, digits, '.', '_' or '-' (at most 128)",
            field="name",
        )
    return name


def _public(private_key: str) -> tuple[str, str]:
    """(public key line, fingerprint) of a private key, or a clear error; never echoes it."""
    from provisor._asyncssh import asyncssh

    if len(private_key) > MAX_KEY:
        raise InvalidInput(f"a private key is at most {MAX_KEY:,} characters", field="private_key")
    try:
        key = asyncssh.import_private_key(private_key)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise InvalidInput(
            "not an unencrypted private key in OpenSSH or PEM form", field="private_key"
        ) from None
    public = key.export_public_key("openssh").decode().strip()
    return public, key.get_fingerprint()


def _view(row: SshKey) -> KeyView:
    from provisor._asyncssh import asyncssh

    fingerprint = asyncssh.import_public_key(row.public_key).get_fingerprint()
    return KeyView(
        name=row.name, public_key=row.public_key, fingerprint=fingerprint, created_at=row.created_at
    )


def _find(session: Session, ctx: Context, name: str) -> SshKey:
    row = session.scalar(
        select(SshKey).where(SshKey.tenant_id == ctx.tenant_id(), SshKey.name == name)
    )
    if row is None:
        raise NotFound(f"no SSH key named {name!r}", field="name")
    return row


def add_key(ctx: Context, name: str, private_key: str) -> KeyView:
    """Store a private key under `name`, sealed."""
    from provisor.orchestrator import secrets  # cryptography: loaded when needed

    ctx.require(Action.inventory_write, name)
    _check_name(name)
    public, fingerprint = _public(private_key)
    with audited(ctx, "key.added", name) as (session, audit):
        taken = session.scalar(
            select(SshKey.id).where(SshKey.tenant_id == ctx.tenant_id(), SshKey.name == name)
        )
        if taken is not None:
            raise Conflict(f"an SSH key named {name!r} exists", field="name")
        row = SshKey(
            tenant_id=ctx.tenant_id(),
            name=name,
            private_key=secrets.seal(ctx.home, private_key),
            public_key=public,
        )
        session.add(row)
        session.flush()
        audit.details = {"fingerprint": fingerprint}
        return _view(row)


def list_keys(ctx: Context) -> list[KeyView]:
    ctx.require(Action.inventory_read)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(SshKey).where(SshKey.tenant_id == ctx.tenant_id()).order_by(SshKey.name)
        )
        return [_view(row) for row in rows]


def remove_key(ctx: Context, name: str) -> None:
    ctx.require(Action.inventory_write, name)
    with audited(ctx, "key.removed", name) as (session, _):
        session.delete(_find(session, ctx, name))


def private_keys(session: Session, ctx: Context, names: set[str]) -> dict[str, str]:
    """The unsealed private keys of `names` in the caller's tenant (for a job's run)."""
    if not names:
        return {}
    from provisor.orchestrator import secrets  # cryptography: loaded when needed

    rows = session.scalars(
        select(SshKey).where(SshKey.tenant_id == ctx.tenant_id(), SshKey.name.in_(names))
    )
    return {row.name: secrets.unseal(ctx.home, row.private_key) for row in rows}


__all__ = [
    "KeyView",
    "add_key",
    "is_stored_reference",
    "list_keys",
    "private_keys",
    "remove_key",
]
