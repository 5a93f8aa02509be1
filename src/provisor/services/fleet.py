"""Fleet jobs: resolve a target, run an operation on every host, keep every result."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from provisor.core.errors import InvalidInput, NotFound
from provisor.core.hostfiles import parse_pssh_hosts
from provisor.core.nodeset import natural_key
from provisor.core.targets import HostRef, evaluate, parse_target
from provisor.events import record_event
from provisor.fleet import Endpoint, HostResult, Operation, SSHPool, execute
from provisor.fleet.knownhosts import DatabaseHostKeys, forget_host_key
from provisor.fleet.options import FleetOptions
from provisor.fleet.results import result_json
from provisor.services.context import Context, audited
from provisor.services.groups import resolve_members
from provisor.services.hosts import find_host, tenant_hosts
from provisor.store.models import Group, Host, Job, JobResult

MAX_STORED_OUTPUT = 64 * 1024  # bytes of each stream kept in the database per host
_FLUSH_SECONDS = 0.5


class JobResultView(BaseModel):
    host: str
    address: str
    outcome: str
    exit_code: int | None
    error: str | None
    stdout: str
    stderr: str
    truncated: bool
    details: dict[str, Any]
    connect_seconds: float | None
    run_seconds: float | None


class JobView(BaseModel):
    id: int
    kind: str
    target: str
    command: str
    state: str
    actor: str
    host_count: int
    summary: dict[str, int]
    output_dir: str | None
    created_at: datetime
    finished_at: datetime | None
    results: list[JobResultView] | None = None


# Resolving targets


class _InventoryResolver:
    """Answers the target evaluator's questions from the tenant's inventory.

    Lives inside one session; a group's members are resolved only if asked for.
    """

    def __init__(self, session: Session, tenant_id: int) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self.hosts = {h.name: h for h in tenant_hosts(session, tenant_id)}
        groups = session.scalars(
            select(Group)
            .where(Group.tenant_id == tenant_id)
            .options(selectinload(Group.members), selectinload(Group.children))
        ).all()
        self._groups = {g.name: g for g in groups}
        self._group_jump = _group_jumps(groups)

    def all_hosts(self) -> Iterable[HostRef]:
        return [_ref(h) for h in self.hosts.values()]

    def group_members(self, name: str) -> Iterable[HostRef]:
        group = self._groups.get(name)
        if group is None:
            raise NotFound(f"no group named {name!r}", field="target")
        return [_ref(h) for h in resolve_members(self._session, self._tenant_id, group)]

    def tagged_hosts(self, key: str, value: str) -> Iterable[HostRef]:
        return [_ref(h) for h in self.hosts.values() if str(h.tags.get(key)) == value]

    def deployment_members(self, name: str) -> Iterable[HostRef]:
        group = f"deployment-{name}"
        if group not in self._groups:
            raise NotFound(f"no deployment named {name!r}", field="target")
        return self.group_members(group)

    def read_file(self, path: str) -> Iterable[HostRef]:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read hosts file {path}: {exc}", field="target") from None
        inventory = parse_pssh_hosts(text, source=path)
        refs = []
        for entry in inventory.hosts:
            known = self.hosts.get(entry.name)
            if known is not None and entry.user is None and entry.port is None:
                refs.append(_ref(known))
            else:
                refs.append(HostRef(entry.name, entry.address, entry.port, entry.user))
        return refs

    def proxy_jump(self, host: Host) -> str | None:
        if host.proxy_jump:
            return host.proxy_jump
        for group in host.groups:
            jump = self._group_jump.get(group.name)
            if jump:
                return jump
        return None


def _group_jumps(groups: Iterable[Group]) -> dict[str, str | None]:
    """A group's bastion, inherited from the nearest ancestor that has one."""
    by_id = {g.id: g for g in groups}
    jumps: dict[str, str | None] = {}
    for group in by_id.values():
        current: Group | None = group
        while current is not None and not current.proxy_jump:
            current = by_id.get(current.parent_id) if current.parent_id else None
        jumps[group.name] = current.proxy_jump if current else None
    return jumps


def _ref(host: Host) -> HostRef:
    return HostRef(host.name, host.address, host.port, host.user)


def resolve_target(
    ctx: Context, target: str, options: FleetOptions | None = None
) -> list[Endpoint]:
    """The endpoints a target selects, with the credentials each host is reached with.

    A host's own key (its credentials) wins over `options.identity`, which is
    for hosts without one; likewise its own user over `options.user`.
    """
    options = options or FleetOptions()
    expression = parse_target(target)
    endpoints = []
    with ctx.store.session() as session:
        resolver = _InventoryResolver(session, ctx.tenant_id())
        for ref in evaluate(expression, resolver):
            host = resolver.hosts.get(ref.name)
            own_key, jump = None, None
            if host is not None and ref.address == host.address:
                if host.credentials and host.credentials.startswith("key:"):
                    own_key = host.credentials.removeprefix("key:")
                jump = resolver.proxy_jump(host)
            endpoints.append(
                Endpoint(
                    name=ref.name,
                    address=ref.address,
                    port=ref.port or 22,
                    user=ref.user or options.user,
                    identity=own_key or options.identity,
                    proxy_jump=jump,
                )
            )
    return endpoints


# Running jobs


def _bounded(data: bytes) -> tuple[str, bool]:
    if len(data) <= MAX_STORED_OUTPUT:
        return data.decode("utf-8", errors="replace"), False
    return data[:MAX_STORED_OUTPUT].decode("utf-8", errors="replace"), True


def _safe_file_name(name: str) -> str:
    return name.replace("/", "_")


class _ResultWriter:
    """Saves results in batches (one transaction per batch) and per-host files."""

    def __init__(self, ctx: Context, job_id: int, job_dir: Path, options: FleetOptions) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._job_dir = job_dir
        self._options = options
        self._pending: list[HostResult] = []
        self._last_flush = time.monotonic()
        self.counts: Counter[str] = Counter()

    def add(self, result: HostResult) -> None:
        self.counts[result.outcome.value] += 1
        self._pending.append(result)

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._last_flush >= _FLUSH_SECONDS

    def flush(self) -> None:
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not batch:
            return
        rows = []
        for result in batch:
            self._write_files(result)
            stdout, cut_out = _bounded(result.stdout)
            stderr, cut_err = _bounded(result.stderr)
            rows.append(
                JobResult(
                    job_id=self._job_id,
                    host=result.host,
                    address=result.address,
                    outcome=result.outcome.value,
                    exit_code=result.exit_code,
                    error=result.error,
                    stdout=stdout,
                    stderr=stderr,
                    truncated=cut_out or cut_err,
                    details=result.details,
                    connect_seconds=result.connect_seconds,
                    run_seconds=result.run_seconds,
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                )
            )
        with self._ctx.store.session() as session:
            session.add_all(rows)

    def _write_files(self, result: HostResult) -> None:
        name = _safe_file_name(result.host)
        for data, suffix, extra_dir in (
            (result.stdout, "stdout", self._options.out_dir),
            (result.stderr, "stderr", self._options.err_dir),
        ):
            if data:
                (self._job_dir / f"{name}.{suffix}").write_bytes(data)
            if extra_dir is not None:
                (extra_dir / name).write_bytes(data)  # pssh -o/-e: a file per host, even empty


async def run_job(
    ctx: Context,
    target: str,
    operation: Operation,
    options: FleetOptions | None = None,
    *,
    endpoints: list[Endpoint] | None = None,
    pool: SSHPool | None = None,
    on_start: Callable[[JobView], None] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> JobView:
    """Run `operation` on every host `target` selects; one result per host, all saved."""
    options = options or FleetOptions()
    options.check()
    if endpoints is None:
        endpoints = await asyncio.to_thread(resolve_target, ctx, target, options)
    for directory in (options.out_dir, options.err_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    job = await asyncio.to_thread(_create_job, ctx, target, operation, len(endpoints))
    job_dir = Path(job.output_dir or ".")
    job_dir.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start(job)
    host_keys = await asyncio.to_thread(DatabaseHostKeys, ctx.store)
    own_pool = pool is None
    active_pool = (
        pool
        if pool is not None
        else SSHPool(
            host_keys,
            password=options.password,
            connect_timeout=options.connect_timeout,
        )
    )
    if not own_pool:
        active_pool.use_host_keys(host_keys)
    writer = _ResultWriter(ctx, job.id, job_dir, options)

    async def collect(result: HostResult) -> None:
        writer.add(result)
        if on_result is not None:
            on_result(result)
        if writer.due():
            await asyncio.to_thread(writer.flush)

    try:
        await execute(
            endpoints, operation, active_pool, parallel=options.parallel, on_result=collect
        )
    finally:
        if own_pool:
            await active_pool.close()
        await asyncio.to_thread(writer.flush)
        await asyncio.to_thread(host_keys.flush)
        finished = await asyncio.to_thread(_finish_job, ctx, job.id, dict(writer.counts))
    return finished


def _create_job(ctx: Context, target: str, operation: Operation, host_count: int) -> JobView:
    with audited(ctx, "job.started", target) as (session, audit):
        job = Job(
            tenant_id=ctx.tenant_id(),
            actor=ctx.actor,
            kind=operation.kind,
            target=target,
            command=operation.describe(),
            parameters={},
            state="running",
            host_count=host_count,
            summary={},
        )
        session.add(job)
        session.flush()
        job.output_dir = str(ctx.home / "jobs" / str(job.id))
        audit.details = {"job": job.id, "kind": job.kind, "hosts": host_count}
        return _view(job)


def _finish_job(ctx: Context, job_id: int, summary: dict[str, int]) -> JobView:
    with ctx.store.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.state = "done"
        job.summary = summary
        job.finished_at = datetime.now(UTC)
        failed = sum(n for outcome, n in summary.items() if outcome != "ok")
        record_event(
            session,
            actor=ctx.actor,
            tenant=ctx.tenant,
            kind="job.finished",
            subject=job.target,
            outcome="ok" if not failed else "failed",
            details={"job": job.id, "kind": job.kind, **summary},
        )
        session.flush()
        return _view(job)


def _view(job: Job, results: list[JobResult] | None = None) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        target=job.target,
        command=job.command,
        state=job.state,
        actor=job.actor,
        host_count=job.host_count,
        summary=dict(job.summary),
        output_dir=job.output_dir,
        created_at=job.created_at,
        finished_at=job.finished_at,
        results=None
        if results is None
        else [
            JobResultView.model_validate(r, from_attributes=True)
            for r in sorted(results, key=lambda r: natural_key(r.host))
        ],
    )


def list_jobs(ctx: Context, *, limit: int = 50) -> list[JobView]:
    with ctx.store.session() as session:
        jobs = session.scalars(
            select(Job).where(Job.tenant_id == ctx.tenant_id()).order_by(Job.id.desc()).limit(limit)
        ).all()
        return [_view(j) for j in jobs]


def get_job(ctx: Context, job_id: int, *, with_results: bool = True) -> JobView:
    with ctx.store.session() as session:
        job = session.get(Job, job_id, options=[selectinload(Job.results)])
        if job is None or job.tenant_id != ctx.tenant_id():
            raise NotFound(f"no job {job_id}", field="id")
        return _view(job, list(job.results) if with_results else None)


def rekey_host(ctx: Context, name: str) -> bool:
    """Forget a host's trusted key; the next connection trusts the key it is offered."""
    with audited(ctx, "host.rekeyed", name) as (session, audit):
        host = find_host(session, ctx.tenant_id(), name)
        forgotten = forget_host_key(session, host.address, host.port)
        audit.details = {"address": host.address, "port": host.port, "had_key": forgotten}
        return forgotten


__all__ = [
    "FleetOptions",
    "JobResultView",
    "JobView",
    "get_job",
    "list_jobs",
    "rekey_host",
    "resolve_target",
    "result_json",
    "run_job",
]
