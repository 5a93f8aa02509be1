"""Stop and start a deployment's machines, durably.

`provisor stop` marks the deployment `stopping` and enqueues `stop_workflow` (`start`:
`starting`, `start_workflow`). Its one step holds the deployment's lock (no deployment
step, `down` or other action runs meanwhile), acts only while the deployment is still
in the state it was marked with, and ends it `stopped` (or `ready`) or `failed`. A
worker killed in the middle resumes the workflow and runs the step again: stopping a
stopped machine, or starting a running one, does nothing. So nothing stays `stopping`.

The machines keep their disks, addresses and inventory hosts; a started machine is
`ready` again once SSH answers.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dbos import DBOS
from sqlalchemy import update

from provisor.events import record_event
from provisor.orchestrator import deployment_lock, machine_ops
from provisor.orchestrator.deploy import LOCK_TIMEOUT, REACHABLE_TIMEOUT, machine_endpoint
from provisor.orchestrator.runtime import deployment_masker, runtime
from provisor.providers import MachineInfo, Provider
from provisor.store.models import Host, Tenant
from provisor.store.orchestration import Deployment, Machine

# action -> (the state while it runs, the state it ends in, its event)
ACTIONS = {
    "stop": ("stopping", "stopped", "deployment.stopped"),
    "start": ("starting", "ready", "deployment.started"),
}
STOPPABLE = ("ready", "failed")  # the states a deployment may be stopped from
WORKFLOWS = {"stop": "stop_workflow", "start": "start_workflow"}


def workflow_name(action: str) -> str:
    return WORKFLOWS[action]


def _load(deployment_id: int, instance: str) -> tuple[Deployment, list[Machine]] | None:
    """The deployment (still this instance) and its machines; None when it is gone."""
    with runtime().store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None or deployment.instance != instance:
            return None
        machines = list(deployment.machines)
        session.expunge_all()
        return deployment, machines


async def _stop_one(provider: Provider, deployment: Deployment, machine: Machine) -> MachineInfo:
    assert machine.provider_id is not None
    info = await provider.stop(machine.provider_id)
    # Its connections died with it: the next use makes a fresh one.
    runtime().pool(deployment.tenant_id).forget(machine_endpoint(deployment, machine))
    return info


async def _start_one(provider: Provider, deployment: Deployment, machine: Machine) -> MachineInfo:
    """Boot it and wait until SSH answers (at the address the provider gives now)."""
    assert machine.provider_id is not None
    info = await provider.start(machine.provider_id)
    if info.address:
        machine.address, machine.port = info.address, info.port
    endpoint = machine_endpoint(deployment, machine)
    pool = runtime().pool(deployment.tenant_id)
    pool.forget(endpoint)
    await machine_ops.probe(pool, endpoint, timeout=REACHABLE_TIMEOUT)
    return info


def _finish(
    deployment_id: int,
    action: str,
    results: list[tuple[Machine, MachineInfo | BaseException]],
    reason: str,
    error: str | None = None,
) -> str:
    """Record how the action ended: machines, the deployment's state, the event; only if
    the deployment is still in the action's state (`down` may have taken over)."""
    during, done, kind = ACTIONS[action]
    rt = runtime()
    with rt.store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None or deployment.state != during:
            return "superseded"
        masker = deployment_masker(rt.store, rt.home, deployment)  # not kept: it ends here
        machines = {m.name: m for m in deployment.machines}
        failures = [masker.text(error)] if error else []
        for machine, result in results:
            row = machines[machine.name]
            if isinstance(result, BaseException):
                message = masker.text(str(result) or type(result).__name__)
                row.error = message
                failures.append(f"{machine.name}: {message}")
                continue
            row.state, row.error = ("stopped" if action == "stop" else "ready"), None
            if action == "start" and result.address and result.address != row.address:
                row.address, row.port = result.address, result.port  # kept where it can be
                session.execute(
                    update(Host)
                    .where(Host.tenant_id == deployment.tenant_id, Host.name == machine.name)
                    .values(address=result.address, port=result.port)
                )
        if failures:
            deployment.state, deployment.step = "failed", f"failed at {action}"
            deployment.error = f"{action}: " + "; ".join(failures)[:4000]
        else:
            deployment.state, deployment.step, deployment.error = done, done, None
        deployment.lifecycle_workflow_id = None
        tenant = session.get(Tenant, deployment.tenant_id)
        record_event(
            session,
            actor="orchestrator",
            tenant=tenant.name if tenant else "default",
            kind=kind,
            subject=deployment.name,
            outcome="failed" if failures else "ok",
            details={
                "severity": "warning" if failures else "info",
                "deployment": deployment.name,
                "instance": deployment.instance,
                "machines": len(results),
                "reason": reason,
                **({"error": deployment.error} if failures else {}),
            },
        )
        return deployment.state


async def act(deployment_id: int, instance: str, action: str, reason: str) -> str:
    """Stop or start every launched machine of the deployment at once, holding its lock;
    the state it ends in ("superseded" when it is no longer the action's to end)."""
    rt = runtime()
    found = await asyncio.to_thread(_load, deployment_id, instance)
    if found is None:
        return "superseded"
    lock = found[0].workflow_id or f"deploy-{instance}"
    async with deployment_lock.hold(rt.home, lock, timeout=LOCK_TIMEOUT):
        found = await asyncio.to_thread(_load, deployment_id, instance)  # as it is now
        if found is None or found[0].state != ACTIONS[action][0]:
            return "superseded"
        deployment, machines = found
        launched = [m for m in machines if m.provider_id]
        provider = rt.provider(deployment.provider, deployment.tenant_id)
        one = _stop_one if action == "stop" else _start_one
        outcomes: list[Any] = await asyncio.gather(
            *(one(provider, deployment, m) for m in launched), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
        # A crash point for tests (provisor.testing.crash): the provider called, not recorded.
        sys.audit("provisor.step", f"{action}-called:{deployment.name}")
        return await asyncio.to_thread(
            _finish, deployment_id, action, list(zip(launched, outcomes, strict=True)), reason
        )


@DBOS.step()
async def stop_step(deployment_id: int, instance: str, reason: str) -> str:
    return await act(deployment_id, instance, "stop", reason)


@DBOS.step()
async def start_step(deployment_id: int, instance: str, reason: str) -> str:
    return await act(deployment_id, instance, "start", reason)


@DBOS.step()
async def failed_step(deployment_id: int, action: str, reason: str, error: str) -> str:
    return await asyncio.to_thread(_finish, deployment_id, action, [], reason, error)


async def run(deployment_id: int, instance: str, action: str, reason: str) -> str:
    """The action's step; if it fails as a whole (e.g. the lock stays taken), the
    deployment ends `failed` saying why, never left `stopping`/`starting`."""
    step = stop_step if action == "stop" else start_step
    try:
        return await step(deployment_id, instance, reason)
    except Exception as exc:
        if "Cancelled" in type(exc).__name__:  # DBOS's cancellation: not ours to record
            raise
        return await failed_step(deployment_id, action, reason, str(exc) or type(exc).__name__)


@DBOS.workflow()
async def stop_workflow(deployment_id: int, instance: str, reason: str) -> str:
    return await run(deployment_id, instance, "stop", reason)


@DBOS.workflow()
async def start_workflow(deployment_id: int, instance: str, reason: str) -> str:
    return await run(deployment_id, instance, "start", reason)


__all__ = ["ACTIONS", "STOPPABLE", "act", "run", "start_workflow", "stop_workflow", "workflow_name"]
