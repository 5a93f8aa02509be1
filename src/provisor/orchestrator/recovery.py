"""Recovering an unhealthy machine: a durable workflow that climbs its node's ladder.

One workflow per incident, its id `recover:<deployment instance>:<node.index>:<incident>`:
the monitor may ask for it again (after a restart of the worker, say), and gets the same
workflow; a worker killed during a recovery resumes it where it stopped (DBOS). Each
attempt of each rung is one step: the action, done while holding the deployment's lock
(so a recovery and `down`, or another workflow's step, never act on the deployment at
once), then rounds of the node's checks until `successes` pass (recovered) or
`failures` fail (the action did not help). Between two attempts of a rung it waits its
`backoff`, doubled after each. When every rung is tried and the machine is still not
healthy, it is `failed` and `recovery.failed` (critical) escalates.

The actions themselves are `recovery_actions`; `restore-from-backup` is the backup
feature's `restore.replace_from_backup`: a machine launched from its newest good backup
in its place.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import select

from provisor.core.blueprint.health import Checks
from provisor.core.health import (
    Health,
    HealthState,
    Thresholds,
    action_taken,
    gave_up,
    observe,
    recovery_exhausted,
    recovery_started,
)
from provisor.orchestrator import health_records as records
from provisor.orchestrator import recovery_actions
from provisor.orchestrator.health_probes import run_round
from provisor.orchestrator.runtime import runtime
from provisor.store.health import MachineHealth
from provisor.store.orchestration import Deployment, Machine

RECHECK_LIMIT = 40  # rounds after an action, at most (each within the checks' timeout)


def workflow_id(instance: str, machine: Machine, incident: int) -> str:
    return f"recover:{instance}:{records.short_name(machine)}:{incident}"


async def start(workflow: str, deployment_id: int, machine: str, incident: int) -> None:
    """Start the recovery (a known id: the workflow there is, finished or not)."""
    with SetWorkflowID(workflow):
        await DBOS.start_workflow_async(recovery_workflow, deployment_id, machine, incident)


def _boundary(name: str) -> None:
    """A step boundary crash tests kill the worker at (see deploy._boundary)."""
    sys.audit("provisor.step", name)


# Loading


def _load(
    deployment_id: int, name: str
) -> tuple[Deployment, Machine, records.NodeHealth, Health] | None:
    """The deployment (ready), the machine, its node's checks and ladder, its health;
    None when any of them is gone."""
    rt = runtime()
    with rt.store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None or deployment.state != "ready":
            return None
        machine = session.scalar(
            select(Machine).where(Machine.deployment_id == deployment_id, Machine.name == name)
        )
        row = session.scalar(
            select(MachineHealth).where(
                MachineHealth.deployment_id == deployment_id, MachineHealth.machine == name
            )
        )
        if machine is None or row is None:
            return None
        node = records.nodes_of(session, deployment).get(machine.node)
        if node is None:
            return None
        health = Health(HealthState(row.state), row.failures, row.successes, row.incident)
        session.expunge_all()
        return deployment, machine, node, health


def _details(incident_state: str, **more: Any) -> dict[str, Any]:
    return {"incident_state": incident_state, **more}


# Steps


@DBOS.step()
async def begin_step(deployment_id: int, name: str, incident: int) -> list[dict[str, Any]] | None:
    """Mark the machine recovering (`recovery.started`); its ladder, or None when there
    is nothing to recover any more (healthy again, another incident, or gone)."""
    loaded = await asyncio.to_thread(_load, deployment_id, name)
    if loaded is None:
        return None
    deployment, machine, node, health = loaded
    if health.incident != incident or health.state not in (
        HealthState.unhealthy,
        HealthState.recovering,
    ):
        return None
    if health.state is HealthState.unhealthy:  # (recovering: a resumed workflow)
        after = recovery_started(health)
        ladder = ", ".join(step.action for step in node.ladder)
        await asyncio.to_thread(
            records.save,
            runtime().store,
            deployment,
            machine,
            health,
            after,
            results=None,
            checked=False,
            detail=f"ladder: {ladder}",
            event=("recovery.started", "warning", "open", {"ladder": ladder}),
        )
    return [step.model_dump() for step in node.ladder]


@DBOS.step()
async def attempt_step(
    deployment_id: int, name: str, incident: int, rung: int, attempt: int
) -> str:
    """One attempt of rung `rung`: the action, then checks until they say; the outcome
    ("recovered", "not recovered", "failed: why", or "abandoned")."""
    rt = runtime()
    loaded = await asyncio.to_thread(_load, deployment_id, name)
    if loaded is None:
        return "abandoned"
    deployment, machine, node, health = loaded
    if health.incident != incident or health.state is not HealthState.recovering:
        return "abandoned"  # mended meanwhile, or a newer incident has its own recovery
    step = node.ladder[rung]
    problem = await recovery_actions.act(deployment, machine, step, incident, attempt)
    _boundary(f"recovery-action:{name}")  # acted, the step not checkpointed yet
    outcome = f"failed: {problem}" if problem else "not recovered"
    if problem is None:
        again = await asyncio.to_thread(_load, deployment_id, name)  # a replaced machine
        if again is None:
            return "abandoned"
        deployment, machine = again[0], again[1]
        recovered, health = await _recheck(deployment, machine, node.checks, action_taken(health))
        if recovered:
            outcome = "recovered"
    severity = "info" if outcome == "recovered" else "warning"
    await asyncio.to_thread(
        records.save,
        rt.store,
        deployment,
        machine,
        health,
        health,  # the state is the checks' (saved by them): only the event here
        results=None,
        checked=False,
        event=(
            "recovery.step",
            severity,
            "open" if outcome != "recovered" else "resolved",
            {"action": step.action, "attempt": attempt, "rung": rung + 1, "outcome": outcome},
        ),
    )
    return outcome


async def _recheck(
    deployment: Deployment, machine: Machine, checks: Checks, health: Health
) -> tuple[bool, Health]:
    """Rounds of the checks, `interval` apart, until `successes` pass (True) or
    `failures` fail (False); each round recorded. The health after them."""
    thresholds = Thresholds(checks.failures, checks.successes)
    target = recovery_actions.reach(deployment, machine)
    for number in range(RECHECK_LIMIT):
        if number:
            await asyncio.sleep(checks.interval)
        found = await run_round(target, checks.probes, checks.timeout)
        after = observe(health, found.ok, thresholds)
        recovered = after.state is HealthState.healthy
        # A recovered round's event (health.recovered) is the caller's, with its step.
        await asyncio.to_thread(
            records.save,
            runtime().store,
            deployment,
            machine,
            health,
            after,
            results=found.as_json(),
            detail="recovered" if recovered else found.summary(),
        )
        if recovered:
            return True, after
        health = after
        if gave_up(health, thresholds):
            return False, health
    return False, health


@DBOS.step()
async def end_step(deployment_id: int, name: str, incident: int, last: str) -> None:
    """The ladder is exhausted: `failed`, and the escalation (`recovery.failed`)."""
    loaded = await asyncio.to_thread(_load, deployment_id, name)
    if loaded is None:
        return
    deployment, machine, _, health = loaded
    if health.incident != incident or health.state is not HealthState.recovering:
        return
    await asyncio.to_thread(
        records.save,
        runtime().store,
        deployment,
        machine,
        health,
        recovery_exhausted(health),
        results=None,
        checked=False,
        detail=f"ladder exhausted: {last}",
        event=(
            "recovery.failed",
            "critical",
            "open",
            {"escalated": True, "last_outcome": last},
        ),
    )


@DBOS.step()
async def succeeded_step(deployment_id: int, name: str, incident: int, how: str) -> None:
    loaded = await asyncio.to_thread(_load, deployment_id, name)
    if loaded is None:
        return
    deployment, machine, _, health = loaded
    await asyncio.to_thread(
        records.save,
        runtime().store,
        deployment,
        machine,
        health,
        health,
        results=None,
        checked=False,
        event=("recovery.succeeded", "info", "resolved", {"by": how}),
    )


@DBOS.workflow()
async def recovery_workflow(deployment_id: int, name: str, incident: int) -> str:
    ladder = await begin_step(deployment_id, name, incident)
    if ladder is None:
        return "nothing to recover"
    last = "no rung"
    try:
        for rung, step in enumerate(ladder):
            for attempt in range(1, int(step["attempts"]) + 1):
                outcome = await attempt_step(deployment_id, name, incident, rung, attempt)
                if outcome == "abandoned":
                    return outcome
                if outcome == "recovered":
                    await succeeded_step(deployment_id, name, incident, f"{step['action']}")
                    return outcome
                last = f"{step['action']} attempt {attempt}: {outcome}"
                if attempt < int(step["attempts"]):
                    await DBOS.sleep_async(float(step["backoff"]) * 2 ** (attempt - 1))
    except Exception as exc:  # a fault of provisor's own: the machine is not left recovering
        last = f"the recovery stopped: {exc}"
    await end_step(deployment_id, name, incident, last)
    return "failed"


__all__ = ["recovery_workflow", "start", "workflow_id"]
