"""Fleet configuration changes: plan, check, apply and roll back a change set on the hosts
of a target, each a fleet job (kind `config-<mode>`, its id the apply's id).

Everything a change set could get wrong is found before a host is touched: the
document is checked (file, line, field), then rendered for every host (an undefined
variable names the host). An apply records the state of every object it is about to
change, sealed, before it changes it; a rollback writes those states back.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import insert, select

from provisor.core.access import Action
from provisor.core.changes.load import load_change_set
from provisor.core.changes.model import (
    Change,
    ChangeSet,
    ObjectKey,
    Resource,
    State,
    UserResource,
    UserState,
    state_from_json,
    state_json,
)
from provisor.core.changes.render import HostContext, render
from provisor.core.errors import InvalidInput, NotFound, ParseErrors
from provisor.core.facts import readable
from provisor.core.masking import NO_SECRETS, Masker
from provisor.core.rollout import Rollout
from provisor.services.context import Context
from provisor.services.groups import resolve_members
from provisor.services.jobs import JobRunner, JobView
from provisor.services.results import HostResult
from provisor.services.targets import resolve_target
from provisor.store.changes import ChangeSnapshot
from provisor.store.models import Group, Host, Job, JobResult

if TYPE_CHECKING:
    from provisor.fleet.changes.operation import ConfigOperation, Mode
    from provisor.fleet.transport import Endpoint

MAX_CHANGE_SET = 2_000_000  # characters of a change set document
APPLY = "config-apply"
KINDS = ("config-plan", "config-check", APPLY, "config-rollback")

StartCallback = Callable[[JobView], None]
ResultCallback = Callable[[HostResult], None]


class ConfigOptions(BaseModel):
    """How a configuration job reaches and works through its hosts."""

    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)
    timeout: float = Field(
        default=600.0, gt=0, le=24 * 3600, description="seconds each host's script may run"
    )
    user: str | None = Field(default=None, description="login user for hosts that name none")
    identity: str | None = Field(default=None, description="(CLI) key file for hosts without one")


def parse_change_set(text: str, source: str) -> ChangeSet:
    """The change set in `text`, checked; errors name `source`, line and field."""
    if len(text) > MAX_CHANGE_SET:
        raise InvalidInput(
            f"{source}: {len(text):,} characters, more than the {MAX_CHANGE_SET:,} a change "
            "set may have",
            field="change_set",
        )
    return load_change_set(text, source)


async def run_config(
    ctx: Context,
    mode: Mode,
    text: str,
    source: str,
    target: str,
    *,
    options: ConfigOptions | None = None,
    rollout: Rollout | None = None,
    runner: JobRunner | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> JobView:
    """Plan, check or apply the change set `text` on the hosts of `target`."""
    if mode == "rollback":
        raise InvalidInput("a rollback names an apply: rollback_apply", field="mode")
    options = options or ConfigOptions()
    action = Action.config_apply if mode == "apply" else Action.config_check
    ctx.require(action, target)
    change_set = parse_change_set(text, source)
    endpoints = await asyncio.to_thread(
        resolve_target, ctx, target, user=options.user, identity=options.identity
    )
    per_host = await asyncio.to_thread(_render_all, ctx, change_set, endpoints, source)
    return await apply_resources(
        ctx,
        mode,
        per_host,
        target,
        endpoints,
        label=change_set.name or source,
        action=action,
        options=options,
        rollout=rollout,
        runner=runner,
        secrets=_secrets_of(change_set),
        parameters={
            "change_set": change_set.name or source,
            "resources": len(change_set.resources),
        },
        on_start=on_start,
        on_result=on_result,
    )


async def apply_resources(
    ctx: Context,
    mode: Mode,
    per_host: dict[str, list[Resource]],
    target: str,
    endpoints: list[Endpoint],
    *,
    label: str,
    action: Action,
    options: ConfigOptions,
    rollout: Rollout | None = None,
    runner: JobRunner | None = None,
    secrets: Masker = NO_SECRETS,
    parameters: dict[str, Any],
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> JobView:
    """Plan, check or apply resources already rendered for each host of `endpoints`
    (the caller has checked `action` on `target`)."""
    from provisor.fleet.changes.operation import ConfigOperation

    job_id: list[int] = []
    operation = ConfigOperation(
        mode,
        label,
        resources=per_host,
        keep_snapshot=_keeper(ctx, job_id) if mode == "apply" else None,
        timeout=options.timeout,
    )
    staged = rollout if mode == "apply" and rollout and rollout.staged else None
    return await _run(
        ctx,
        runner,
        target,
        operation,
        endpoints,
        action=action,
        options=options,
        rollout=staged,
        secrets=secrets,
        parameters={**parameters, **({"rollout": staged.describe()} if staged else {})},
        job_id=job_id,
        on_start=on_start,
        on_result=on_result,
    )


async def rollback_apply(
    ctx: Context,
    apply_id: int,
    target: str | None = None,
    *,
    options: ConfigOptions | None = None,
    runner: JobRunner | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> JobView:
    """Write back, on each host the apply changed (of `target`, if given), the state of
    every object the apply recorded before changing it."""
    options = options or ConfigOptions()
    ctx.require(Action.config_apply, target or f"apply {apply_id}")
    snapshots, apply_target = await asyncio.to_thread(_snapshots, ctx, apply_id)
    hosts = sorted(snapshots)
    if target is not None:
        chosen = {
            e.name
            for e in await asyncio.to_thread(
                resolve_target, ctx, target, user=options.user, identity=options.identity
            )
        }
        hosts = [h for h in hosts if h in chosen]
    if not hosts:
        raise NotFound(
            f"apply {apply_id} changed no host"
            + (f" of {target!r}" if target else "")
            + ": nothing to roll back",
            field="target",
        )
    endpoints = await asyncio.to_thread(
        resolve_target, ctx, ",".join(hosts), user=options.user, identity=options.identity
    )
    from provisor.fleet.changes.operation import ConfigOperation

    operation = ConfigOperation(
        "rollback",
        f"of apply {apply_id}",
        snapshots={h: snapshots[h] for h in hosts},
        timeout=options.timeout,
    )
    secrets = Masker.of(
        *(
            state.password_hash
            for snapshot in snapshots.values()
            for _, state in snapshot
            if isinstance(state, UserState) and state.password_hash
        )
    )
    return await _run(
        ctx,
        runner,
        target or apply_target,
        operation,
        endpoints,
        action=Action.config_apply,
        options=options,
        secrets=secrets,
        parameters={"rolls_back": apply_id},
        on_start=on_start,
        on_result=on_result,
    )


async def _run(
    ctx: Context,
    runner: JobRunner | None,
    target: str,
    operation: ConfigOperation,
    endpoints: list[Endpoint],
    *,
    action: Action,
    options: ConfigOptions,
    rollout: Rollout | None = None,
    secrets: Masker = NO_SECRETS,
    parameters: dict[str, Any],
    job_id: list[int] | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> JobView:
    own = runner is None
    runner = runner or JobRunner()

    def started(job: JobView) -> None:
        if job_id is not None:
            job_id.append(job.id)  # the snapshots' job, known before any host is worked on
        if on_start is not None:
            on_start(job)

    try:
        return await runner.run_operation(
            ctx,
            target,
            operation,
            action=action,
            endpoints=endpoints,
            parallel=options.parallel,
            connect_timeout=options.connect_timeout,
            rollout=rollout,
            secrets=secrets,
            parameters=parameters,
            on_start=started,
            on_result=on_result,
        )
    finally:
        if own:
            await runner.close()


def _secrets_of(change_set: ChangeSet) -> Masker:
    return Masker.of(
        *(
            r.password_hash
            for r in change_set.resources
            if isinstance(r, UserResource) and r.password_hash
        )
    )


def _render_all(
    ctx: Context, change_set: ChangeSet, endpoints: Sequence[Endpoint], source: str
) -> dict[str, list[Resource]]:
    """The change set rendered for each host; every host's errors, or none touched."""
    contexts = _host_contexts(ctx, endpoints)
    rendered: dict[str, list[Resource]] = {}
    errors: list[InvalidInput] = []
    for endpoint in endpoints:
        try:
            rendered[endpoint.name] = render(change_set, contexts[endpoint.name])
        except InvalidInput as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:  # twenty hosts' errors say it all
        raise ParseErrors([*errors[:20]], source=source)
    return rendered


def _host_contexts(ctx: Context, endpoints: Sequence[Endpoint]) -> dict[str, HostContext]:
    """What templates know of each host: its inventory facts, tags and groups."""
    ids = {e.host_id for e in endpoints if e.host_id is not None}
    with ctx.store.session() as session:
        tenant_id = ctx.tenant_id()
        hosts = (
            {
                h.id: h
                for h in session.scalars(
                    select(Host).where(Host.tenant_id == tenant_id, Host.id.in_(ids))
                )
            }
            if ids
            else {}
        )
        groups: dict[int, list[str]] = defaultdict(list)
        for group in session.scalars(
            select(Group).where(Group.tenant_id == tenant_id).order_by(Group.name)
        ):
            for member in resolve_members(session, tenant_id, group):
                if member.id in hosts:
                    groups[member.id].append(group.name)
        contexts = {}
        for e in endpoints:
            host = hosts.get(e.host_id) if e.host_id is not None else None
            contexts[e.name] = HostContext(
                name=e.name,
                address=e.address,
                facts=readable(host.facts) if host else {},
                tags=dict(host.tags) if host else {},
                groups=tuple(groups.get(host.id, ())) if host else (),
            )
        return contexts


def _keeper(ctx: Context, job_id: list[int]) -> Callable[[str, Sequence[Change]], Any]:
    """Saves, sealed, the states an apply is about to change on a host."""
    from provisor.orchestrator.secrets import seal

    def save(host: str, changes: Sequence[Change]) -> None:
        (job,) = job_id
        rows = [
            {
                "job_id": job,
                "host": host,
                "position": position,
                "kind": change.key.kind,
                "name": change.key.name,
                "state": seal(ctx.home, json.dumps(state_json(change.before))),
            }
            for position, change in enumerate(changes)
        ]
        with ctx.store.session() as session:
            session.execute(insert(ChangeSnapshot), rows)

    async def keep(host: str, changes: Sequence[Change]) -> None:
        await asyncio.to_thread(save, host, changes)

    return keep


def _snapshots(ctx: Context, apply_id: int) -> tuple[dict[str, list[tuple[ObjectKey, State]]], str]:
    """Per host, the states apply `apply_id` recorded, in the order to write them back
    (the reverse of the apply's: a package's config before the package)."""
    from provisor.orchestrator.secrets import unseal

    with ctx.store.session() as session:
        job = session.get(Job, apply_id)
        if job is None or job.tenant_id != ctx.tenant_id() or job.kind != APPLY:
            raise NotFound(f"no configuration apply {apply_id}", field="id")
        rows = session.scalars(
            select(ChangeSnapshot)
            .where(ChangeSnapshot.job_id == apply_id)
            .order_by(ChangeSnapshot.host, ChangeSnapshot.position.desc())
        ).all()
        found: dict[str, list[tuple[ObjectKey, State]]] = defaultdict(list)
        for row in rows:
            key = ObjectKey(row.kind, row.name)  # type: ignore[arg-type]
            found[row.host].append(
                (key, state_from_json(key.kind, json.loads(unseal(ctx.home, row.state))))
            )
        return dict(found), job.target


class HistoryEntry(BaseModel):
    job: int
    kind: str
    change_set: str | None
    rolls_back: int | None
    actor: str
    created_at: datetime
    outcome: str
    changes: int | None
    error: str | None


def change_history(ctx: Context, host: str, *, limit: int = 100) -> list[HistoryEntry]:
    """The configuration jobs that worked on `host`, newest first."""
    ctx.require(Action.jobs_read)
    with ctx.store.session() as session:
        rows = session.execute(
            select(Job, JobResult)
            .join(JobResult, JobResult.job_id == Job.id)
            .where(
                Job.tenant_id == ctx.tenant_id(),
                Job.kind.in_(KINDS),
                JobResult.host == host,
            )
            .order_by(Job.id.desc())
            .limit(limit)
        ).all()
        return [
            HistoryEntry(
                job=job.id,
                kind=job.kind,
                change_set=(job.parameters or {}).get("change_set"),
                rolls_back=(job.parameters or {}).get("rolls_back"),
                actor=job.actor,
                created_at=job.created_at,
                outcome=result.outcome,
                changes=(result.details or {}).get("changes"),
                error=result.error,
            )
            for job, result in rows
        ]
