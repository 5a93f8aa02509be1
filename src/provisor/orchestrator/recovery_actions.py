"""The recovery ladder's actions on one machine: `act` does one, and says what went wrong.

`command`, `reboot`, `restart` and `replace` hold the deployment's lock while they act
(the same lock every deployment step and `down` hold); `restore-from-backup` is the
backup feature's, which holds it itself.
"""

from __future__ import annotations

import asyncio
import shlex

from provisor.core.blueprint.health import RecoveryStep
from provisor.core.errors import ProvisorError
from provisor.fleet.operations import run_command
from provisor.fleet.transport import TransportError
from provisor.orchestrator import deployment_lock, machine_ops
from provisor.orchestrator.health_probes import Target, target_for
from provisor.orchestrator.runtime import runtime
from provisor.providers.base import ProviderError
from provisor.store.orchestration import Deployment, Machine

LOCK_TIMEOUT = 900.0  # an action waits this long for a manual operation to let go
BOOT_TIMEOUT = 180.0  # a rebooted, restarted or replaced machine answers SSH within this


def reach(deployment: Deployment, machine: Machine) -> Target:
    """The machine as the probes and the actions reach it."""
    return target_for(runtime(), deployment.provider, deployment.tenant_id, deployment.id, machine)


def _still_there(deployment_id: int, name: str) -> bool:
    """Whether the deployment is still ready and the machine still its."""
    from sqlalchemy import select

    with runtime().store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        return (
            deployment is not None
            and deployment.state == "ready"
            and session.scalar(
                select(Machine.id).where(
                    Machine.deployment_id == deployment_id, Machine.name == name
                )
            )
            is not None
        )


async def act(
    deployment: Deployment, machine: Machine, step: RecoveryStep, incident: int, attempt: int
) -> str | None:
    """Do the action; what went wrong, or None."""
    rt = runtime()
    if step.action == "restore-from-backup":  # it holds the deployment's lock itself
        return await _restore(deployment, machine)
    try:
        async with deployment_lock.hold(
            rt.home, deployment.workflow_id or "", timeout=LOCK_TIMEOUT
        ):
            if not await asyncio.to_thread(_still_there, deployment.id, machine.name):
                return "the deployment is being removed"
            if step.action == "command":
                return await _command(deployment, machine, step)
            if step.action == "reboot":
                await reach(deployment, machine).provider.reboot(machine.provider_id or "")
                return await _answers(deployment, machine)
            if step.action == "restart":
                provider = reach(deployment, machine).provider
                await provider.stop(machine.provider_id or "")
                await provider.start(machine.provider_id or "")
                return await _answers(deployment, machine)
            return await _replace(deployment, machine, incident, attempt)
    except (ProvisorError, TransportError) as exc:
        return rt.masker_of(deployment.id).text(getattr(exc, "message", None) or str(exc))
    except TimeoutError:
        return "timed out"
    except OSError as exc:  # (SSH below the transport's own errors)
        return rt.masker_of(deployment.id).text(str(exc) or type(exc).__name__)


async def _command(deployment: Deployment, machine: Machine, step: RecoveryStep) -> str | None:
    target = reach(deployment, machine)
    assert step.command is not None
    target.pool.forget(target.endpoint)  # a connection from before the failure may be dead
    connection = await asyncio.wait_for(target.pool.connect(target.endpoint), 30.0)
    line = f'. /etc/provisor/env 2>/dev/null; cd "$HOME" && sh -c {shlex.quote(step.command)}'
    result = await run_command(connection, target.endpoint, line, timeout=step.timeout)
    if result.ok:
        return None
    result = result.masked(target.masker)
    tail = result.text("stderr").strip().splitlines()[-1:]
    return (result.error or f"exit status {result.exit_code}") + (f": {tail[0]}" if tail else "")


async def _answers(deployment: Deployment, machine: Machine) -> str | None:
    target = reach(deployment, machine)
    target.pool.forget(target.endpoint)
    try:
        await machine_ops.probe(target.pool, target.endpoint, timeout=BOOT_TIMEOUT)
    except machine_ops.MachineStepError as exc:
        return str(exc)
    return None


async def _restore(deployment: Deployment, machine: Machine) -> str | None:
    from provisor.orchestrator.restore import replace_from_backup

    try:
        await replace_from_backup(runtime(), deployment.id, machine.name)
    except ProvisorError as exc:
        return exc.message
    except Exception as exc:  # a fault of the restore: this rung fails, the ladder goes on
        return f"the restore failed: {str(exc) or type(exc).__name__}"
    return None


async def _replace(
    deployment: Deployment, machine: Machine, incident: int, attempt: int
) -> str | None:
    """Launch a fresh machine from the blueprint in this one's place (its name, index,
    hostname; a new address where the provider gives one), run the node's scripts on
    it, then terminate the old one."""
    from provisor.orchestrator import deploy

    rt = runtime()
    old_id = machine.provider_id
    fresh = replaced_machine(machine, f"{machine.token}/replaced-{incident}-{attempt}")
    plans = await asyncio.to_thread(deploy._plans, deployment)
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    info = await deploy._launch(provider, deployment, fresh, plans[machine.name])
    await asyncio.to_thread(deploy._launched, deployment, [(fresh, info)])
    await asyncio.to_thread(deploy._update_machine, deployment.id, machine.name, token=fresh.token)
    now = await asyncio.to_thread(_machine, deployment.id, machine.name)
    if now is None:
        return "the deployment is being removed"
    await deploy._reach(deployment, now)
    board = rt.board
    board.open_deployment(deployment.id)
    try:
        board.remember(deployment.id, await asyncio.to_thread(deploy._parameters, deployment.id))
        await deploy._configure(deployment, now, plans[machine.name])
    except deploy._Failed as exc:
        return exc.message
    finally:
        board.close_deployment(deployment.id)
    if old_id and old_id != info.id:
        try:
            await provider.terminate(old_id)
        except ProviderError as exc:
            return f"replaced, but the old machine {old_id} was not terminated: {exc.message}"
    return None


def replaced_machine(machine: Machine, token: str) -> Machine:
    """A detached copy of the machine row with another launch token."""
    return Machine(
        id=machine.id,
        deployment_id=machine.deployment_id,
        node=machine.node,
        index=machine.index,
        name=machine.name,
        hostname=machine.hostname,
        token=token,
    )


def _machine(deployment_id: int, name: str) -> Machine | None:
    """The machine's row as it is now (detached)."""
    from sqlalchemy import select

    with runtime().store.session() as session:
        found = session.scalar(
            select(Machine).where(Machine.deployment_id == deployment_id, Machine.name == name)
        )
        session.expunge_all()
        return found


__all__ = ["act", "reach"]
