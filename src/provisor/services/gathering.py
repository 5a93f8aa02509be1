"""`hosts gather`: facts read from every host of a target over SSH, kept in the inventory.

It is a fleet job (`gather`) with a result per host and a `hosts.gathered` event: each
host that answers gets its gathered facts replaced (the keys of `core.gather.GATHERED`,
documented in docs/concepts.md); a host that fails is reported and keeps the facts it
had. Only inventory hosts can be gathered: there is nowhere to keep the facts of a host
outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from provisor.core.access import Action
from provisor.core.errors import InvalidInput
from provisor.core.facts import drop
from provisor.core.gather import GATHERED
from provisor.core.nodeset import fold, natural_key
from provisor.services.context import Context, audited
from provisor.services.jobs import JobRunner, JobView
from provisor.services.results import HostResult
from provisor.services.targets import resolve_target
from provisor.store.models import Host, JobResult

_NAMES_PER_QUERY = 500


class GatherRequest(BaseModel):
    """What `hosts gather` is asked."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=10_000, description="e.g. group:web")
    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds the facts script may run per host"
    )
    connect_timeout: float = Field(default=10.0, gt=0, le=3600, description="seconds per login")
    user: str | None = Field(default=None, max_length=64, description="login user")
    identity: str | None = Field(
        default=None, max_length=4096, description="private key file (CLI only)"
    )


class GatherReport(BaseModel):
    """The gather job, the facts each host gave, and the hosts that failed."""

    job: JobView
    gathered: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="host: the facts it gave (now in its facts)"
    )
    failed: dict[str, str] = Field(default_factory=dict, description="host: why")
    summary: list[str] = Field(default_factory=list, description="the report as lines")


def _hosts_text(hosts: list[str]) -> str:
    return f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} ({fold(hosts)})"


async def gather(
    ctx: Context,
    request: GatherRequest,
    *,
    runner: JobRunner | None = None,
    on_start: Callable[[JobView], None] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> GatherReport:
    """Run the facts script on every host of the target and keep what each answered."""
    ctx.require(Action.inventory_write, request.target)
    from provisor.fleet.gathering import GatherFacts

    if request.identity is not None and not ctx.is_local:
        raise InvalidInput(
            "identity names a key file on the server: over the API hosts log in with "
            "stored keys (credentials key:NAME)",
            field="identity",
        )
    endpoints = await asyncio.to_thread(
        resolve_target, ctx, request.target, user=request.user, identity=request.identity
    )
    outside = [e.name for e in endpoints if e.host_id is None]
    if outside:
        raise InvalidInput(
            f"{fold(outside)} {'is' if len(outside) == 1 else 'are'} not in the inventory (or "
            "not at its address and port): gather keeps facts of inventory hosts only; add "
            "them first (provisor hosts add)",
            field="target",
        )
    own = runner is None
    used = runner or JobRunner()
    try:
        job = await used.run_operation(
            ctx,
            request.target,
            GatherFacts(timeout=request.timeout),
            action=Action.inventory_write,
            endpoints=endpoints,
            parallel=request.parallel,
            connect_timeout=request.connect_timeout,
            user=request.user,
            identity=request.identity,
            parameters={"timeout": request.timeout},
            on_start=on_start,
            on_result=on_result,
        )
    finally:
        if own:
            await used.close()
    host_ids = {e.name: e.host_id for e in endpoints if e.host_id is not None}
    results = await asyncio.to_thread(_results, ctx, job.id)
    gathered = {
        r.host: r.details["facts"]
        for r in results
        if r.outcome == "ok" and isinstance(r.details.get("facts"), dict)
    }
    kept = await asyncio.to_thread(_keep, ctx, request.target, job.id, gathered, host_ids)
    report = GatherReport(
        job=job,
        gathered={name: gathered[name] for name in sorted(kept, key=natural_key)},
        failed={
            r.host: _why(r)
            for r in sorted(results, key=lambda r: natural_key(r.host))
            if r.host not in kept
        },
    )
    if report.gathered:
        report.summary.append(f"facts kept for {_hosts_text(list(report.gathered))}")
    if report.failed:
        report.summary.append(f"not gathered: {_hosts_text(list(report.failed))}")
    return report


def _why(result: JobResult) -> str:
    if result.outcome == "ok":  # it answered, and was gone when its facts were kept
        return "removed from the inventory while its facts were gathered"
    return result.error or result.outcome


def _results(ctx: Context, job_id: int) -> list[JobResult]:
    with ctx.store.session() as session:
        rows = session.scalars(select(JobResult).where(JobResult.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def _keep(
    ctx: Context,
    target: str,
    job_id: int,
    gathered: dict[str, dict[str, Any]],
    host_ids: dict[str, int],
) -> list[str]:
    """Each answering host's gathered facts replaced, in one transaction with the event;
    the names of the hosts kept (one removed meanwhile is not)."""
    with audited(ctx, "hosts.gathered", target) as (session, audit):
        now = datetime.now(UTC).isoformat(timespec="seconds")
        tenant_id = ctx.tenant_id()
        by_id = {host_ids[name]: name for name in gathered if name in host_ids}
        ids = sorted(by_id)
        kept: list[str] = []
        for start in range(0, len(ids), _NAMES_PER_QUERY):
            for host in session.scalars(
                select(Host).where(
                    Host.tenant_id == tenant_id, Host.id.in_(ids[start : start + _NAMES_PER_QUERY])
                )
            ):
                name = by_id[host.id]
                host.facts = {
                    **drop(host.facts, GATHERED),
                    **gathered[name],
                    "gathered": {"at": now, "job": job_id},
                }
                kept.append(name)
        audit.details = {"job": job_id, "hosts": len(kept), "failed": len(host_ids) - len(kept)}
        return kept


__all__ = ["GatherReport", "GatherRequest", "gather"]
