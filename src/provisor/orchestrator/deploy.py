"""The deployment workflow: plan, approval, launch, reachability, configuration, outputs.

Every step is a DBOS step: its result is checkpointed, so a controller killed at
any moment resumes where it stopped. Launches are idempotent: a provider launches
a token once, and asked again returns that machine.

Every step holds the deployment's lock and first checks that the deployment is still
its workflow's and not being removed (`_owned`): `down` marks the deployment
`terminating`, cancels the workflow (a step other than the launch is preempted within
about a second) and takes the lock, so it sweeps only once no step is running, and
no step runs afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from dbos import DBOS
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from provisor.core.blueprint import (
    AUTOMATIC_KEYS,
    HOST_KEYS,
    MachinePlan,
    expand,
    load_blueprint,
    node_order,
    render_outputs,
)
from provisor.core.masking import Masker
from provisor.core.names import deployment_group
from provisor.events import record_event
from provisor.fleet.knownhosts import preferred_key
from provisor.fleet.results import HostResult
from provisor.fleet.transport import Endpoint, machine_trust_id
from provisor.orchestrator import deployment_lock, key_report, machine_ops, reports
from provisor.orchestrator.key_report import host_keys_token
from provisor.orchestrator.params import (
    expected_setter,
    machine_token,
    set_parameters,
)
from provisor.orchestrator.runtime import runtime
from provisor.providers import (
    IngressRule,
    MachineInfo,
    MachineSpec,
    Provider,
    ProviderError,
    Size,
    VolumeSpec,
)
from provisor.store.models import Group, Host, Tenant, group_members
from provisor.store.orchestration import Deployment, Machine, RuntimeParameter

REACHABLE_TIMEOUT = 180.0
SCRIPT_TIMEOUT = 1800.0
WAIT_TIMEOUT = 600.0
APPROVAL_TOPIC = "approval"
LOCK_TIMEOUT = 900.0  # a step waits this long for `down` to let go of the deployment
CONSOLE_CONCURRENCY = 16  # console logs asked of the provider at once (a cloud: API calls)
P = ParamSpec("P")
R = TypeVar("R")


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


class Removed(Exception):
    """The deployment is being removed, or is gone: its workflow stops, touching nothing."""


def _boundary(name: str) -> None:
    """A step boundary, raised as the audit event `provisor.step` (PEP 578): crash tests
    hook it to kill the controller exactly here (provisor.testing.crash)."""
    sys.audit("provisor.step", name)


def _check_owned(deployment_id: int, workflow_id: str) -> None:
    with runtime().store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None or deployment.workflow_id != workflow_id:
            raise Removed(f"deployment {deployment_id} of {workflow_id} was removed")
        if deployment.state == "terminating":
            raise Removed(f"deployment {deployment.name} is being removed")


@contextlib.asynccontextmanager
async def _owned(deployment_id: int) -> AsyncIterator[None]:
    """Hold the deployment's lock, and go on only if it is still this workflow's and not
    being removed (rows ids may be reused; the workflow id never is)."""
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    async with deployment_lock.hold(runtime().home, workflow_id, timeout=LOCK_TIMEOUT):
        await asyncio.to_thread(_check_owned, deployment_id, workflow_id)
        yield


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
        if deployment.state == "terminating":  # `down` took over between check and here
            return
        if state is not None:
            deployment.state = state
        if step is not None:
            deployment.step = step
        if error is not None:  # may quote a script's output: its secrets masked
            error = deployment.error = rt.masker(deployment).text(error)
        if event is not None:
            tenant = session.get(Tenant, deployment.tenant_id)
            record_event(
                session,
                actor="orchestrator",
                tenant=tenant.name if tenant else "default",
                kind=event,
                subject=deployment.name,
                outcome="failed" if state == "failed" else "ok",
                details={
                    "step": deployment.step,
                    "instance": deployment.instance,
                    **({"error": error} if error else {}),
                },
            )


def _update_machine(deployment_id: int, name: str, **values: Any) -> None:
    # One UPDATE statement: no ORM load of the row first.
    with runtime().store.engine.begin() as connection:
        result = connection.execute(
            update(Machine)
            .where(Machine.deployment_id == deployment_id, Machine.name == name)
            .values(**values)
        )
    assert result.rowcount == 1, name


def _load(
    deployment_id: int,
    names: list[str] | None = None,
    *,
    mark: str | None = None,
    skip_ready: bool = False,
    step: str | None = None,
) -> tuple[Deployment, list[Machine]]:
    """The deployment and its machines (only `names`, in that order, when given).

    `skip_ready` leaves out machines already ready; `mark` sets the state of the
    machines returned and `step` the deployment's current step, in the same transaction.
    """
    with runtime().store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        if step is not None and deployment.state != "terminating":
            deployment.state, deployment.step = "deploying", step
        if names is None:
            machines = list(deployment.machines)
        else:
            found = {
                m.name: m
                for m in session.scalars(
                    select(Machine).where(
                        Machine.deployment_id == deployment_id, Machine.name.in_(names)
                    )
                )
            }
            machines = [found[name] for name in names]
        if skip_ready:
            machines = [m for m in machines if m.state != "ready"]
        if mark is not None:
            for machine in machines:
                machine.state = mark
            session.flush()
        session.expunge_all()
        return deployment, machines


def _parameters(deployment_id: int) -> dict[str, str]:
    with runtime().store.engine.connect() as connection:
        rows = connection.execute(
            select(RuntimeParameter.key, RuntimeParameter.value).where(
                RuntimeParameter.deployment_id == deployment_id
            )
        )
        return {key: value for key, value in rows}


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


def machine_endpoint(deployment: Deployment, machine: Machine) -> Endpoint:
    """How the controller reaches a machine; its host key is that of its instance."""
    assert machine.address is not None and machine.provider_id is not None
    return Endpoint(
        name=machine.name,
        address=machine.address,
        port=machine.port,
        user=machine.login_user,
        identity=str(runtime().controller_key),
        trust_id=machine_trust_id(deployment.provider, machine.provider_id),
    )


# Steps


def _step(
    *, preemptible: bool = True
) -> Callable[
    [Callable[Concatenate[int, P], Awaitable[R]]], Callable[Concatenate[int, P], Awaitable[R]]
]:
    """A DBOS step of a deployment's workflow (its first argument the deployment id) that
    runs `_owned`. Preemptible: cancelling the workflow stops it within about a second,
    which only a launch must not be (a machine whose launch is cut short would be
    neither recorded nor finished)."""

    def wrap(
        func: Callable[Concatenate[int, P], Awaitable[R]],
    ) -> Callable[Concatenate[int, P], Awaitable[R]]:
        @functools.wraps(func)
        async def owned(deployment_id: int, /, *args: P.args, **kwargs: P.kwargs) -> R:
            async with _owned(deployment_id):
                return await func(deployment_id, *args, **kwargs)

        return DBOS.step(preemptible=preemptible)(owned)

    return wrap


@_step()
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
            with rt.plans_lock:  # the steps that follow need them too
                rt.plans[deployment_id] = {p.name: p for p in plans}
            known = {m.name for m in deployment.machines}
            for p in plans:
                if p.name not in known:
                    deployment.machines.append(
                        Machine(
                            node=p.node,
                            index=p.index,
                            name=p.name,
                            hostname=p.hostname,
                            token=f"provisor/{deployment.instance}/{p.name}",
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


@_step()
async def set_state_step(deployment_id: int, state: str, step: str, event: str | None) -> None:
    await asyncio.to_thread(_set_state, deployment_id, state, step=step, event=event)


@_step(preemptible=False)
async def launch_step(deployment_id: int, names: list[str]) -> list[tuple[str, str, str]]:
    """Launch the machines at once and record them; the failures, if any.

    One checkpoint for all: run again after a crash, the step finds each machine
    launched before by its client token instead of launching it twice.
    """
    rt = runtime()
    deployment, machines = await asyncio.to_thread(
        _load, deployment_id, names, mark="launching", step="launching machines"
    )
    plans = await asyncio.to_thread(_plans, deployment)
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    results = await asyncio.gather(
        *(_launch(provider, deployment, m, plans[m.name]) for m in machines),
        return_exceptions=True,
    )
    launched = [
        (m, r) for m, r in zip(machines, results, strict=True) if isinstance(r, MachineInfo)
    ]
    await asyncio.to_thread(_launched, deployment, launched)
    masker = await asyncio.to_thread(rt.masker, deployment)
    return _failures(machines, results, "launched", masker)


async def _launch(
    provider: Provider,
    deployment: Deployment,
    machine: Machine,
    plan: MachinePlan,
    *,
    replaces: str | None = None,
) -> MachineInfo:
    """The machine with this token: the provider launches it once, and completes a launch
    a crash interrupted (its volumes, its address) when asked again. `replaces`: the
    provider id of the machine it takes the place of (see MachineSpec.replaces)."""
    rt = runtime()
    report = None
    if rt.param_url:  # where the machine reports its host keys, if the provider cannot
        token = host_keys_token(rt.signing_key, deployment.instance, machine.name)
        report = key_report.report_commands(rt.param_url, rt.param_certificate, token)
    spec = MachineSpec(
        token=machine.token,
        name=machine.name,
        hostname=plan.hostname,
        image=plan.image,
        ssh_public_key=rt.controller_public_key,
        size=Size(plan.size.cpu, plan.size.memory_mb, plan.size.flavor),
        volumes=tuple(VolumeSpec(v.size_gb, v.mount, v.device) for v in plan.volumes),
        user_data=_with_environment(plan.user_data, plan.env, plan.secret_env),
        tags={  # the instance, never reused: `down` finds the machines by it
            "provisor:deployment": deployment.instance,
            "provisor:machine": machine.name,
            "provisor:tenant": str(deployment.tenant_id),
        },
        ingress=tuple(
            IngressRule(rule.protocol, rule.ports or (0, 0), rule.source) for rule in plan.ingress
        ),
        public_address=plan.public_address,
        host_key_report=report,
        replaces=replaces,
    )
    _boundary(f"launching:{machine.name}")  # the provider not called yet
    info = await provider.launch(spec)
    _boundary(f"launch-called:{machine.name}")  # after the API call, before the checkpoint
    return info


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


def _launched(deployment: Deployment, launched: list[tuple[Machine, MachineInfo]]) -> None:
    """Record launched machines, their parameters, their inventory hosts: one transaction,
    a few statements for all of them (each executed for many rows)."""
    if not launched:
        return
    rt = runtime()
    with rt.store.session() as session:
        group_id = _deployment_group(session, deployment)
        session.execute(
            update(Machine),
            [
                {
                    "id": machine.id,
                    "provider_id": info.id,
                    "address": info.address,
                    "port": info.port,
                    "login_user": info.login_user,
                    "state": "running",
                }
                for machine, info in launched
            ],
        )
        set_parameters(
            session,
            deployment.id,
            {
                f"{machine.node}.{machine.index}.{key}": value
                for machine, info in launched
                for key, value in (("address", info.address or ""), ("hostname", machine.hostname))
            },
            "provisor",
        )
        host_ids = _record_hosts(session, deployment, launched)
        members = set(
            session.scalars(
                select(group_members.c.host_id).where(group_members.c.group_id == group_id)
            )
        )
        joining = [
            {"group_id": group_id, "host_id": i} for i in host_ids.values() if i not in members
        ]
        if joining:
            session.execute(insert(group_members), joining)
        rt.host_keys(deployment.tenant_id).pin(
            {  # pinned from the provider: no trust on first use
                Endpoint(
                    name=machine.name,
                    address=info.address,
                    port=info.port,
                    trust_id=machine_trust_id(deployment.provider, info.id),
                    host_id=host_ids[machine.name],
                ): info.host_key
                for machine, info in launched
                if info.address and info.host_key
            },
            session=session,
        )


def _deployment_group(session: Session, deployment: Deployment) -> int:
    """The id of the inventory group `deployment-NAME` (made when missing)."""
    group_name = deployment_group(deployment.name)
    group_id = session.scalar(
        select(Group.id).where(Group.tenant_id == deployment.tenant_id, Group.name == group_name)
    )
    if group_id is not None:
        return group_id
    group = Group(
        tenant_id=deployment.tenant_id,
        name=group_name,
        kind="static",
        description=f"machines of deployment {deployment.name}",
        members=[],
        children=[],
    )
    session.add(group)
    session.flush()
    return group.id


def _record_hosts(
    session: Session, deployment: Deployment, launched: list[tuple[Machine, MachineInfo]]
) -> dict[str, int]:
    """The machines as inventory hosts (new ones added, known ones updated); their ids
    by name."""
    known = {
        name: (host_id, facts)
        for name, host_id, facts in session.execute(
            select(Host.name, Host.id, Host.facts).where(
                Host.tenant_id == deployment.tenant_id,
                Host.name.in_([machine.name for machine, _ in launched]),
            )
        )
    }
    credentials = f"key:{runtime().controller_key}"
    fresh, changed = [], []
    for machine, info in launched:
        row = {
            "address": info.address or machine.name,
            "port": info.port,
            "user": info.login_user,
            "credentials": credentials,
            "state": "active",
            "tags": {"deployment": deployment.name, "node": machine.node},
        }
        if machine.name in known:
            host_id, facts = known[machine.name]
            changed.append({**row, "id": host_id, "facts": {**facts, "hostname": machine.hostname}})
        else:
            fresh.append(
                {
                    **row,
                    "tenant_id": deployment.tenant_id,
                    "name": machine.name,
                    "facts": {"hostname": machine.hostname},
                }
            )
    if changed:
        session.execute(update(Host), changed)
    ids = {name: host_id for name, (host_id, _) in known.items()}
    if fresh:
        added = session.execute(insert(Host).returning(Host.name, Host.id), fresh)
        ids.update({name: host_id for name, host_id in added})
    return ids


class _Failed(Exception):
    """A machine's configuration failed at `step` (becomes a DeploymentFailed)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step, self.message = step, message


def _failures(
    machines: list[Machine], results: list[Any], boundary: str, masker: Masker
) -> list[tuple[str, str, str]]:
    """(step, machine, message) of each machine that failed, in order; a message may
    quote a machine's output, so the deployment's secrets are masked in it (it is
    checkpointed, and becomes the deployment's error)."""
    failed = []
    for machine, result in zip(machines, results, strict=True):
        if isinstance(result, _Failed):
            failed.append((result.step, machine.name, masker.text(result.message)))
        elif isinstance(result, Exception):
            message = str(result) or type(result).__name__
            failed.append((boundary, machine.name, masker.text(message)))
        elif isinstance(result, BaseException):
            raise result  # cancelled: nothing to checkpoint
    return failed


@_step()
async def reachability_step(deployment_id: int, names: list[str]) -> list[tuple[str, str, str]]:
    """Every machine answers SSH (all at once), its key pinned first; the failures, if any.

    One checkpoint for all: probing again after a crash is harmless.
    """
    rt = runtime()
    deployment, machines = await asyncio.to_thread(
        _load, deployment_id, names, step="waiting for SSH"
    )
    results = await asyncio.gather(
        *(_reach(deployment, m) for m in machines), return_exceptions=True
    )
    masker = await asyncio.to_thread(rt.masker, deployment)
    return _failures(machines, results, "reachable", masker)


async def _reach(deployment: Deployment, machine: Machine) -> None:
    """SSH answers, with the machine's host key pinned before the first connection: from
    the provider at launch, or else as the machine reported it at first boot."""
    rt = runtime()
    endpoint = machine_endpoint(deployment, machine)
    keys = rt.host_keys(deployment.tenant_id)
    if keys.trusted(endpoint) is None:
        parameter = f"{machine.node}.{machine.index}.{HOST_KEYS}"
        reported = await rt.board.wait(
            deployment.id, parameter, REACHABLE_TIMEOUT, waiter="provisor"
        )
        if reported is None:
            raise _Failed(
                "reachable",
                f"its SSH host keys were not reported within {REACHABLE_TIMEOUT:g}s (its "
                "user data sends them at first boot, and they are pinned before the first "
                "SSH connection; see its console log)",
            )
        host_id = await asyncio.to_thread(_host_id, deployment.tenant_id, machine.name)
        pinned = preferred_key(reported.splitlines())
        await asyncio.to_thread(keys.pin, {replace(endpoint, host_id=host_id): pinned})
    await machine_ops.probe(rt.pool(deployment.tenant_id), endpoint, timeout=REACHABLE_TIMEOUT)


def _host_id(tenant_id: int, name: str) -> int | None:
    with runtime().store.session() as session:
        return session.scalar(select(Host.id).where(Host.tenant_id == tenant_id, Host.name == name))


def _script_done(
    deployment: Deployment, name: str, number: int, result: HostResult, last: bool
) -> None:
    """Keep a script's output; after the last one succeeded, the machine is ready."""
    rt = runtime()
    base = reports.deployment_dir(rt.home, deployment.name, deployment.instance)
    reports.save_script_output(base, name, number, result)
    if last and result.ok:
        _update_machine(deployment.id, name, state="ready")


async def _configure(deployment: Deployment, machine: Machine, plan: Any) -> None:
    """User data finished, then the node's waits, then its scripts in order."""
    rt = runtime()
    name, deployment_id = machine.name, deployment.id
    endpoint, pool = machine_endpoint(deployment, machine), rt.pool(deployment.tenant_id)
    own = f"{machine.node}.{machine.index}"
    # The values provisor published that the machine reads most (its own, and the ones
    # it waits for) never change: the machine answers them itself.
    fixed = [f"{own}.{key}" for key in sorted(AUTOMATIC_KEYS)] + [
        key for key in plan.waits_for if key.rsplit(".", 1)[-1] in AUTOMATIC_KEYS
    ]
    known = {key: value for key in fixed if (value := rt.board.known(deployment_id, key))}
    setup = machine_ops.Setup(
        url=rt.param_url,
        certificate=rt.param_certificate,
        token=machine_token(rt.signing_key, deployment.instance, name),
        env=plan.env,
        known=known,
        scripts=plan.scripts,
        user_data=bool(plan.user_data),
    )
    await machine_ops.prepare(pool, endpoint, setup, timeout=REACHABLE_TIMEOUT)
    for key in plan.waits_for:
        value = await rt.board.wait(deployment_id, key, WAIT_TIMEOUT, waiter=name)
        if value is None:
            setter = await asyncio.to_thread(expected_setter, rt.store, deployment_id, key)
            raise _Failed(
                "configure",
                f"timed out after {WAIT_TIMEOUT:g}s waiting for {key}, which {setter} should set",
            )
    masker = await asyncio.to_thread(rt.masker, deployment)
    for number in range(1, len(plan.scripts) + 1):
        result = await machine_ops.run_script(pool, endpoint, number, timeout=SCRIPT_TIMEOUT)
        result = result.masked(masker)  # before it is kept anywhere, or quoted
        last = number == len(plan.scripts)
        await asyncio.to_thread(_script_done, deployment, name, number, result, last)
        if not result.ok:
            detail = result.error or f"exit status {result.exit_code}"
            tail = result.text("stderr").strip().splitlines()[-3:]
            raise _Failed(
                "configure",
                f"script {number} failed ({detail})" + (f": {' | '.join(tail)}" if tail else ""),
            )
    if not plan.scripts:
        await asyncio.to_thread(_update_machine, deployment_id, name, state="ready")
    _boundary(f"configured:{name}")  # scripts ran, the step is not checkpointed yet


@_step()
async def configure_wave_step(
    deployment_id: int, names: list[str], nodes: list[str], boundary: str
) -> list[tuple[str, str, str]]:
    """Configure a wave's machines at once; the failures, if any.

    One checkpoint for the wave: a machine that was ready before a crash is not
    configured again when the step runs again (its state says so).
    """
    deployment, machines = await asyncio.to_thread(
        _load,
        deployment_id,
        names,
        mark="configuring",
        skip_ready=True,
        step=f"configuring {', '.join(nodes)}",
    )
    plans = await asyncio.to_thread(_plans, deployment)
    # Every machine's address and hostname are known by now: the machines' and the
    # waits' first reads are answered from memory.
    board = runtime().board
    board.remember(deployment_id, await asyncio.to_thread(_parameters, deployment_id))
    board.remember_prefixes(deployment_id, {m.name: f"{m.node}.{m.index}" for m in machines})
    results = await asyncio.gather(
        *(_configure(deployment, m, plans[m.name]) for m in machines), return_exceptions=True
    )
    masker = await asyncio.to_thread(runtime().masker, deployment)
    return _failures(machines, results, boundary, masker)


@_step()
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
            values = {key: rt.board.opened(value) for key, value in rows}
            inputs = rt.unseal_inputs(deployment.inputs)
            # Shown to people: a runtime parameter that holds a secret stays hidden.
            outputs: dict[str, str] = rt.masker(deployment).value(
                render_outputs(blueprint, values, inputs=inputs)
            )
            deployment.outputs = outputs
            return outputs

    return await asyncio.to_thread(render)


@_step()
async def reports_step(deployment_id: int) -> str:
    rt = runtime()
    deployment, machines = await asyncio.to_thread(_load, deployment_id)
    provider = rt.provider(deployment.provider, deployment.tenant_id)
    limit = asyncio.Semaphore(CONSOLE_CONCURRENCY)

    async def console(name: str, provider_id: str) -> tuple[str, str]:
        async with limit:
            try:
                return name, await provider.console_log(provider_id)
            except ProviderError as exc:
                return name, f"(console log unavailable: {exc})\n"

    # At once (a few at a time): one after the other, 300 machines' took seconds.
    consoles = dict(
        await asyncio.gather(*(console(m.name, m.provider_id) for m in machines if m.provider_id))
    )
    masker = await asyncio.to_thread(rt.masker, deployment)
    directory = await asyncio.to_thread(
        reports.write_reports,
        reports.deployment_dir(rt.home, deployment.name, deployment.instance),
        [m.name for m in machines],
        consoles,
        masker,
    )
    return str(directory)


# The workflow


def _fail_on(failures: list[tuple[str, str, str]] | list[list[str]]) -> None:
    """Raise the first failure a step returned (checkpointed as a value, not an error)."""
    if failures:
        step, machine, message = failures[0]
        raise DeploymentFailed(step, machine, message)


async def _end(deployment_id: int, state: str, step: str, error: str, event: str) -> None:
    """Record how the deployment ended (in the workflow, not a step: its error is
    checkpointed already)."""
    async with _owned(deployment_id):
        await asyncio.to_thread(
            _set_state, deployment_id, state, step=step, error=error, event=event
        )


@DBOS.workflow()
async def deploy_workflow(deployment_id: int) -> str:
    try:
        return await _deploy(deployment_id)
    except Removed:  # `down` took over: what was made is its to remove
        return "removed"


async def _deploy(deployment_id: int) -> str:
    plan = await plan_step(deployment_id)
    _boundary("planned")
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
            await _end(deployment_id, "rejected", "rejected", reason, "deployment.rejected")
            return "rejected"
        await set_state_step(deployment_id, "deploying", "approved", "deployment.approved")
        _boundary("approved")
    names = [m["name"] for m in plan["machines"]]
    board = runtime().board
    board.open_deployment(deployment_id)  # its runtime parameters kept in memory
    try:
        step = "launch"
        try:
            _fail_on(await launch_step(deployment_id, names))
            _boundary("launched")
            step = "reachability"
            _fail_on(await reachability_step(deployment_id, names))
            _boundary("reachable")
            step = "configure"
            for number, wave in enumerate(plan["waves"], start=1):
                members = [m["name"] for m in plan["machines"] if m["node"] in wave]
                boundary = f"configured-{number}"
                _fail_on(await configure_wave_step(deployment_id, members, wave, boundary))
                _boundary(boundary)
            step = "outputs"
            await outputs_step(deployment_id)
            _boundary("outputs")
        except Removed:
            raise
        except Exception as exc:  # the deployment fails; the workflow itself completes
            message = str(exc) if isinstance(exc, DeploymentFailed) else f"{step}: {exc}"
            await reports_step(deployment_id)
            await _end(deployment_id, "failed", f"failed at {step}", message, "deployment.failed")
            return "failed"
        await reports_step(deployment_id)
        await set_state_step(deployment_id, "ready", "ready", "deployment.ready")
        return "ready"
    finally:
        board.close_deployment(deployment_id)
        runtime().forget_deployment(deployment_id)


__all__ = ["APPROVAL_TOPIC", "Removed", "deploy_workflow"]
