"""Files sent to the server for jobs to copy to hosts.

Over the API a copy names no file of the server: the caller uploads each file first
(its content, with a plain name), then copies it by id. An upload is the tenant's,
capped in size (each, and all of a tenant's together), kept under the data directory
by its random id, and gone after a day.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.files import private_dir, write_private
from provisor.services.context import Context, audited
from provisor.store.identity import Upload

MAX_UPLOAD = 64 * 1024 * 1024  # bytes of one file
MAX_TENANT = 1024 * 1024 * 1024  # bytes of all of a tenant's uploads at once
LIFETIME = timedelta(days=1)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class UploadView(BaseModel):
    id: str
    name: str
    size: int
    sha256: str
    created_by: str
    created_at: datetime
    expires_at: datetime


def _directory(ctx: Context, upload_id: str) -> Path:
    return ctx.home / "uploads" / str(ctx.tenant_id()) / upload_id


def _check_name(name: str) -> str:
    """A file name and nothing more: it becomes the file's name on the hosts."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid file name {name[:60]!r}: letters, digits, '.', '_' or '-', not "
            "starting with '.' or '-' (at most 128); a name, never a path",
            field="name",
        )
    return name


def _view(row: Upload) -> UploadView:
    return UploadView.model_validate(row, from_attributes=True)


def _forget_expired(ctx: Context, session: Session, now: datetime) -> None:
    expired = session.scalars(
        select(Upload).where(Upload.tenant_id == ctx.tenant_id(), Upload.expires_at <= now)
    ).all()
    for row in expired:
        shutil.rmtree(_directory(ctx, row.id), ignore_errors=True)
        session.delete(row)


def add_upload(ctx: Context, name: str, data: bytes) -> UploadView:
    """Keep `data` as the file `name` for the tenant's jobs to copy, for a day."""
    ctx.require(Action.jobs_run, name)
    _check_name(name)
    if len(data) > MAX_UPLOAD:
        raise InvalidInput(f"a file is at most {MAX_UPLOAD:,} bytes", field="body")
    now = datetime.now(UTC)
    with audited(ctx, "upload.added", name) as (session, audit):
        _forget_expired(ctx, session, now)
        held = session.scalar(
            select(func.coalesce(func.sum(Upload.size), 0)).where(
                Upload.tenant_id == ctx.tenant_id()
            )
        )
        if int(held or 0) + len(data) > MAX_TENANT:
            raise Conflict(
                f"the tenant's uploads would pass {MAX_TENANT:,} bytes: delete some first",
                field="body",
            )
        row = Upload(
            id=secrets.token_hex(16),
            tenant_id=ctx.tenant_id(),
            name=name,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_by=ctx.actor,
            created_at=now,
            expires_at=now + LIFETIME,
        )
        write_private(private_dir(_directory(ctx, row.id)) / name, data)
        session.add(row)
        session.flush()
        audit.details = {"upload": row.id, "size": row.size, "sha256": row.sha256}
        return _view(row)


def list_uploads(ctx: Context) -> list[UploadView]:
    ctx.require(Action.jobs_read)
    now = datetime.now(UTC)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(Upload)
            .where(Upload.tenant_id == ctx.tenant_id(), Upload.expires_at > now)
            .order_by(Upload.created_at)
        )
        return [_view(row) for row in rows]


def remove_upload(ctx: Context, upload_id: str) -> None:
    ctx.require(Action.jobs_run, upload_id)
    with audited(ctx, "upload.removed", upload_id) as (session, _):
        row = session.get(Upload, upload_id)
        if row is None or row.tenant_id != ctx.tenant_id():
            raise NotFound(f"no upload {upload_id[:40]!r}", field="id")
        shutil.rmtree(_directory(ctx, row.id), ignore_errors=True)
        session.delete(row)


def files(ctx: Context, upload_ids: list[str]) -> list[str]:
    """The files on disk of the tenant's uploads `upload_ids` (for a copy job)."""
    now = datetime.now(UTC)
    with ctx.store.session() as session:
        found = []
        for upload_id in upload_ids:
            row = session.get(Upload, upload_id)
            if row is None or row.tenant_id != ctx.tenant_id() or row.expires_at <= now:
                raise NotFound(
                    f"no upload {upload_id[:40]!r} (uploads are kept for a day)",
                    field="uploads",
                )
            found.append(str(_directory(ctx, row.id) / row.name))
        return found


__all__ = [
    "LIFETIME",
    "MAX_TENANT",
    "MAX_UPLOAD",
    "UploadView",
    "add_upload",
    "files",
    "list_uploads",
    "remove_upload",
]
