"""Which store kinds exist, how their settings are checked and how one is built.

`local` is built in: a directory under the data directory, one folder per tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisor.backups.store import BackupStore
from provisor.core.errors import InvalidInput

BUILT_IN = "local"
KINDS = ("s3", "directory")  # kinds an operator adds with `provisor backup stores add`


def local_root(home: Path, tenant_id: int) -> Path:
    return home / "backups" / str(tenant_id)


def check_settings(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings, validated and with defaults filled in; InvalidInput names the field."""
    if kind == "s3":
        from provisor.backups.s3_store import S3Settings

        return S3Settings.parse(settings).model_dump()
    if kind == "directory":
        path = settings.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidInput("a directory store needs an absolute --path", field="path")
        if set(settings) - {"path"}:
            raise InvalidInput("a directory store takes only a path", field="settings")
        return {"path": path}
    raise InvalidInput(f"unknown store type {kind!r}: use {', '.join(KINDS)}", field="type")


def build(
    kind: str, name: str, settings: Mapping[str, Any], secret: str | None, *, root: Path
) -> BackupStore:
    """A store object; `root` is where the built-in local store keeps the tenant's."""
    if kind == BUILT_IN:
        from provisor.backups.local_store import DirectoryStore

        return DirectoryStore(name, root)
    if kind == "directory":
        from provisor.backups.local_store import DirectoryStore

        return DirectoryStore(name, Path(settings["path"]))
    if kind == "s3":
        from provisor.backups.s3_store import S3Settings, S3Store

        return S3Store(name, S3Settings.parse(settings), secret)
    raise InvalidInput(f"unknown store type {kind!r}", field="type")
