"""Backups: take now, list, show, verify, delete, restore; per-deployment schedules; the
final backup before a deployment is removed. The stores are `backup_stores`'.

Backups belong to a tenant: another tenant's answers as not found. Reading needs
`backups.read`, everything else `backups.manage`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from provisor.core.access import Action
from provisor.core.blueprint import Blueprint
from provisor.core.blueprint.backup import check_schedule
from provisor.core.errors import Conflict, InvalidInput, NotFound, ProvisorError
from provisor.core.names import check_name
from provisor.services.context import Context, audited
from provisor.settings import Settings
from provisor.store.backups import Backup, BackupObject, BackupOverride, BackupStoreConfig
from provisor.store.orchestration import Deployment

BUILT_IN_STORE = "local"
MAX_LISTED = 1000  # backups one listing shows at most (newest first)


class BackupObjectView(BaseModel):
    name: str
    size: int = Field(description="bytes as stored (encrypted)")
    sha256: str = Field(description="SHA-256 of the stored bytes")
    plain_size: int
    plain_sha256: str
    state: str = Field(description="good, bad (failed verification; never used), deleting")
    verified_at: datetime | None


class BackupView(BaseModel):
    id: str
    deployment: str
    machine: str
    node: str
    trigger: str = Field(description="manual, schedule or final")
    scheduled_for: datetime | None
    store: str
    state: str = Field(description="running, good, bad, failed, deleting")
    step: str
    error: str | None
    size: int
    created_at: datetime
    finished_at: datetime | None
    verified_at: datetime | None
    objects: list[BackupObjectView]


class BackupSummary(BaseModel):
    """A deployment's backups at a glance (`provisor deployments show`)."""

    counts: dict[str, int] = Field(description="its backups by state: good, bad, failed, ...")
    last_good_at: datetime | None = Field(description="when its newest good backup was taken")
    last_good: str | None = Field(description="that backup's id")


class VerifiedView(BaseModel):
    backup: str
    machine: str
    object: str
    ok: bool
    problem: str | None


def _view(row: Backup) -> BackupView:
    return BackupView(
        id=row.backup_id,
        deployment=row.deployment,
        machine=row.machine,
        node=row.node,
        trigger=row.trigger,
        scheduled_for=row.scheduled_for,
        store=row.store,
        state=row.state,
        step=row.step,
        error=row.error,
        size=row.size,
        created_at=row.created_at,
        finished_at=row.finished_at,
        verified_at=row.verified_at,
        objects=[
            BackupObjectView(
                name=o.name,
                size=o.size,
                sha256=o.sha256,
                plain_size=o.plain_size,
                plain_sha256=o.plain_sha256,
                state=o.state,
                verified_at=o.verified_at,
            )
            for o in row.objects
        ],
    )


def _deployment(session: Session, ctx: Context, name: str) -> Deployment:
    found = session.scalar(
        select(Deployment)
        .where(Deployment.tenant_id == ctx.tenant_id(), Deployment.name == name)
        .options(selectinload(Deployment.machines))
    )
    if found is None:
        raise NotFound(f"no deployment named {name!r}", field="deployment")
    return found


def _backup(session: Session, ctx: Context, backup_id: str) -> Backup:
    row = session.scalar(
        select(Backup)
        .where(Backup.tenant_id == ctx.tenant_id(), Backup.backup_id == backup_id[:64])
        .options(selectinload(Backup.objects))
    )
    if row is None:
        raise NotFound(f"no backup {backup_id[:64]!r}", field="backup")
    return row


def _check_store_exists(session: Session, ctx: Context, name: str) -> None:
    if name == BUILT_IN_STORE:
        return
    found = session.scalar(
        select(BackupStoreConfig.id).where(
            BackupStoreConfig.tenant_id == ctx.tenant_id(), BackupStoreConfig.name == name
        )
    )
    if found is None:
        raise NotFound(
            f"no backup store named {name!r}: `provisor backup stores list` shows them",
            field="store",
        )


def check_policy_stores(ctx: Context, blueprint: Blueprint) -> None:
    """Every node's backup policy names a store the tenant has (said at `up`, not at
    the first scheduled backup)."""
    with ctx.store.session() as session:
        for name, node in blueprint.nodes.items():
            if node.backup is not None and node.backup.store != BUILT_IN_STORE:
                try:
                    _check_store_exists(session, ctx, node.backup.store)
                except NotFound as exc:
                    raise NotFound(exc.message, field=f"nodes.{name}.backup.store") from None


# Taking backups


def start_backups(
    ctx: Context,
    settings: Settings,
    deployment: str,
    machines: list[str] | None = None,
    *,
    store: str | None = None,
    trigger: str = "now",
) -> list[str]:
    """Start a backup of each machine (all of the deployment's without `machines`), one
    durable workflow each; their workflow ids. The worker (started by the caller) runs
    them."""
    from provisor.orchestrator import backup, worker

    ctx.require(Action.backups_manage)
    with ctx.store.session() as session:
        found = _deployment(session, ctx, deployment)
        if found.state not in backup.ACTIVE:
            raise Conflict(
                f"deployment {deployment!r} is {found.state}: only a ready (or failed) "
                "deployment's machines are backed up",
                field="deployment",
            )
        if store is not None:
            check_name(store, field="store")
            _check_store_exists(session, ctx, store)
        store_checked = store is not None
        launched = {m.name: m for m in found.machines if m.provider_id is not None}
        names = machines or sorted(launched)
        unknown = [n for n in names if n not in launched]
        if unknown:
            raise NotFound(
                f"deployment {deployment!r} has no launched machine {unknown[0][:128]!r} "
                f"(it has: {', '.join(sorted(launched)) or 'none'})",
                field="machine",
            )
        if not names:
            raise Conflict(f"deployment {deployment!r} has no machines", field="deployment")
        if not store_checked:
            for node in {launched[n].node for n in names}:
                _check_store_exists(session, ctx, backup.policy_for(found, node).store)
        instance = found.instance
    started = []
    for name in names:
        wid = backup.workflow_id(instance, name, f"{trigger}-{uuid.uuid4().hex}")
        request = {"instance": instance, "machine": name, "trigger": _trigger(trigger)}
        if store is not None:
            request["store"] = store
        worker.enqueue(settings, backup.WORKFLOW, wid, request)
        started.append(wid)
    return started


def _trigger(run: str) -> str:
    return {"now": "manual", "final": "final"}.get(run, run)


def wait_backups(
    ctx: Context,
    workflow_ids: list[str],
    *,
    timeout: float,
    worker_gone: Callable[[], bool] | None = None,
) -> list[BackupView]:
    """The backups of these workflows once every one has ended (good or failed);
    ProvisorError when `timeout` passes first or no worker runs them."""
    deadline = time.monotonic() + timeout
    absent = 0
    while True:
        with ctx.store.session() as session:
            rows = list(
                session.scalars(
                    select(Backup)
                    .where(
                        Backup.tenant_id == ctx.tenant_id(), Backup.workflow_id.in_(workflow_ids)
                    )
                    .options(selectinload(Backup.objects))
                )
            )
            views = [_view(r) for r in rows]
        if len(views) == len(workflow_ids) and all(v.state != "running" for v in views):
            return sorted(views, key=lambda v: v.machine)
        if worker_gone is not None and worker_gone():
            absent += 1
            if absent >= 6:
                raise ProvisorError("no worker is running the backups: `provisor worker start`")
        else:
            absent = 0
        if time.monotonic() > deadline:
            raise ProvisorError(
                f"backups not finished within {timeout:g}s; they go on: `provisor backup list`",
                field="timeout",
            )
        time.sleep(0.5)


# Reading


def list_backups(
    ctx: Context, deployment: str | None = None, machine: str | None = None
) -> list[BackupView]:
    """The tenant's backups, newest first (at most MAX_LISTED)."""
    ctx.require(Action.backups_read)
    query = select(Backup).where(Backup.tenant_id == ctx.tenant_id())
    if deployment is not None:
        query = query.where(Backup.deployment == deployment[:128])
    if machine is not None:
        query = query.where(Backup.machine == machine[:128])
    with ctx.store.session() as session:
        rows = session.scalars(
            query.options(selectinload(Backup.objects))
            .order_by(Backup.created_at.desc(), Backup.id.desc())
            .limit(MAX_LISTED)
        )
        return [_view(r) for r in rows]


def backup_summary(session: Session, tenant_id: int, instance: str) -> BackupSummary:
    """How many backups a deployment instance has in each state, and its newest good one
    (the caller has checked that the role may read backups)."""
    counts = session.execute(
        select(Backup.state, func.count())
        .where(Backup.tenant_id == tenant_id, Backup.instance == instance)
        .group_by(Backup.state)
    ).all()
    newest = session.execute(
        select(Backup.backup_id, Backup.created_at)
        .where(Backup.tenant_id == tenant_id, Backup.instance == instance, Backup.state == "good")
        .order_by(Backup.created_at.desc(), Backup.id.desc())
        .limit(1)
    ).first()
    return BackupSummary(
        counts={state: count for state, count in counts},
        last_good_at=newest[1] if newest else None,
        last_good=newest[0] if newest else None,
    )


def get_backup(ctx: Context, backup_id: str) -> BackupView:
    ctx.require(Action.backups_read)
    with ctx.store.session() as session:
        return _view(_backup(session, ctx, backup_id))


# Verifying


def verify(
    ctx: Context, *, deployment: str | None = None, backup_id: str | None = None
) -> list[VerifiedView]:
    """Read back and hash every stored object of the chosen good backups (all of the
    tenant's by default). A copy not as recorded is marked bad (and its backup), an
    event `backup.corrupt` says so, and it is never used again."""
    from provisor.orchestrator.backup import verify_objects
    from provisor.orchestrator.backup_store import backup_event, close_store, open_store
    from provisor.store.models import utcnow

    ctx.require(Action.backups_manage)
    with ctx.store.session() as session:
        if backup_id is not None:
            rows = [_backup(session, ctx, backup_id)]
        else:
            query = select(Backup).where(
                Backup.tenant_id == ctx.tenant_id(), Backup.state.in_(("good", "bad"))
            )
            if deployment is not None:
                query = query.where(Backup.deployment == deployment[:128])
            rows = list(session.scalars(query.options(selectinload(Backup.objects))))
        session.expunge_all()
    results = []
    for row in rows:
        checked = [o for o in row.objects if o.state == "good"]
        if not checked:
            continue
        store = open_store(ctx.store, ctx.home, row.tenant_id, row.store)
        try:
            wrong = dict(verify_objects(store, checked))
        finally:
            close_store(store)
        results += [
            VerifiedView(
                backup=row.backup_id,
                machine=row.machine,
                object=o.name,
                ok=o.name not in wrong,
                problem=wrong.get(o.name),
            )
            for o in checked
        ]
        with ctx.store.session() as session:
            current = session.get(Backup, row.id)
            if current is None:
                continue
            now = utcnow()
            for item in current.objects:
                if item.name in wrong:
                    item.state = "bad"
                elif item.state == "good":
                    item.verified_at = now
            if wrong:
                current.state = "bad"
                backup_event(
                    session,
                    current,
                    "backup.corrupt",
                    severity="critical",
                    incident_state="open",
                    actor=ctx.actor,
                    outcome="failed",
                    objects=sorted(wrong),
                    problems=[f"{n}: {p}" for n, p in sorted(wrong.items())],
                )
            else:
                current.verified_at = now
                backup_event(session, current, "backup.verified", severity="info", actor=ctx.actor)
    return results


# Deleting


async def delete(ctx: Context, backup_id: str) -> BackupView:
    from provisor.orchestrator.backup import delete_backup

    ctx.require(Action.backups_manage)

    def find() -> tuple[Backup, BackupView]:
        with ctx.store.session() as session:
            row = _backup(session, ctx, backup_id)
            if row.state == "running":
                raise Conflict(f"backup {backup_id!r} is still running", field="backup")
            view = _view(row)
            session.expunge_all()
            return row, view

    row, view = await asyncio.to_thread(find)
    await delete_backup(ctx.store, ctx.home, row, actor=ctx.actor)
    return view


# Schedules


def set_schedule(ctx: Context, deployment: str, node: str, schedule: str) -> str:
    """The deployment's own schedule for `node` (cron), `off` for none, or `blueprint`
    to follow the blueprint's again; the schedule in force."""
    from provisor.orchestrator.backup import policy_for

    ctx.require(Action.backups_manage)
    value = schedule.strip()
    if value not in ("off", "blueprint"):
        try:
            value = check_schedule(value)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="schedule") from None
    with audited(ctx, "backup.schedule_set", deployment) as (session, audit):
        found = _deployment(session, ctx, deployment)
        nodes = sorted({m.node for m in found.machines})
        if node not in nodes:
            raise NotFound(
                f"deployment {deployment!r} has no node {node[:64]!r} (it has: {', '.join(nodes)})",
                field="node",
            )
        audit.details = {"node": node, "schedule": value}
        row = session.scalar(
            select(BackupOverride).where(
                BackupOverride.instance == found.instance, BackupOverride.node == node
            )
        )
        if value == "blueprint":
            if row is not None:
                session.delete(row)
            return policy_for(found, node).schedule or "off"
        if row is None:
            session.add(
                BackupOverride(
                    tenant_id=found.tenant_id, instance=found.instance, node=node, schedule=value
                )
            )
        else:
            row.schedule = value
        return value


def objects_of(ctx: Context, backup_id: str) -> list[BackupObject]:
    """The rows of a backup's objects (tests and restores read them)."""
    ctx.require(Action.backups_read)
    with ctx.store.session() as session:
        row = _backup(session, ctx, backup_id)
        objects = list(row.objects)
        session.expunge_all()
        return objects


# Restoring, and the last backup before a deployment is removed


class RestoreView(BaseModel):
    backup: str = Field(description="the backup restored from")
    how: str = Field(description="replacement or in place")
    provider_id: str
    address: str | None
    skipped: list[str] = Field(description="backups passed over (bad copies), and why")
    checks: str | None = Field(
        default=None,
        description="one round of the node's health checks on the restored machine: "
        "ok, or what failed (none when the node has no checks)",
    )


async def restore(
    ctx: Context,
    settings: Settings,
    deployment: str,
    machine: str,
    *,
    backup_id: str | None = None,
    in_place: bool = False,
    say: Callable[[str], None] = lambda _line: None,
) -> RestoreView:
    """Restore a machine from its newest good backup (or `backup_id`, falling back past
    a bad copy): a replacement machine with its identity, or the machine rolled back."""
    from provisor.orchestrator import restore as restoring
    from provisor.orchestrator.runtime import Runtime, install, runtime

    ctx.require(Action.backups_manage)

    def find() -> int:
        with ctx.store.session() as session:
            found = _deployment(session, ctx, deployment)
            if found.state not in ("ready", "failed"):
                raise Conflict(
                    f"deployment {deployment!r} is {found.state}: only a ready (or failed) "
                    "deployment's machines are restored",
                    field="deployment",
                )
            return found.id

    deployment_id = await asyncio.to_thread(find)
    try:
        rt = runtime()  # the worker's, in a process that runs one
        own = False
    except RuntimeError:
        rt = install(
            Runtime(
                ctx.store,
                ctx.home,
                local_network=settings.local_network,
                parameter_address=settings.parameter_address,
            )
        )
        own = True
    how = restoring.restore_in_place if in_place else restoring.replace_from_backup
    try:
        result = await how(rt, deployment_id, machine, backup_id=backup_id, say=say)
    finally:
        if own:
            await rt.close()
    return RestoreView(
        backup=result.backup,
        how=result.how,
        provider_id=result.provider_id,
        address=result.address,
        skipped=result.skipped,
        checks=result.checks,
    )


def final_backup(
    ctx: Context, settings: Settings, deployment: str, *, timeout: float
) -> list[BackupView]:
    """A verified backup of every machine, before the deployment is removed;
    ProvisorError (nothing is removed) if any failed."""
    from provisor.services import workers

    ids = start_backups(ctx, settings, deployment, trigger="final")
    workers.ensure_worker(settings)
    views = wait_backups(
        ctx, ids, timeout=timeout, worker_gone=lambda: not workers.worker_running(settings)
    )
    failed = [v for v in views if v.state != "good"]
    if failed:
        raise Conflict(
            f"the final backup of {deployment!r} failed, so it was not removed: "
            + "; ".join(f"{v.machine}: {v.error or v.state}" for v in failed),
            field="final_backup",
        )
    return views


__all__ = [
    "BackupObjectView",
    "BackupSummary",
    "BackupView",
    "RestoreView",
    "VerifiedView",
    "backup_summary",
    "check_policy_stores",
    "delete",
    "final_backup",
    "get_backup",
    "list_backups",
    "restore",
    "set_schedule",
    "start_backups",
    "verify",
    "wait_backups",
]
