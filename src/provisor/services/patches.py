"""Patching: analyze what a fleet could upgrade (the patch catalog), and apply updates
with optional reboots, in batches. Each is a fleet job (`patch-analyze`, `patch-apply`)
with a result per host, and an event."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select, tuple_

from provisor.core.access import Action
from provisor.core.nodeset import fold, natural_key
from provisor.core.patches import (
    RebootPolicy,
    Update,
    check_packages,
    summarize,
    up_to_date,
)
from provisor.core.rollout import Amount, Rollout
from provisor.services.context import Context, audited
from provisor.services.jobs import JobRunner, JobView
from provisor.services.results import HostResult
from provisor.services.targets import resolve_target
from provisor.store.models import JobResult
from provisor.store.patches import PatchEntry

if TYPE_CHECKING:
    from provisor.fleet.operations import Operation

_DAY = 24 * 3600.0


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=10_000, description="e.g. group:web")
    security: bool = Field(default=False, description="security updates only")
    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    connect_timeout: float = Field(default=10.0, gt=0, le=3600, description="seconds per login")
    refresh_timeout: float = Field(
        default=300.0, gt=0, le=_DAY, description="seconds for apt-get update / dnf makecache"
    )
    user: str | None = Field(default=None, max_length=64, description="login user")
    identity: str | None = Field(
        default=None, max_length=4096, description="private key file (CLI only)"
    )


class AnalyzeRequest(_Request):
    """What `patch analyze` is asked."""


class ApplyRequest(_Request):
    """What `patch apply` is asked."""

    packages: list[str] = Field(
        default_factory=list, max_length=1000, description="default: every upgradable package"
    )
    reboot: RebootPolicy = Field(default=RebootPolicy.never)
    batch: str | None = Field(default=None, max_length=16, description="N or N% hosts at a time")
    timeout: float = Field(
        default=3600.0, gt=0, le=_DAY, description="seconds the upgrade may take per host"
    )
    reboot_timeout: float = Field(
        default=600.0, gt=0, le=_DAY, description="seconds a rebooted host has to come back"
    )

    @field_validator("packages")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return list(check_packages(value))

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: str | None) -> str | None:
        if value is not None:
            Amount.parse(value, "batch")
        return value


class PatchView(BaseModel):
    host: str
    package: str
    installed: str
    candidate: str
    security: bool
    origin: str
    analyzed_at: datetime
    job_id: int | None


class MissingView(BaseModel):
    """One update and the hosts that miss it."""

    package: str
    installed: str
    candidate: str
    security: bool
    hosts: list[str]
    text: str = Field(description="e.g. 'hello 1.0-1 -> 2.0-1: 3 hosts (web[01-03])'")


class UpgradedView(BaseModel):
    package: str
    from_version: str
    to_version: str
    hosts: list[str]
    text: str


class PatchReport(BaseModel):
    """A patch job and what it found or did, fleet-wide."""

    job: JobView
    missing: list[MissingView] = Field(default_factory=list, description="analyze")
    upgraded: list[UpgradedView] = Field(default_factory=list, description="apply")
    up_to_date: list[str] = Field(default_factory=list, description="hosts missing nothing")
    rebooted: list[str] = Field(default_factory=list, description="apply: hosts rebooted")
    reboot_needed: list[str] = Field(
        default_factory=list, description="apply: hosts that need a reboot and did not get one"
    )
    failed: dict[str, str] = Field(default_factory=dict, description="host: why")
    summary: list[str] = Field(default_factory=list, description="the report as lines")


def _missing(missing_list: list[Any]) -> list[MissingView]:
    return [
        MissingView(
            package=m.package,
            installed=m.installed,
            candidate=m.candidate,
            security=m.security,
            hosts=list(m.hosts),
            text=m.text,
        )
        for m in missing_list
    ]


def _hosts_text(hosts: list[str]) -> str:
    return f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} ({fold(hosts)})"


async def analyze(
    ctx: Context,
    request: AnalyzeRequest,
    *,
    runner: JobRunner | None = None,
    on_start: Callable[[JobView], None] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> PatchReport:
    """Refresh every host's package lists and record what it could upgrade in the
    catalog (each answering host's rows replaced); the report is what they miss."""
    ctx.require(Action.patches_analyze, request.target)
    from provisor.fleet.patching import PatchAnalyze

    operation = PatchAnalyze(refresh_timeout=request.refresh_timeout)
    job = await _run(
        ctx,
        request,
        operation,
        Action.patches_analyze,
        runner,
        None,
        {"security": request.security},
        on_start,
        on_result,
    )
    results = await asyncio.to_thread(_results, ctx, job.id)
    catalog = {
        r.host: [Update.from_json(u) for u in r.details.get("updates", [])]
        for r in results
        if r.outcome == "ok"
    }
    await asyncio.to_thread(_record_catalog, ctx, request.target, job.id, catalog)
    report = PatchReport(
        job=job,
        missing=_missing(summarize(catalog, security_only=request.security)),
        up_to_date=up_to_date(catalog, security_only=request.security),
        failed={r.host: r.error or r.outcome for r in results if r.outcome != "ok"},
    )
    report.summary = [m.text for m in report.missing]
    if report.up_to_date:
        report.summary.append(f"up to date: {_hosts_text(report.up_to_date)}")
    if report.failed:
        report.summary.append(f"not analyzed: {_hosts_text(list(report.failed))}")
    return report


async def apply(
    ctx: Context,
    request: ApplyRequest,
    *,
    runner: JobRunner | None = None,
    on_start: Callable[[JobView], None] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> PatchReport:
    """Upgrade the hosts (the packages named, or all; security updates only when asked),
    rebooting as `request.reboot` says, `request.batch` hosts at a time."""
    ctx.require(Action.patches_apply, request.target)
    from provisor.fleet.patching import PatchApply

    operation = PatchApply(
        packages=tuple(request.packages),
        security_only=request.security,
        reboot=request.reboot,
        timeout=request.timeout,
        refresh_timeout=request.refresh_timeout,
        reboot_timeout=request.reboot_timeout,
    )
    rollout = Rollout(batch=Amount.parse(request.batch, "batch")) if request.batch else None
    parameters = {
        "packages": request.packages,
        "security": request.security,
        "reboot": request.reboot.value,
        "batch": request.batch,
    }
    job = await _run(
        ctx,
        request,
        operation,
        Action.patches_apply,
        runner,
        rollout,
        parameters,
        on_start,
        on_result,
    )
    results = await asyncio.to_thread(_results, ctx, job.id)
    upgraded: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    done: dict[str, list[str]] = {}
    for result in results:
        changes = result.details.get("upgraded", [])
        done[result.host] = [str(c["package"]) for c in changes]
        for change in changes:
            upgraded[(change["package"], change["from"], change["to"])].append(result.host)
    await asyncio.to_thread(_forget_upgraded, ctx, request.target, job.id, done)
    report = PatchReport(
        job=job,
        upgraded=[
            UpgradedView(
                package=package,
                from_version=old,
                to_version=new,
                hosts=sorted(hosts, key=natural_key),
                text=f"{package} {old} -> {new}: {_hosts_text(hosts)}",
            )
            for (package, old, new), hosts in sorted(
                upgraded.items(), key=lambda item: (-len(item[1]), item[0])
            )
        ],
        up_to_date=sorted(
            (r.host for r in results if r.outcome == "ok" and not r.details.get("upgraded")),
            key=natural_key,
        ),
        rebooted=sorted((r.host for r in results if r.details.get("rebooted")), key=natural_key),
        reboot_needed=sorted(
            (
                r.host
                for r in results
                if r.details.get("reboot_needed") and not r.details.get("rebooted")
            ),
            key=natural_key,
        ),
        failed={r.host: r.error or r.outcome for r in results if r.outcome != "ok"},
    )
    report.summary = [u.text for u in report.upgraded]
    if report.up_to_date:
        report.summary.append(f"nothing to upgrade: {_hosts_text(report.up_to_date)}")
    if report.rebooted:
        report.summary.append(f"rebooted: {_hosts_text(report.rebooted)}")
    if report.reboot_needed:
        report.summary.append(f"reboot needed: {_hosts_text(report.reboot_needed)}")
    if report.failed:
        report.summary.append(f"failed: {_hosts_text(list(report.failed))}")
    return report


async def _run(
    ctx: Context,
    request: _Request,
    operation: Operation,
    action: Action,
    runner: JobRunner | None,
    rollout: Rollout | None,
    parameters: dict[str, Any],
    on_start: Callable[[JobView], None] | None,
    on_result: Callable[[HostResult], None] | None,
) -> JobView:
    """The job on `runner` (the server's warm one), or on one of its own (the CLI)."""
    own = runner is None
    used = runner or JobRunner()
    try:
        return await used.run_operation(
            ctx,
            request.target,
            operation,
            action=action,
            parallel=request.parallel,
            connect_timeout=request.connect_timeout,
            user=request.user,
            identity=request.identity,
            rollout=rollout,
            parameters=parameters,
            on_start=on_start,
            on_result=on_result,
        )
    finally:
        if own:
            await used.close()


def _results(ctx: Context, job_id: int) -> list[JobResult]:
    with ctx.store.session() as session:
        rows = session.scalars(select(JobResult).where(JobResult.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def _record_catalog(
    ctx: Context, target: str, job_id: int, catalog: dict[str, list[Update]]
) -> None:
    """Each analyzed host's rows replaced by what it now misses; an event."""
    with audited(ctx, "patch.analyzed", target) as (session, audit):
        tenant_id = ctx.tenant_id()
        now = datetime.now(UTC)
        hosts = list(catalog)
        for start in range(0, len(hosts), 500):
            session.execute(
                delete(PatchEntry).where(
                    PatchEntry.tenant_id == tenant_id,
                    PatchEntry.host.in_(hosts[start : start + 500]),
                )
            )
        session.add_all(
            PatchEntry(
                tenant_id=tenant_id,
                host=host,
                package=u.package[:200],
                installed=u.installed[:200],
                candidate=u.candidate[:200],
                security=u.security,
                origin=u.origin[:300],
                job_id=job_id,
                analyzed_at=now,
            )
            for host, updates in catalog.items()
            for u in updates
        )
        audit.details = {
            "job": job_id,
            "hosts": len(catalog),
            "hosts_missing": sum(1 for u in catalog.values() if u),
            "updates": sum(len(u) for u in catalog.values()),
            "security": sum(1 for u in catalog.values() for x in u if x.security),
        }


def _forget_upgraded(ctx: Context, target: str, job_id: int, done: dict[str, list[str]]) -> None:
    """The catalog no longer lists what the apply upgraded; an event."""
    with audited(ctx, "patch.applied", target) as (session, audit):
        pairs = [(host, package) for host, packages in done.items() for package in packages]
        for start in range(0, len(pairs), 500):
            session.execute(
                delete(PatchEntry).where(
                    PatchEntry.tenant_id == ctx.tenant_id(),
                    tuple_(PatchEntry.host, PatchEntry.package).in_(pairs[start : start + 500]),
                )
            )
        audit.details = {
            "job": job_id,
            "hosts": len(done),
            "hosts_upgraded": sum(1 for p in done.values() if p),
            "upgrades": len(pairs),
        }


def list_patches(
    ctx: Context, target: str | None = None, *, security: bool = False
) -> list[PatchView]:
    """The catalog (of the hosts `target` selects), as the last analyses found it."""
    ctx.require(Action.patches_read)
    names = None
    if target is not None:
        names = sorted({e.name for e in resolve_target(ctx, target)})
    with ctx.store.session() as session:
        query = select(PatchEntry).where(PatchEntry.tenant_id == ctx.tenant_id())
        if security:
            query = query.where(PatchEntry.security.is_(True))
        rows = session.scalars(query).all()
        found = [
            PatchView.model_validate(r, from_attributes=True)
            for r in rows
            if names is None or r.host in names
        ]
    return sorted(found, key=lambda p: (natural_key(p.host), p.package))


def catalog_summary(patches: list[PatchView]) -> list[MissingView]:
    """Who misses what, from catalog rows."""
    catalog: dict[str, list[Update]] = defaultdict(list)
    for p in patches:
        catalog[p.host].append(
            Update(p.package, p.installed, p.candidate, security=p.security, origin=p.origin)
        )
    return _missing(summarize(catalog))


__all__ = [
    "AnalyzeRequest",
    "ApplyRequest",
    "MissingView",
    "PatchReport",
    "PatchView",
    "UpgradedView",
    "analyze",
    "apply",
    "catalog_summary",
    "list_patches",
]
