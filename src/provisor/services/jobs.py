"""Fleet jobs: what to do (a `JobSpec`), done on every host of a target by a `JobRunner`,
every result kept.

The CLI and the API both describe a job as a `JobSpec` and hand it to a runner: the CLI
to one that lives for the command, the server to one whose SSH connections stay warm
between jobs. Each job verifies host keys against its own tenant's keys only.

A job's output has the secrets it could reveal masked before anyone sees or keeps it:
its password (-A), and the secret inputs of the deployments whose machines it runs on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from provisor import logmask
from provisor.core.access import Action
from provisor.core.errors import InvalidInput, NotFound, ProvisorError
from provisor.core.hostfiles import parse_pssh_hosts
from provisor.core.masking import NO_SECRETS, Masker
from provisor.core.nodeset import natural_key
from provisor.events import record_event
from provisor.files import private_dir, write_private
from provisor.fleet.knownhosts import DatabaseHostKeys, forget_host_keys
from provisor.fleet.transport import address_trust_id
from provisor.services import uploads
from provisor.services.context import Context, audited
from provisor.services.hosts import find_host
from provisor.services.results import HostResult
from provisor.services.targets import host_trust, machine_trust_ids, resolve_target
from provisor.store.models import Job, JobResult
from provisor.store.orchestration import Deployment, Machine

if TYPE_CHECKING:  # asyncssh loads with the first job, not with the CLI
    from provisor.fleet.operations import Operation
    from provisor.fleet.transport import Endpoint, SSHPool

MAX_STORED_OUTPUT = 64 * 1024  # bytes of each stream kept in the database per host
_FLUSH_SECONDS = 0.5
_NAMES_PER_QUERY = 500  # host names looked up at once (bound parameters per statement)


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


# Running jobs


JobKind = Literal["run", "copy", "fetch", "kill"]


class JobSpec(BaseModel):
    """One fleet job, as the CLI and the API describe it; `operation()` builds what runs
    on each host."""

    kind: JobKind
    target: str = Field(min_length=1, description="target expression, e.g. group:web")
    command: str | None = Field(default=None, description="run: the command")
    stdin: bytes | None = Field(default=None, description="run: text fed to standard input")
    timeout: float | None = Field(default=None, gt=0, description="run: seconds per host")
    sudo: bool = Field(default=False, description="run: through sudo")
    pattern: str | None = Field(default=None, description="kill: pkill -f pattern")
    signal: str = Field(default="TERM", description="kill: TERM, KILL, HUP, 9, ...")
    sources: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="copy (CLI): files and directories to send; fetch: the one path on the hosts",
    )
    uploads: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="copy (API): ids of uploaded files to send (POST /uploads)",
    )
    destination: str | None = Field(
        default=None, description="copy: path on the hosts; fetch: local directory"
    )
    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    connect_timeout: float = Field(default=10.0, gt=0, le=3600, description="seconds per SSH login")
    user: str | None = Field(default=None, description="login user for hosts that name none")
    identity: str | None = Field(default=None, description="private key file for hosts without one")

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        name = value.upper().removeprefix("SIG")
        if not (0 < len(name) <= 10 and name.isascii() and (name.isdigit() or name.isalpha())):
            raise ValueError(f"invalid signal {value!r}")
        return name

    @model_validator(mode="after")
    def _fits_kind(self) -> JobSpec:
        if self.kind == "run" and not self.command:
            raise ValueError("a run job needs a command")
        if self.kind == "kill" and not self.pattern:
            raise ValueError("a kill job needs a pattern")
        if self.kind == "copy" and (
            not (self.sources or self.uploads) or bool(self.sources and self.uploads)
        ):
            raise ValueError("a copy job needs sources (or uploads, not both)")
        if self.kind == "copy" and not self.destination:
            raise ValueError("a copy job needs a destination")
        if self.uploads and self.kind != "copy":
            raise ValueError("uploads are for copy jobs")
        if self.kind == "fetch" and (len(self.sources) != 1 or not self.destination):
            raise ValueError("a fetch job needs one path on the hosts and a local directory")
        return self

    def operation(self, *, sudo_password: str | None = None, label: str | None = None) -> Operation:
        """What runs on each host (asyncssh loads here, not with the CLI)."""
        from provisor.fleet import operations

        if self.kind == "run":
            assert self.command is not None
            return operations.Run(
                self.command,
                stdin=self.stdin,
                timeout=self.timeout,
                sudo=self.sudo,
                sudo_password=sudo_password if self.sudo else None,
            )
        if self.kind == "kill":
            assert self.pattern is not None
            return operations.Kill(self.pattern, self.signal)
        assert self.destination is not None
        if self.kind == "fetch":
            return operations.Fetch(self.sources[0], self.destination)
        return operations.Copy(tuple(self.sources), self.destination, label=label)


def _bounded(data: bytes) -> tuple[str, bool]:
    if len(data) <= MAX_STORED_OUTPUT:
        return data.decode("utf-8", errors="replace"), False
    return data[:MAX_STORED_OUTPUT].decode("utf-8", errors="replace"), True


def _safe_file_name(name: str) -> str:
    return name.replace("/", "_")


class _ResultWriter:
    """Saves results in batches (one transaction per batch) and per-host files."""

    def __init__(
        self, ctx: Context, job_id: int, job_dir: Path, out_dir: Path | None, err_dir: Path | None
    ) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._job_dir = job_dir
        self._out_dir = out_dir
        self._err_dir = err_dir
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
            (result.stdout, "stdout", self._out_dir),
            (result.stderr, "stderr", self._err_dir),
        ):
            if data:
                write_private(self._job_dir / f"{name}.{suffix}", data)
            if extra_dir is not None:
                write_private(extra_dir / name, data)  # pssh -o/-e: a file per host, even empty


def _only_what_a_remote_caller_may_name(spec: JobSpec) -> None:
    """Nothing a request sends is resolved as a path on the server: no key file (hosts
    use stored keys), no files to copy from it, no directory to fetch into."""
    if spec.identity is not None:
        raise InvalidInput(
            "identity names a key file on the server: over the API hosts log in with "
            "stored keys (credentials key:NAME)",
            field="identity",
        )
    if spec.kind == "fetch":
        raise InvalidInput(
            "fetch writes files on the computer that runs provisor: run it from the CLI "
            "(without --server)",
            field="kind",
        )
    if spec.sources:
        raise InvalidInput(
            "sources name files of the server: over the API, upload each file "
            "(POST /uploads) and copy it by its id (uploads)",
            field="sources",
        )


async def run_job(
    ctx: Context,
    spec: JobSpec,
    *,
    password: str | None = None,
    out_dir: Path | None = None,
    err_dir: Path | None = None,
    on_start: Callable[[JobView], None] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> JobView:
    """One job on a runner of its own, closed when it ends (the CLI's way)."""
    runner = JobRunner()
    try:
        return await runner.run(
            ctx,
            spec,
            password=password,
            out_dir=out_dir,
            err_dir=err_dir,
            on_start=on_start,
            on_result=on_result,
        )
    finally:
        await runner.close()


class JobRunner:
    """Runs jobs over one SSH pool that outlives them (the server keeps it warm).

    Each job sees the pool through its own tenant's host keys, loaded fresh for it:
    two jobs running at once never share a key store, and a connection verified for
    one tenant is never used by another's job.
    """

    def __init__(self) -> None:
        self._pool: SSHPool | None = None

    @property
    def connections(self) -> int:
        """SSH connections open and ready for the next job."""
        return len(self._pool) if self._pool is not None else 0

    @property
    def handshakes(self) -> int:
        """SSH handshakes made since the runner started."""
        return self._pool.handshakes_done if self._pool is not None else 0

    async def run(
        self,
        ctx: Context,
        spec: JobSpec,
        *,
        password: str | None = None,
        out_dir: Path | None = None,
        err_dir: Path | None = None,
        on_start: Callable[[JobView], None] | None = None,
        on_result: Callable[[HostResult], None] | None = None,
    ) -> JobView:
        """Run `spec` on every host its target selects; one result per host, all saved.

        `password` (-A) logs in and feeds sudo; `out_dir`/`err_dir` (-o/-e) get a file
        per host. `on_start` hears of the job once its hosts are known.
        """
        ctx.require(Action.jobs_run, spec.target)
        if not ctx.is_local:
            _only_what_a_remote_caller_may_name(spec)
        label = None
        if spec.uploads:  # the caller's own uploads, by id: never a path it names
            found = await asyncio.to_thread(uploads.files, ctx, spec.uploads)
            label = " ".join(f"upload:{Path(f).name}" for f in found)  # not the server's paths
            spec = spec.model_copy(update={"sources": found, "uploads": []})
        from provisor.fleet.engine import execute
        from provisor.fleet.transport import SSHPool

        operation = spec.operation(sudo_password=password, label=label)
        endpoints = await asyncio.to_thread(
            resolve_target, ctx, spec.target, user=spec.user, identity=spec.identity
        )
        for directory in (out_dir, err_dir):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
        tenant_id = ctx.tenant_id()
        masker = Masker.of(password) + await asyncio.to_thread(_deployment_secrets, ctx, endpoints)
        job = await asyncio.to_thread(
            _create_job, ctx, spec.target, operation, len(endpoints), masker
        )
        job_dir = private_dir(Path(job.output_dir or "."))
        if on_start is not None:
            on_start(job)
        host_keys = await asyncio.to_thread(DatabaseHostKeys, ctx.store, tenant_id)
        if self._pool is None:
            self._pool = SSHPool()
        connections = self._pool.scoped(
            host_keys,
            password=password,
            connect_timeout=spec.connect_timeout,
            server_credentials=ctx.is_local,
        )
        writer = _ResultWriter(ctx, job.id, job_dir, out_dir, err_dir)

        async def collect(result: HostResult) -> None:
            result = result.masked(masker)  # before it is shown or kept
            writer.add(result)
            if on_result is not None:
                on_result(result)
            if writer.due():
                await asyncio.to_thread(writer.flush)

        scope = f"job:{job.id}"
        logmask.remember(scope, masker)  # log lines of this process, while the job runs
        try:
            await execute(
                endpoints, operation, connections, parallel=spec.parallel, on_result=collect
            )
        finally:
            await asyncio.to_thread(writer.flush)
            try:
                await asyncio.to_thread(host_keys.flush)
                finished = await asyncio.to_thread(_finish_job, ctx, job.id, dict(writer.counts))
            finally:
                logmask.forget(scope)
        return finished

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _deployment_secrets(ctx: Context, endpoints: list[Endpoint]) -> Masker:
    """The secret inputs of the deployments whose machines are among `endpoints`: the
    machines have them (in their environment, in what their scripts wrote)."""
    from provisor.orchestrator import secrets  # asyncssh, cryptography: with the job

    names = sorted({e.name for e in endpoints})
    found: dict[int, dict[str, Any]] = {}
    with ctx.store.session() as session:
        for start in range(0, len(names), _NAMES_PER_QUERY):
            rows = session.execute(
                select(Deployment.id, Deployment.inputs)
                .join(Machine, Machine.deployment_id == Deployment.id)
                .where(
                    Deployment.tenant_id == ctx.tenant_id(),
                    Machine.name.in_(names[start : start + _NAMES_PER_QUERY]),
                )
            )
            found.update({deployment_id: inputs for deployment_id, inputs in rows})
    masker = NO_SECRETS
    for inputs in found.values():
        masker += secrets.inputs_masker(ctx.home, inputs)
    return masker


def _create_job(
    ctx: Context, target: str, operation: Operation, host_count: int, masker: Masker
) -> JobView:
    with audited(ctx, "job.started", target) as (session, audit):
        job = Job(
            tenant_id=ctx.tenant_id(),
            actor=ctx.actor,
            kind=operation.kind,
            target=target,
            command=masker.text(operation.describe()),  # a password typed into it too
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
    ctx.require(Action.jobs_read)
    with ctx.store.session() as session:
        jobs = session.scalars(
            select(Job).where(Job.tenant_id == ctx.tenant_id()).order_by(Job.id.desc()).limit(limit)
        ).all()
        return [_view(j) for j in jobs]


def get_job(ctx: Context, job_id: int, *, with_results: bool = True) -> JobView:
    ctx.require(Action.jobs_read)
    with ctx.store.session() as session:
        job = session.get(Job, job_id, options=[selectinload(Job.results)])
        if job is None or job.tenant_id != ctx.tenant_id():
            raise NotFound(f"no job {job_id}", field="id")
        return _view(job, list(job.results) if with_results else None)


def rekey_host(ctx: Context, name: str) -> bool:
    """Forget a host's trusted key; the next connection trusts the key it is offered.

    `name` is an inventory host (its keys, whatever identity they were recorded under),
    or `ADDRESS[:PORT]` of an endpoint outside the inventory (the key of that address).
    """
    ctx.require(Action.inventory_write)
    with audited(ctx, "host.rekeyed", name) as (session, audit):
        tenant_id = ctx.tenant_id()
        try:
            host = find_host(session, tenant_id, name)
        except NotFound:
            address, port = _direct_endpoint(name)
            forgotten = forget_host_keys(
                session, tenant_id, subjects=[address_trust_id(address, port)]
            )
            audit.details = {"address": address, "port": port, "had_key": bool(forgotten)}
            return bool(forgotten)
        trust = host_trust(host, machine_trust_ids(session, tenant_id))
        forgotten = forget_host_keys(session, tenant_id, host_ids=[host.id], subjects=[trust])
        audit.details = {"address": host.address, "port": host.port, "had_key": bool(forgotten)}
        return bool(forgotten)


def _direct_endpoint(name: str) -> tuple[str, int]:
    """`HOST[:PORT]` (`[IPV6]:PORT`) of an endpoint outside the inventory."""
    try:
        (entry,) = parse_pssh_hosts(name, source="name").hosts
    except (ProvisorError, ValueError):
        raise NotFound(
            f"no host named {name!r}, and it is no ADDRESS[:PORT] either", field="name"
        ) from None
    return entry.address, entry.port or 22


__all__ = [
    "JobKind",
    "JobResultView",
    "JobRunner",
    "JobSpec",
    "JobView",
    "get_job",
    "list_jobs",
    "rekey_host",
    "run_job",
]
