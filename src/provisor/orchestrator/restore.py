"""Restoring a machine from a backup: as a replacement machine with the old one's
identity, or in place (the same machine rolled back) where the provider can.

The backup used is the one asked for, or the newest good one of the machine. Its stored
disk object is read back, decrypted and checked against the SHA-256 recorded when it
was taken; a copy that is not as recorded is marked bad (`backup.corrupt`), never used
again, and the next good backup is used instead, which the result says.

`replace_from_backup` is what a recovery ladder's `restore-from-backup` step calls. Both
need the orchestrator's runtime installed in the process (`runtime.install`): the
launch is the deployment workflow's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select, update

from provisor.backups.crypto import DecryptError
from provisor.backups.store import StoreError
from provisor.core.errors import Conflict, NotFound, ProvisorError
from provisor.events import record_event
from provisor.files import private_dir
from provisor.fleet.knownhosts import forget_host_keys
from provisor.fleet.transport import machine_trust_id
from provisor.orchestrator import deployment_lock, health_probes, health_records, machine_ops
from provisor.orchestrator.backup_copy import restore_file
from provisor.orchestrator.backup_store import (
    backup_event,
    close_store,
    data_key,
    open_store,
)
from provisor.orchestrator.deploy import _launch, _launched, _plans, machine_endpoint
from provisor.orchestrator.runtime import Runtime
from provisor.providers.base import MachineInfo, ProviderError
from provisor.store.backups import Backup
from provisor.store.models import Tenant
from provisor.store.orchestration import Deployment, Machine

DISK = "disk.tar.gz"
REACHABLE_TIMEOUT = 180.0
LOCK_TIMEOUT = 900.0


class RestoreFailed(ProvisorError):
    status = 409


@dataclass
class RestoreResult:
    backup: str  # the backup used
    how: str  # "replacement" or "in place"
    provider_id: str
    address: str | None
    skipped: list[str] = field(default_factory=list)  # backups passed over, and why
    checks: str | None = None  # one round of the node's checks on it: "ok" or what failed


def _candidates(rt: Runtime, instance: str, machine: str, asked: str | None) -> list[Backup]:
    """The asked backup first (if any), then the machine's good ones, newest first."""
    with rt.store.session() as session:
        rows = list(
            session.scalars(
                select(Backup)
                .where(Backup.instance == instance, Backup.machine == machine)
                .order_by(Backup.created_at.desc(), Backup.id.desc())
            )
        )
        for row in rows:
            _ = list(row.objects)
        session.expunge_all()
    if asked is not None and not any(r.backup_id == asked for r in rows):
        raise NotFound(f"machine {machine} has no backup {asked[:64]!r}", field="backup")
    first = [r for r in rows if r.backup_id == asked]
    return first + [r for r in rows if r.backup_id != asked]


def _usable(backup: Backup) -> str | None:
    """Why a backup cannot be restored from, or None."""
    if backup.state != "good":
        return f"it is {backup.state}"
    disk = next((o for o in backup.objects if o.name == DISK), None)
    if disk is None:
        return "it holds no disk snapshot"
    if disk.state != "good":
        return f"its disk copy is {disk.state}"
    return None


def _mark_bad(rt: Runtime, backup: Backup, problem: str) -> None:
    with rt.store.session() as session:
        row = session.get(Backup, backup.id)
        if row is None:
            return
        row.state = "bad"
        for item in row.objects:
            if item.name == DISK:
                item.state = "bad"
        backup_event(
            session,
            row,
            "backup.corrupt",
            severity="critical",
            incident_state="open",
            outcome="failed",
            objects=[DISK],
            problems=[f"{DISK}: {problem}"],
        )


def _fetch(rt: Runtime, backup: Backup, into: Path) -> str | None:
    """The backup's disk archive decrypted into `into`; what is wrong with it, if anything."""
    disk = next(o for o in backup.objects if o.name == DISK)
    store = open_store(rt.store, rt.home, backup.tenant_id, backup.store)
    try:
        written = restore_file(store, disk.key, data_key(rt.home, backup), into)
    except (DecryptError, StoreError) as exc:
        return exc.message
    finally:
        close_store(store)
    if written.sha256 != disk.plain_sha256 or written.size != disk.plain_size:
        return f"restored data has SHA-256 {written.sha256}, {disk.plain_sha256} was recorded"
    return None


async def fetch_good_backup(
    rt: Runtime,
    instance: str,
    machine: str,
    asked: str | None,
    into: Path,
    say: Callable[[str], None],
) -> tuple[Backup, list[str]]:
    """The disk archive of the asked (or newest good) backup in `into`, falling back to
    the next good one past any that is bad; the backup and what was passed over."""
    skipped: list[str] = []
    for backup in await asyncio.to_thread(_candidates, rt, instance, machine, asked):
        why = _usable(backup)
        if why is None:
            why = await asyncio.to_thread(_fetch, rt, backup, into)
            if why is not None:
                await asyncio.to_thread(_mark_bad, rt, backup, why)
                why = f"its stored copy is corrupt ({why}); marked bad"
        if why is None:
            return backup, skipped
        line = f"backup {backup.backup_id} not used: {why}"
        skipped.append(line)
        say(line + "; trying the newest good one before it")
    raise RestoreFailed(
        f"machine {machine} has no good backup to restore from"
        + (f" ({'; '.join(skipped)})" if skipped else "")
    )


def _load(rt: Runtime, deployment_id: int, name: str) -> tuple[Deployment, Machine]:
    with rt.store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise NotFound(f"no deployment {deployment_id}", field="deployment")
        machine = next((m for m in deployment.machines if m.name == name), None)
        if machine is None or machine.provider_id is None:
            raise NotFound(
                f"deployment {deployment.name} has no launched machine {name!r}", field="machine"
            )
        session.expunge_all()
        return deployment, machine


def _event(rt: Runtime, deployment: Deployment, machine: str, kind: str, **details: object) -> None:
    with rt.store.session() as session:
        tenant = session.get(Tenant, deployment.tenant_id)
        node = session.scalar(
            select(Machine.node).where(
                Machine.deployment_id == deployment.id, Machine.name == machine
            )
        )
        failed = kind.endswith("failed")
        record_event(
            session,
            actor="orchestrator",
            tenant=tenant.name if tenant else "default",
            kind=kind,
            subject=f"{deployment.name}/{machine}",
            outcome="failed" if failed else "ok",
            details={
                "severity": "critical" if failed else "info",
                "deployment": deployment.name,
                "instance": deployment.instance,
                "node": node,
                "machine": machine,
                "incident": f"restore:{deployment.instance}:{machine}",
                "incident_state": "open" if failed else "resolved",
                **details,
            },
        )


def _lock_name(deployment: Deployment) -> str:
    return deployment.workflow_id or f"deploy-{deployment.instance}"


async def replace_from_backup(
    rt: Runtime,
    deployment_id: int,
    machine_name: str,
    *,
    backup_id: str | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> RestoreResult:
    """Launch a new machine from a backup with the old one's identity (node name and
    index, hostname, address where the provider can, runtime parameters, inventory
    entry, trusted host key), check it answers SSH, then retire the old machine. Holds
    the deployment's lock throughout."""
    deployment, machine = await asyncio.to_thread(_load, rt, deployment_id, machine_name)
    assert machine.provider_id is not None
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    importer = getattr(provider, "import_snapshot", None)
    if importer is None:
        raise RestoreFailed(
            f"provider {deployment.provider} cannot launch from a stored backup", field="machine"
        )
    await asyncio.to_thread(_event, rt, deployment, machine_name, "restore.started")
    try:
        async with deployment_lock.hold(rt.home, _lock_name(deployment), timeout=LOCK_TIMEOUT):
            result = await _replace(rt, deployment, machine, importer, backup_id, say)
    except ProvisorError as exc:
        await asyncio.to_thread(
            _event, rt, deployment, machine_name, "restore.failed", error=exc.message
        )
        raise
    await asyncio.to_thread(
        _event,
        rt,
        deployment,
        machine_name,
        "restore.completed",
        backup=result.backup,
        how=result.how,
        skipped=result.skipped,
        checks=result.checks,
    )
    return result


async def _replace(
    rt: Runtime,
    deployment: Deployment,
    machine: Machine,
    importer: Callable[..., object],
    asked: str | None,
    say: Callable[[str], None],
) -> RestoreResult:
    assert machine.provider_id is not None
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    staging = private_dir(rt.home / "restores")
    with tempfile.TemporaryDirectory(dir=staging) as scratch:
        archive = Path(scratch) / DISK
        backup, skipped = await fetch_good_backup(
            rt, deployment.instance, machine.name, asked, archive, say
        )
        snapshot = await importer(archive, f"restore-{backup.backup_id}")  # type: ignore[misc]
    plans = await asyncio.to_thread(_plans, deployment)
    plan = replace(plans[machine.name], image=snapshot.id, user_data=None)
    fresh = Machine(
        id=machine.id,
        deployment_id=deployment.id,
        node=machine.node,
        index=machine.index,
        name=machine.name,
        hostname=machine.hostname,
        token=f"{machine.token}/restore-{backup.backup_id}",
        state="launching",
    )
    old_id = machine.provider_id
    try:
        # The same address where the provider can (the old machine powered off first):
        # machines configured with it, a load balancer say, reach the new one there.
        info: MachineInfo = await _launch(provider, deployment, fresh, plan, replaces=old_id)
    except ProviderError:
        with contextlib.suppress(ProviderError):
            await provider.start(old_id)  # not replaced: as it was, if it still can be
        raise
    finally:
        with contextlib.suppress(ProviderError):
            await provider.delete_snapshot(snapshot.id)  # the new disk is a copy of it
    await asyncio.to_thread(_adopt, rt, deployment, fresh, info, old_id)
    restored = replace_machine_row(fresh, info)
    await _answers(rt, deployment, restored)
    checked = await _checks(rt, deployment, restored)
    if checked is not None:
        say(f"{machine.name}: its checks after the restore: {checked}")
    # The old machine is retired whatever the checks say: it is the one that failed, and
    # the health monitor (and its ladder) takes the restored one from here.
    await provider.terminate(old_id)
    await asyncio.to_thread(_update_state, rt, deployment.id, machine.name, "ready")
    return RestoreResult(
        backup.backup_id, "replacement", info.id, info.address, skipped, checks=checked
    )


async def _checks(rt: Runtime, deployment: Deployment, machine: Machine) -> str | None:
    """One round of the node's health checks on the restored machine: "ok", or what
    failed; None when the node has no checks."""
    with rt.store.session() as session:
        node = health_records.nodes_of(session, deployment).get(machine.node)
    if node is None:
        return None
    target = health_probes.target_for(
        rt, deployment.provider, deployment.tenant_id, deployment.id, machine
    )
    found = await health_probes.run_round(target, node.checks.probes, node.checks.timeout)
    return found.summary()


def replace_machine_row(machine: Machine, info: MachineInfo) -> Machine:
    return Machine(
        id=machine.id,
        deployment_id=machine.deployment_id,
        node=machine.node,
        index=machine.index,
        name=machine.name,
        hostname=machine.hostname,
        token=machine.token,
        provider_id=info.id,
        address=info.address,
        port=info.port,
        login_user=info.login_user,
        state="running",
    )


def _adopt(
    rt: Runtime, deployment: Deployment, fresh: Machine, info: MachineInfo, old_id: str
) -> None:
    """The new machine takes the old one's row, parameters, inventory entry; the old
    one's host key is trusted no more."""
    with rt.store.session() as session:
        session.execute(update(Machine).where(Machine.id == fresh.id).values(token=fresh.token))
        forget_host_keys(
            session,
            deployment.tenant_id,
            host_ids=[],
            subjects=[machine_trust_id(deployment.provider, old_id)],
        )
    _launched(deployment, [(fresh, info)])


async def _answers(rt: Runtime, deployment: Deployment, machine: Machine) -> None:
    """SSH answers the restored machine (a connection to what it was is dropped first)."""
    pool = rt.pool(deployment.tenant_id)
    endpoint = machine_endpoint(deployment, machine)
    pool.forget(endpoint)
    await machine_ops.probe(pool, endpoint, timeout=REACHABLE_TIMEOUT)


def _update_state(rt: Runtime, deployment_id: int, name: str, state: str) -> None:
    with rt.store.session() as session:
        session.execute(
            update(Machine)
            .where(Machine.deployment_id == deployment_id, Machine.name == name)
            .values(state=state, error=None)
        )


async def restore_in_place(
    rt: Runtime,
    deployment_id: int,
    machine_name: str,
    *,
    backup_id: str | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> RestoreResult:
    """Roll the machine itself back to a backup (providers that can: local)."""
    deployment, machine = await asyncio.to_thread(_load, rt, deployment_id, machine_name)
    assert machine.provider_id is not None
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    roll_back = getattr(provider, "restore_in_place", None)
    if roll_back is None:
        raise Conflict(
            f"provider {deployment.provider} cannot restore a machine in place: restore it "
            "as a replacement (without --in-place)",
            field="in_place",
        )
    await asyncio.to_thread(_event, rt, deployment, machine_name, "restore.started")
    try:
        async with deployment_lock.hold(rt.home, _lock_name(deployment), timeout=LOCK_TIMEOUT):
            staging = private_dir(rt.home / "restores")
            with tempfile.TemporaryDirectory(dir=staging) as scratch:
                archive = Path(scratch) / DISK
                backup, skipped = await fetch_good_backup(
                    rt, deployment.instance, machine.name, backup_id, archive, say
                )
                info: MachineInfo = await roll_back(machine.provider_id, archive)
            await _answers(rt, deployment, machine)
    except ProvisorError as exc:
        await asyncio.to_thread(
            _event, rt, deployment, machine_name, "restore.failed", error=exc.message
        )
        raise
    result = RestoreResult(backup.backup_id, "in place", info.id, info.address, skipped)
    await asyncio.to_thread(
        _event,
        rt,
        deployment,
        machine_name,
        "restore.completed",
        backup=result.backup,
        how=result.how,
        skipped=skipped,
    )
    return result


__all__ = ["RestoreFailed", "RestoreResult", "replace_from_backup", "restore_in_place"]
