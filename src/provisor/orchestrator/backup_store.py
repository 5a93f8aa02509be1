"""A tenant's backup store by name (`local`, or one it configured), its secret unsealed
just before the store object is built; and what backups share: the data key, events."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisor import logmask
from provisor.backups import registry
from provisor.backups.store import BackupStore
from provisor.core.errors import NotFound
from provisor.core.masking import Masker
from provisor.events import record_event
from provisor.orchestrator import secrets
from provisor.store import Store
from provisor.store.backups import Backup, BackupStoreConfig
from provisor.store.models import Tenant


def open_store(store: Store, home: Path, tenant_id: int, name: str) -> BackupStore:
    """The store a backup names; NotFound for a name the tenant has not configured."""
    if name == registry.BUILT_IN:
        return registry.build(
            registry.BUILT_IN, name, {}, None, root=registry.local_root(home, tenant_id)
        )
    with store.session() as session:
        row = session.scalar(
            select(BackupStoreConfig).where(
                BackupStoreConfig.tenant_id == tenant_id, BackupStoreConfig.name == name
            )
        )
        if row is None:
            raise NotFound(
                f"no backup store named {name!r}: `provisor backup stores list` shows them",
                field="store",
            )
        kind, settings, sealed = row.kind, dict(row.settings), row.secret
    secret = None if sealed is None else secrets.unseal(home, sealed)
    if secret:  # masked in this process's log lines (an SDK error may quote it)
        logmask.remember(f"backup-store:{tenant_id}:{name}", Masker.of(secret))
    return registry.build(kind, name, settings, secret, root=registry.local_root(home, tenant_id))


def close_store(store: BackupStore) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


def new_sealed_key(home: Path) -> tuple[bytes, str]:
    """A fresh data key and the same sealed with provisor's sealing key."""
    from provisor.backups.crypto import new_data_key

    key = new_data_key()
    return key, secrets.seal(home, base64.b64encode(key).decode())


def data_key(home: Path, backup: Backup) -> bytes:
    return base64.b64decode(secrets.unseal(home, backup.data_key))


def object_key(backup: Backup, name: str) -> str:
    return f"{backup.instance}/{backup.machine}/{backup.backup_id}/{name}"


def incident(backup: Backup) -> str:
    return f"backup:{backup.instance}:{backup.machine}"


def backup_event(
    session: Session,
    backup: Backup,
    kind: str,
    *,
    severity: str,
    actor: str = "orchestrator",
    outcome: str = "ok",
    incident_state: str | None = None,
    **more: Any,
) -> None:
    """An event about a backup, with what the Day-2 event contract asks for."""
    tenant = session.get(Tenant, backup.tenant_id)
    details: dict[str, Any] = {
        "severity": severity,
        "deployment": backup.deployment,
        "instance": backup.instance,
        "node": backup.node,
        "machine": backup.machine,
        "backup": backup.backup_id,
        "store": backup.store,
        **more,
    }
    if incident_state is not None:
        details["incident"] = incident(backup)
        details["incident_state"] = incident_state
    record_event(
        session,
        actor=actor,
        tenant=tenant.name if tenant else "default",
        kind=kind,
        subject=f"{backup.deployment}/{backup.machine}",
        outcome=outcome,
        details=details,
    )
