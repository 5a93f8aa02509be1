"""The deployment workflow: plan, approval, launch, reachability, configuration, outputs.

Every step is a DBOS step: its result is checkpointed, so a controller killed at
any moment resumes where it stopped. Launches are idempotent twice over: the
provider honours the client token, and the step looks the token up first.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dbos import DBOS
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisor.core.blueprint import expand, load_blueprint, node_order, render_outputs
from provisor.events import record_event
from provisor.fleet.transport import Endpoint
from provisor.orchestrator import machine_ops, reports
from provisor.orchestrator.params import expected_setter, machine_token, set_parameter
from provisor.orchestrator.runtime import runtime
from provisor.providers import (
    IngressRule,
    MachineSpec,
    MachineState,
    ProviderError,
    Size,
    VolumeSpec,
)
from provisor.store.models import Group, Host, Tenant
from provisor.store.orchestration import Deployment, Machine, RuntimeParameter

REACHABLE_TIMEOUT = 180.0
SCRIPT_TIMEOUT = 1800.0
WAIT_TIMEOUT = 600.0
APPROVAL_TOPIC = "approval"


@dataclass(frozen=True)
class PlannedMachine:
    name: str
    node: str
    index: int
    hostname: str


class DeploymentFailed(Exception):
    def __init__(self, step: str, machine: str | None, message: str) -> None:
        where = f"{step} on {machine}" if machine else step
        super().__init__(f"{where}: {message}")


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at a named step boundary (PROVISOR_TEST_KILL_AT)."""
    if os.environ.get("PROVISOR_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# Store helpers (run in threads)


def _set_state(
    deployment_id: int,
    state: str | None = None,
    *,
    step: str | None = None,
    error: str | None = None,
    event: str | None = None,
) -> None:
    rt = runtime()
    with rt.store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        if state is not None:
            deployment.state = state
        if step is not None:
            deployment.step = step
        if error is not None:
            deployment.error = error
        if event is not None:
            tenant = session.get(Tenant, deployment.tenant_id)
            record_event(
                session,
                actor="orchestrator",
                tenant=tenant.name if tenant else "default",
                kind=event,
                subject=deployment.name,
                outcome="failed" if state == "failed" else "ok",
                details={"step": deployment.step, **({"error": error} if error else {})},
            )


def _machine(session: Session, deployment_id: int, name: str) -> Machine:
    machine = session.scalar(
        select(Machine).where(Machine.deployment_id == deployment_id, Machine.name == name)
    )
    assert machine is not None, name
    return machine


def _update_machine(deployment_id: int, name: str, **values: Any) -> None:
    with runtime().store.session() as session:
        machine = _machine(session, deployment_id, name)
        for key, value in values.items():
            setattr(machine, key, value)


def _load(deployment_id: int) -> tuple[Deployment, list[Machine]]:
    with runtime().store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        machines = list(deployment.machines)
        session.expunge_all()
        return deployment, machines


def _plans(deployment: Deployment) -> dict[str, Any]:
    """The deployment's machine plans; parsed once per process (they never change)."""
    rt = runtime()
    with rt.plans_lock:  # many machines' steps ask at once; parse once
        cached = rt.plans.get(deployment.id)
        if cached is None:
            blueprint = load_blueprint(deployment.blueprint_text, source=deployment.blueprint)
            inputs = rt.unseal_inputs(deployment.inputs)
            plans = expand(
                blueprint, inputs, deployment=deployment.name, completion=deployment.completion
            )
            cached = rt.plans[deployment.id] = {p.name: p for p in plans}
        return cached


def _endpoint(machine: Machine) -> Endpoint:
    assert machine.address is not None
    return Endpoint(
        name=machine.name,
        address=machine.address,
        port=machine.port,
        user=machine.login_user,
        identity=str(runtime().controller_key),
    )


# Steps


@DBOS.step()
async def plan_step(deployment_id: int) -> dict[str, Any]:
    """Expand the blueprint into machines and record them (once)."""

    def plan() -> dict[str, Any]:
        rt = runtime()
        with rt.store.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            blueprint = load_blueprint(deployment.blueprint_text, source=deployment.blueprint)
            plans = expand(
                blueprint,
                rt.unseal_inputs(deployment.inputs),
                deployment=deployment.name,
                completion=deployment.completion,
            )
            known = {m.name for m in deployment.machines}
            for p in plans:
                if p.name not in known:
                    deployment.machines.append(
                        Machine(
                            node=p.node,
                            index=p.index,
                            name=p.name,
                            hostname=p.hostname,
                            token=f"provisor/{deployment.id}/{p.name}",
                        )
                    )
            deployment.state, deployment.step = "deploying", "planned"
            return {
                "approval": blueprint.approval == "required",
                "machines": [
                    asdict(PlannedMachine(p.name, p.node, p.index, p.hostname)) for p in plans
                ],
                "waves": node_order(blueprint),
            }

    return await asyncio.to_thread(plan)


@DBOS.step()
async def set_state_step(deployment_id: int, state: str, step: str, event: str | None) -> None:
    await asyncio.to_thread(_set_state, deployment_id, state, step=step, event=event)


@DBOS.step()
async def launch_step(deployment_id: int, name: str) -> dict[str, Any]:
    """Launch one machine; the provider's client token makes a repeat harmless."""
    rt = runtime()
    deployment, machines = await asyncio.to_thread(_load, deployment_id)
    machine = next(m for m in machines if m.name == name)
    plan = (await asyncio.to_thread(_plans, deployment))[name]
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    await asyncio.to_thread(_update_machine, deployment_id, name, state="launching")
    existing = await provider.find(machine.token)
    if existing is not None and existing.state is not MachineState.terminated:
        info = existing
    else:
        spec = MachineSpec(
            token=machine.token,
            name=name,
            hostname=plan.hostname,
            image=plan.image,
            ssh_public_key=rt.controller_public_key,
            size=Size(plan.size.cpu, plan.size.memory_mb, plan.size.flavor),
            volumes=tuple(VolumeSpec(v.size_gb, v.mount, v.device) for v in plan.volumes),
            user_data=_with_environment(plan.user_data, plan.env, plan.secret_env),
            tags={
                "provisor:deployment": str(deployment_id),
                "provisor:machine": name,
                "provisor:tenant": str(deployment.tenant_id),
            },
            ingress=tuple(
                IngressRule(rule.protocol, rule.ports or (0, 0), rule.source)
                for rule in plan.ingress
            ),
            public_address=plan.public_address,
        )
        info = await provider.launch(spec)
        crash_point(f"launch-called:{name}")  # after the API call, before the checkpoint
    await asyncio.to_thread(
        _launched,
        deployment_id,
        name,
        info.id,
        info.address,
        info.port,
        info.login_user,
        info.host_key,
    )
    return {"id": info.id, "address": info.address}


def _with_environment(
    user_data: str | None, env: Mapping[str, str], secret: frozenset[str]
) -> str | None:
    """A shell-script user data gets the parameters as variables, as scripts do.

    Secrets are left out: user data is kept by providers (EC2 keeps it in the
    instance's attributes), so secrets reach machines only through scripts.
    """
    if not user_data or user_data.startswith("#cloud-config"):
        return user_data
    first, newline, rest = user_data.partition("\n")
    if not first.startswith("#!"):
        first, newline, rest = "#!/bin/sh", "\n", user_data
    exports = "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()) if k not in secret
    )
    return f"{first}{newline}{exports}{rest}"


def _launched(
    deployment_id: int,
    name: str,
    provider_id: str,
    address: str | None,
    port: int,
    user: str,
    host_key: str | None,
) -> None:
    rt = runtime()
    with rt.store.session() as session:
        machine = _machine(session, deployment_id, name)
        machine.provider_id, machine.address, machine.port = provider_id, address, port
        machine.login_user, machine.state = user, "running"
        deployment = machine.deployment
        prefix = f"{machine.node}.{machine.index}"
        for key, value in (("address", address or ""), ("hostname", machine.hostname)):
            set_parameter(session, deployment_id, f"{prefix}.{key}", value, "provisor")
        host = session.scalar(
            select(Host).where(Host.tenant_id == deployment.tenant_id, Host.name == name)
        )
        if host is None:
            host = Host(tenant_id=deployment.tenant_id, name=name, facts={}, groups=[])
            session.add(host)
        host.address, host.port, host.user = address or name, port, user
        host.credentials = f"key:{rt.controller_key}"
        host.state = "active"
        host.tags = {"deployment": deployment.name, "node": machine.node}
        host.facts = {**host.facts, "hostname": machine.hostname}
        group_name = f"deployment-{deployment.name}"
        group = session.scalar(
            select(Group).where(Group.tenant_id == deployment.tenant_id, Group.name == group_name)
        )
        if group is None:
            group = Group(
                tenant_id=deployment.tenant_id,
                name=group_name,
                kind="static",
                description=f"machines of deployment {deployment.name}",
                members=[],
                children=[],
            )
            session.add(group)
        if host not in group.members:
            group.members.append(host)
    if address and host_key:
        rt.trust_host_key(address, port, host_key)  # pinned: no trust-on-first-use needed


@DBOS.step()
async def reachable_step(deployment_id: int, name: str) -> None:
    rt = runtime()
    _, machines = await asyncio.to_thread(_load, deployment_id)
    machine = next(m for m in machines if m.name == name)
    await machine_ops.probe(rt.pool(), _endpoint(machine), timeout=REACHABLE_TIMEOUT)


@DBOS.step()
async def configure_step(deployment_id: int, name: str) -> None:
    """User data finished, then the node's waits, then its scripts in order."""
    rt = runtime()
    deployment, machines = await asyncio.to_thread(_load, deployment_id)
    machine = next(m for m in machines if m.name == name)
    plan = (await asyncio.to_thread(_plans, deployment))[name]
    endpoint, pool = _endpoint(machine), rt.pool()
    await asyncio.to_thread(_update_machine, deployment_id, name, state="configuring")
    if plan.user_data:
        await machine_ops.wait_user_data(pool, endpoint, timeout=REACHABLE_TIMEOUT)
    token = machine_token(rt.secret, deployment_id, name)
    await machine_ops.install_agent(pool, endpoint, url=rt.param_url, token=token, env=plan.env)
    for key in plan.waits_for:
        value = await rt.board.wait(deployment_id, key, WAIT_TIMEOUT, waiter=name)
        if value is None:
            setter = await asyncio.to_thread(expected_setter, rt.store, deployment_id, key)
            raise DeploymentFailed(
                "configure",
                name,
                f"timed out after {WAIT_TIMEOUT:g}s waiting for {key}, which {setter} should set",
            )
    for number, script in enumerate(plan.scripts, start=1):
        result = await machine_ops.run_script(
            pool, endpoint, number, script, timeout=SCRIPT_TIMEOUT
        )
        await asyncio.to_thread(
            reports.save_script_output, rt.home, deployment.name, name, number, result
        )
        if not result.ok:
            detail = result.error or f"exit status {result.exit_code}"
            tail = result.text("stderr").strip().splitlines()[-3:]
            raise DeploymentFailed(
                "configure",
                name,
                f"script {number} failed ({detail})" + (f": {' | '.join(tail)}" if tail else ""),
            )
    await asyncio.to_thread(_update_machine, deployment_id, name, state="ready")
    crash_point(f"configured:{name}")  # scripts ran, the step is not checkpointed yet


@DBOS.step()
async def outputs_step(deployment_id: int) -> dict[str, str]:
    def render() -> dict[str, str]:
        rt = runtime()
        with rt.store.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            blueprint = load_blueprint(deployment.blueprint_text, source=deployment.blueprint)
            rows = session.execute(
                select(RuntimeParameter.key, RuntimeParameter.value).where(
                    RuntimeParameter.deployment_id == deployment_id
                )
            )
            values = {key: value for key, value in rows}
            inputs = rt.unseal_inputs(deployment.inputs)
            outputs = render_outputs(blueprint, values, inputs=inputs)
            deployment.outputs = outputs
            return outputs

    return await asyncio.to_thread(render)


@DBOS.step()
async def reports_step(deployment_id: int) -> str:
    rt = runtime()
    deployment, machines = await asyncio.to_thread(_load, deployment_id)
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    consoles: dict[str, str] = {}
    for machine in machines:
        if machine.provider_id:
            try:
                consoles[machine.name] = await provider.console_log(machine.provider_id)
            except ProviderError as exc:
                consoles[machine.name] = f"(console log unavailable: {exc})\n"
    directory = await asyncio.to_thread(
        reports.write_reports, rt.home, deployment.name, [m.name for m in machines], consoles
    )
    return str(directory)


# The workflow


async def _each(step: Any, deployment_id: int, names: list[str], boundary: str) -> None:
    """Run a per-machine step on many machines at once; fail with the first error."""
    results = await asyncio.gather(
        *(step(deployment_id, name) for name in names), return_exceptions=True
    )
    for name, result in zip(names, results, strict=True):
        if isinstance(result, DeploymentFailed):
            raise result
        if isinstance(result, BaseException):
            raise DeploymentFailed(boundary, name, str(result) or type(result).__name__)
    crash_point(boundary)


@DBOS.workflow()
async def deploy_workflow(deployment_id: int) -> str:
    plan = await plan_step(deployment_id)
    crash_point("planned")
    if plan["approval"]:
        await set_state_step(
            deployment_id,
            "awaiting_approval",
            "waiting for approval",
            "deployment.awaiting_approval",
        )
        decision = await DBOS.recv_async(APPROVAL_TOPIC, timeout_seconds=30 * 24 * 3600)
        if not decision or not decision.get("approved"):
            reason = (decision or {}).get("reason") or "no decision within 30 days"
            await asyncio.to_thread(
                _set_state,
                deployment_id,
                "rejected",
                step="rejected",
                error=reason,
                event="deployment.rejected",
            )
            return "rejected"
        await set_state_step(deployment_id, "deploying", "approved", "deployment.approved")
        crash_point("approved")
    names = [m["name"] for m in plan["machines"]]
    step = "launch"
    try:
        await set_state_step(deployment_id, "deploying", "launching machines", None)
        await _each(launch_step, deployment_id, names, "launched")
        step = "reachability"
        await set_state_step(deployment_id, "deploying", "waiting for SSH", None)
        await _each(reachable_step, deployment_id, names, "reachable")
        step = "configure"
        for number, wave in enumerate(plan["waves"], start=1):
            members = [m["name"] for m in plan["machines"] if m["node"] in wave]
            await set_state_step(deployment_id, "deploying", f"configuring {', '.join(wave)}", None)
            await _each(configure_step, deployment_id, members, f"configured-{number}")
        step = "outputs"
        await outputs_step(deployment_id)
        crash_point("outputs")
    except Exception as exc:  # the deployment fails; the workflow itself completes
        message = str(exc) if isinstance(exc, DeploymentFailed) else f"{step}: {exc}"
        await reports_step(deployment_id)
        await asyncio.to_thread(
            _set_state,
            deployment_id,
            "failed",
            step=f"failed at {step}",
            error=message,
            event="deployment.failed",
        )
        return "failed"
    await reports_step(deployment_id)
    await set_state_step(deployment_id, "ready", "ready", "deployment.ready")
    return "ready"


__all__ = ["APPROVAL_TOPIC", "deploy_workflow"]
