"""The backup workflow: one durable DBOS workflow per backup of one machine.

pre-command (quiesce) → provider snapshot, and dumps (paths, commands) streamed to the
store → post-command (always, once the pre-command ran) → the snapshot's data copied to
the store → every stored object read back and compared → `backup.completed`, or
`backup.failed` (critical, with its incident) → retention prunes older backups.

The workflow id says what the run is, so a restart neither doubles nor misses one:
`backup:<deployment instance>:<machine>:<scheduled time>` for the scheduler,
`...:now-<uuid>` on demand, `...:final-<uuid>` before a deployment is removed. DBOS
answers a known id with that workflow. Every step is idempotent: the snapshot is named
by the backup (a provider returns the one it took), objects are written whole or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import shlex
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbos import DBOS
from sqlalchemy import select

from provisor.backups.store import BackupStore, StoreError, read_back
from provisor.core.blueprint import Blueprint, load_blueprint
from provisor.core.blueprint.backup import BackupPolicy, retention_delta
from provisor.core.errors import ProvisorError
from provisor.orchestrator import machine_ops
from provisor.orchestrator.backup_copy import (
    Copied,
    CopyError,
    copy_command_output,
    copy_file,
)
from provisor.orchestrator.backup_store import (
    backup_event,
    close_store,
    data_key,
    new_sealed_key,
    object_key,
    open_store,
)
from provisor.orchestrator.deploy import _boundary, machine_endpoint
from provisor.orchestrator.runtime import runtime
from provisor.providers.base import ProviderError
from provisor.store import Store
from provisor.store.backups import Backup, BackupObject
from provisor.store.orchestration import Deployment, Machine

COMMAND_TIMEOUT = 1800.0  # a pre- or post-command
DUMP_TIMEOUT = 6 * 3600.0  # one path archive or command dump
WORKFLOW = "backup_workflow"
QUEUE = "backups"
ACTIVE = ("ready", "failed")  # deployments whose machines may be backed up


class BackupFailed(Exception):
    """A step of a backup failed; the message says which and why."""


def policy_for(deployment: Deployment, node: str) -> BackupPolicy:
    """The node's policy in the deployed blueprint; the default (a disk snapshot to the
    local store, on demand only) for a node without one."""
    found = _blueprint(deployment.blueprint_text, deployment.blueprint).nodes.get(node)
    return (found.backup if found is not None else None) or BackupPolicy()


@functools.lru_cache(maxsize=256)
def _blueprint(text: str, source: str) -> Blueprint:
    """A deployed blueprint, parsed once (the scheduler asks every few seconds)."""
    return load_blueprint(text, source=source)


def _now() -> datetime:
    return datetime.now(UTC)


# Steps


@DBOS.step()
async def begin_step(request: dict[str, Any], workflow_id: str) -> dict[str, Any]:
    """Record the backup (once per workflow id); what the next steps need, or why not."""

    def begin() -> dict[str, Any]:
        rt = runtime()
        with rt.store.session() as session:
            known = session.scalar(select(Backup).where(Backup.workflow_id == workflow_id))
            if known is not None:
                return {"pk": known.id, "backup_id": known.backup_id}
            deployment = session.scalar(
                select(Deployment).where(Deployment.instance == request["instance"])
            )
            if deployment is None or deployment.state not in ACTIVE:
                state = deployment.state if deployment else "removed"
                return {"skipped": f"the deployment is {state}"}
            machine = next((m for m in deployment.machines if m.name == request["machine"]), None)
            if machine is None or machine.provider_id is None:
                return {"skipped": f"machine {request['machine']} is not launched"}
            policy = policy_for(deployment, machine.node)
            _key, sealed = new_sealed_key(rt.home)
            scheduled = request.get("scheduled_for")
            backup = Backup(
                backup_id=secrets.token_hex(6),
                tenant_id=deployment.tenant_id,
                deployment=deployment.name,
                instance=deployment.instance,
                machine=machine.name,
                node=machine.node,
                workflow_id=workflow_id,
                trigger=request.get("trigger", "manual"),
                scheduled_for=datetime.fromisoformat(scheduled) if scheduled else None,
                store=request.get("store") or policy.store,
                state="running",
                step="starting",
                data_key=sealed,
            )
            session.add(backup)
            session.flush()
            backup_event(session, backup, "backup.started", severity="info")
            return {"pk": backup.id, "backup_id": backup.backup_id}

    return await asyncio.to_thread(begin)


def _load(pk: int, step: str | None = None) -> tuple[Backup, Deployment, Machine, BackupPolicy]:
    with runtime().store.session() as session:
        backup = session.get(Backup, pk)
        assert backup is not None
        if step is not None:
            backup.step = step
        deployment = session.scalar(
            select(Deployment).where(Deployment.instance == backup.instance)
        )
        if deployment is None:
            raise BackupFailed(f"deployment {backup.deployment} was removed")
        machine = next((m for m in deployment.machines if m.name == backup.machine), None)
        if machine is None or machine.provider_id is None:
            raise BackupFailed(f"machine {backup.machine} is gone")
        policy = policy_for(deployment, machine.node)
        session.flush()
        session.expunge_all()
        return backup, deployment, machine, policy


@contextlib.asynccontextmanager
async def _store_of(backup: Backup) -> AsyncIterator[BackupStore]:
    rt = runtime()
    store = await asyncio.to_thread(open_store, rt.store, rt.home, backup.tenant_id, backup.store)
    try:
        yield store
    finally:
        await asyncio.to_thread(close_store, store)


def _record_object(pk: int, name: str, key: str, copied: Copied) -> None:
    with runtime().store.session() as session:
        backup = session.get(Backup, pk)
        assert backup is not None
        row = session.scalar(
            select(BackupObject).where(BackupObject.backup_pk == pk, BackupObject.name == name)
        )
        if row is None:
            row = BackupObject(backup_pk=pk, name=name, key=key)
            session.add(row)
        row.size, row.sha256 = copied.stored.size, copied.stored.sha256
        row.plain_size, row.plain_sha256 = copied.plain.size, copied.plain.sha256
        row.state = "good"
        session.flush()
        backup.size = sum(o.size for o in backup.objects)


async def _command(pk: int, label: str, deployment: Deployment, machine: Machine, cmd: str) -> None:
    rt = runtime()
    endpoint = machine_endpoint(deployment, machine)
    result = await machine_ops.run(
        rt.pool(deployment.tenant_id), endpoint, cmd, timeout=COMMAND_TIMEOUT
    )
    if not result.ok:
        detail = result.error or f"exit status {result.exit_code}"
        tail = result.text("stderr").strip().splitlines()[-3:]
        masker = await asyncio.to_thread(rt.masker, deployment)
        raise BackupFailed(
            masker.text(f"{label}-command failed ({detail})")
            + (f": {masker.text(' | '.join(tail))}" if tail else "")
        )


@DBOS.step()
async def capture_step(pk: int) -> dict[str, Any] | None:
    """pre → snapshot and dumps → post; the snapshot's id, location, size and SHA-256."""
    rt = runtime()
    backup, deployment, machine, policy = await asyncio.to_thread(_load, pk, "capturing")
    assert machine.provider_id is not None
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    if policy.pre:
        await _command(pk, "pre", deployment, machine, policy.pre)
    snapshot: dict[str, Any] | None = None
    try:
        if policy.disk:
            try:
                taken = await provider.snapshot(machine.provider_id, f"backup-{backup.backup_id}")
            except ProviderError as exc:
                raise BackupFailed(f"snapshot: {exc.message}") from None
            snapshot = {
                "id": taken.id,
                "location": taken.location,
                "size": taken.size,
                "sha256": taken.sha256,
            }
            await asyncio.to_thread(_set, pk, snapshot_id=taken.id)
        await _dumps(pk, backup, deployment, machine, policy)
    finally:
        if policy.post:
            await _command(pk, "post", deployment, machine, policy.post)
    return snapshot


async def _dumps(
    pk: int, backup: Backup, deployment: Deployment, machine: Machine, policy: BackupPolicy
) -> None:
    """The paths as one tar archive, and each command's output, streamed to the store."""
    if not policy.paths and not policy.commands:
        return
    rt = runtime()
    key = await asyncio.to_thread(data_key, rt.home, backup)
    connection = await rt.pool(deployment.tenant_id).connect(machine_endpoint(deployment, machine))
    dumps = []
    if policy.paths:
        quoted = " ".join(shlex.quote(p) for p in policy.paths)
        dumps.append(("paths.tar", f"tar --create --file=- --numeric-owner -- {quoted}"))
    dumps += [(f"command-{n}.out", c) for n, c in enumerate(policy.commands, start=1)]
    async with _store_of(backup) as store:
        for name, command in dumps:
            where = object_key(backup, name)
            try:
                copied = await copy_command_output(
                    store, where, key, connection, command, timeout=DUMP_TIMEOUT
                )
            except (CopyError, StoreError) as exc:
                masker = await asyncio.to_thread(rt.masker, deployment)
                raise BackupFailed(masker.text(f"dump {name}: {exc}")) from None
            await asyncio.to_thread(_record_object, pk, name, where, copied)


def _set(pk: int, **values: Any) -> None:
    with runtime().store.session() as session:
        backup = session.get(Backup, pk)
        assert backup is not None
        for name, value in values.items():
            setattr(backup, name, value)


@DBOS.step()
async def copy_step(pk: int, snapshot: dict[str, Any] | None) -> None:
    """The snapshot's archive into the store (providers whose snapshots are files)."""
    if snapshot is None:
        return
    rt = runtime()
    backup, _deployment, _machine, _policy = await asyncio.to_thread(_load, pk, "copying")
    location = Path(snapshot["location"])
    if not location.is_absolute() or not await asyncio.to_thread(location.is_file):
        return  # kept by the provider itself (a cloud snapshot): nothing to copy
    key = await asyncio.to_thread(data_key, rt.home, backup)
    where = object_key(backup, "disk.tar.gz")
    async with _store_of(backup) as store:
        try:
            copied = await asyncio.to_thread(copy_file, store, where, key, location)
        except (StoreError, OSError) as exc:
            raise BackupFailed(f"copy of the snapshot: {exc}") from None
    if copied.plain.sha256 != snapshot["sha256"] or copied.plain.size != snapshot["size"]:
        raise BackupFailed(
            f"the snapshot archive changed while it was copied (SHA-256 {copied.plain.sha256}, "
            f"{snapshot['sha256']} recorded by the provider)"
        )
    await asyncio.to_thread(_record_object, pk, "disk.tar.gz", where, copied)


def verify_objects(store: BackupStore, objects: list[BackupObject]) -> list[tuple[str, str]]:
    """Read every object back; (name, what is wrong) for each that is not as recorded."""
    wrong = []
    for row in objects:
        try:
            found = read_back(store, row.key)
        except StoreError as exc:
            wrong.append((row.name, exc.message))
            continue
        if found.sha256 != row.sha256 or found.size != row.size:
            wrong.append(
                (
                    row.name,
                    f"stored copy has SHA-256 {found.sha256} ({found.size} bytes), "
                    f"{row.sha256} ({row.size} bytes) was recorded",
                )
            )
    return wrong


@DBOS.step()
async def verify_step(pk: int) -> None:
    backup, _deployment, _machine, _policy = await asyncio.to_thread(_load, pk, "verifying")
    objects = await asyncio.to_thread(_objects, pk)
    if not objects:
        if backup.snapshot_id:  # a cloud snapshot, kept (and checked) by its provider
            return
        raise BackupFailed("nothing was stored")
    async with _store_of(backup) as store:
        wrong = await asyncio.to_thread(verify_objects, store, objects)
    if wrong:
        raise BackupFailed("read back, not as written: " + "; ".join(f"{n}: {w}" for n, w in wrong))


def _objects(pk: int) -> list[BackupObject]:
    with runtime().store.session() as session:
        rows = list(session.scalars(select(BackupObject).where(BackupObject.backup_pk == pk)))
        session.expunge_all()
        return rows


@DBOS.step()
async def finish_step(pk: int, error: str | None) -> str:
    """Good, or failed with `error`; its event; the provider's copy of a snapshot that
    now lives in the store is removed (the store keeps it)."""
    rt = runtime()

    def finish() -> tuple[str, str | None, str | None, int]:
        with rt.store.session() as session:
            backup = session.get(Backup, pk)
            assert backup is not None
            backup.finished_at = _now()
            backup.step = "done"
            if error is None:
                backup.state, backup.verified_at = "good", backup.finished_at
                for row in backup.objects:
                    row.verified_at = backup.finished_at
                backup_event(
                    session,
                    backup,
                    "backup.completed",
                    severity="info",
                    incident_state="resolved",
                    size=backup.size,
                    objects=len(backup.objects),
                )
            else:
                backup.state, backup.error = "failed", error[:4000]
                backup_event(
                    session,
                    backup,
                    "backup.failed",
                    severity="critical",
                    outcome="failed",
                    incident_state="open",
                    error=error[:4000],
                )
            stored = any(o.name == "disk.tar.gz" for o in backup.objects)
            return backup.state, backup.snapshot_id, backup.instance, int(stored)

    state, snapshot_id, instance, stored = await asyncio.to_thread(finish)
    if snapshot_id and (stored or state == "failed"):
        with contextlib.suppress(ProvisorError):
            deployment = await asyncio.to_thread(_deployment_of, rt.store, instance)
            if deployment is not None:
                provider = rt.provider(deployment.provider, deployment.tenant_id)
                await provider.delete_snapshot(snapshot_id)
    return state


def _deployment_of(store: Store, instance: str | None) -> Deployment | None:
    with store.session() as session:
        found = session.scalar(select(Deployment).where(Deployment.instance == instance))
        if found is not None:
            session.expunge(found)
        return found


@DBOS.step()
async def prune_step(pk: int) -> list[str]:
    """Retention: good backups of the machine beyond `keep` or older than `for` go (never
    the newest good one); the ids removed."""
    rt = runtime()
    backup, _deployment, _machine, policy = await asyncio.to_thread(_load, pk)
    if policy.keep is None and policy.keep_for is None:
        return []
    cutoff = _now() - retention_delta(policy.keep_for) if policy.keep_for else None

    def choose() -> list[Backup]:
        with rt.store.session() as session:
            good = list(
                session.scalars(
                    select(Backup)
                    .where(
                        Backup.instance == backup.instance,
                        Backup.machine == backup.machine,
                        Backup.state == "good",
                    )
                    .order_by(Backup.created_at.desc(), Backup.id.desc())
                )
            )
            going = [
                b
                for n, b in enumerate(good)
                if n > 0
                and (
                    (policy.keep is not None and n >= policy.keep)
                    or (cutoff is not None and b.created_at < cutoff)
                )
            ]
            for b in going:
                b.state = "deleting"
                for row in b.objects:
                    row.state = "deleting"
            session.flush()
            for b in going:
                _ = list(b.objects)
            session.expunge_all()
            return going

    going = await asyncio.to_thread(choose)
    for old in going:
        await delete_backup(rt.store, rt.home, old, actor="retention")
    return [b.backup_id for b in going]


async def delete_backup(store: Store, home: Path, backup: Backup, *, actor: str) -> None:
    """Remove a backup's stored objects, then its rows (marked `deleting` meanwhile: a
    crash half-way leaves it to be deleted again, never used)."""

    def mark() -> list[str]:
        with store.session() as session:
            row = session.get(Backup, backup.id)
            if row is None:
                return []
            row.state = "deleting"
            for item in row.objects:
                item.state = "deleting"
            return [item.key for item in row.objects]

    keys = await asyncio.to_thread(mark)
    if backup.snapshot_id and not any(k.endswith("/disk.tar.gz") for k in keys):
        await _delete_kept_snapshot(store, home, backup)
    opened = await asyncio.to_thread(open_store, store, home, backup.tenant_id, backup.store)
    try:
        for key in keys:
            await asyncio.to_thread(opened.delete, key)
    finally:
        await asyncio.to_thread(close_store, opened)

    def forget() -> None:
        with store.session() as session:
            row = session.get(Backup, backup.id)
            if row is None:
                return
            backup_event(session, row, "backup.deleted", severity="info", actor=actor)
            session.delete(row)

    await asyncio.to_thread(forget)


async def _delete_kept_snapshot(store: Store, home: Path, backup: Backup) -> None:
    """A snapshot its cloud provider keeps for the backup (never a local one: the store
    holds that), deleted with the backup while the deployment's provider is known."""
    from provisor.orchestrator.runtime import provider_for

    deployment = await asyncio.to_thread(_deployment_of, store, backup.instance)
    if deployment is None or deployment.provider == "local" or backup.snapshot_id is None:
        return
    provider = await asyncio.to_thread(
        provider_for, store, home, "127.100.0.0/16", deployment.tenant_id, deployment.provider
    )
    with contextlib.suppress(ProvisorError):
        await provider.delete_snapshot(backup.snapshot_id)


# The workflow


@DBOS.workflow()
async def backup_workflow(request: dict[str, Any]) -> dict[str, Any]:
    """One backup of one machine; `request`: instance, machine, trigger, scheduled_for."""
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    begun = await begin_step(request, workflow_id)
    if "skipped" in begun:
        return begun
    pk = begun["pk"]
    error: str | None = None
    try:
        snapshot = await capture_step(pk)
        _boundary("backup-captured")
        await copy_step(pk, snapshot)
        await verify_step(pk)
    except (BackupFailed, ProvisorError) as exc:
        error = str(exc)
    except Exception as exc:  # an unexpected failure still ends the backup, recorded
        error = f"{type(exc).__name__}: {exc}"
    state = await finish_step(pk, error)
    pruned = await prune_step(pk) if state == "good" else []
    return {"backup_id": begun["backup_id"], "state": state, "error": error, "pruned": pruned}


def workflow_id(instance: str, machine: str, run: str) -> str:
    return f"backup:{instance}:{machine}:{run}"


__all__ = [
    "QUEUE",
    "WORKFLOW",
    "BackupFailed",
    "backup_workflow",
    "delete_backup",
    "policy_for",
    "verify_objects",
    "workflow_id",
]
