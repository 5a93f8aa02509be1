"""Fleet jobs: what to do (a `JobSpec`), done on every host of a target by a `JobRunner`,
every result kept.

The CLI and the API both describe a job as a `JobSpec` (in `services.jobspec`, light
enough for a CLI that only sends it to a server) and hand it to a runner: the CLI
to one that lives for the command, the server to one whose SSH connections stay warm
between jobs. Each job verifies host keys against its own tenant's keys only.

A job's output has the secrets it could reveal masked before anyone sees or keeps it:
its password (-A), and the secret inputs of the deployments whose machines it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from provisor import logmask
from provisor.core.access import Action
from provisor.core.errors import InvalidInput, NotFound, ProvisorError
from provisor.core.hostfiles import parse_pssh_hosts
from provisor.core.masking import NO_SECRETS, Masker
from provisor.core.nodeset import natural_key
from provisor.core.rollout import Rollout
from provisor.events import record_event
from provisor.files import private_dir, write_private
from provisor.fleet.knownhosts import DatabaseHostKeys, forget_host_keys
from provisor.fleet.transport import address_trust_id
from provisor.services import uploads
from provisor.services.context import Context, audited
from provisor.services.hosts import find_host
from provisor.services.jobspec import JobKind, JobLimits, JobSpec
from provisor.services.results import HostResult, Outcome
from provisor.services.targets import host_trust, machine_trust_ids, resolve_target
from provisor.settings import get_settings
from provisor.store import Store
from provisor.store.models import Job, JobResult, Tenant
from provisor.store.orchestration import Deployment, Machine

if TYPE_CHECKING:  # asyncssh loads with the first job, not with the CLI
    from provisor.fleet.operations import Operation
    from provisor.fleet.output import OutputPolicy, Stream
    from provisor.fleet.transport import Endpoint, SSHPool

log = logging.getLogger(__name__)

PENDING = "pending"  # a host's outcome until it answers
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
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
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
    heartbeat_at: datetime | None = None
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="what the job was asked (never a secret)"
    )
    results: list[JobResultView] | None = None


# Running jobs


def _safe_file_name(name: str) -> str:
    return name.replace("/", "_")


def _output_files(
    job_dir: Path, out_dir: Path | None, err_dir: Path | None
) -> Callable[[str, Stream], list[Path]]:
    """Where all of each host's output goes as it arrives: `<host>.stdout` and
    `<host>.stderr` in the job's directory, and pssh's `-o`/`-e` file per host."""

    def files(host: str, stream: Stream) -> list[Path]:
        name = _safe_file_name(host)
        extra = out_dir if stream == "stdout" else err_dir
        return [job_dir / f"{name}.{stream}", *([extra / name] if extra is not None else [])]

    return files


class _ResultWriter:
    """Saves results in batches (one transaction per batch): each host's row, made
    `pending` when the job started, gets its outcome."""

    def __init__(
        self, ctx: Context, job_id: int, out_dir: Path | None, err_dir: Path | None
    ) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._out_dir = out_dir
        self._err_dir = err_dir
        self._pending: list[HostResult] = []
        self.counts: Counter[str] = Counter()

    def add(self, result: HostResult) -> None:
        self.counts[result.outcome.value] += 1
        self._pending.append(result)

    def take(self) -> list[HostResult]:
        """The results not saved yet (in the event loop: one flusher at a time)."""
        batch, self._pending = self._pending, []
        return batch

    def save(self, batch: list[HostResult]) -> None:
        """Each host's row gets its result, in one transaction (in a thread)."""
        if not batch:
            return
        for result in batch:
            self._empty_files(result)
        rows = [
            {
                "job": self._job_id,
                "name": result.host,
                "v_address": result.address,
                "v_outcome": result.outcome.value,
                "v_exit_code": result.exit_code,
                "v_error": result.error,
                "v_stdout": result.text("stdout"),  # the kept head, a marker for the rest
                "v_stderr": result.text("stderr"),
                "v_truncated": result.truncated,
                "v_stdout_bytes": result.size("stdout"),
                "v_stderr_bytes": result.size("stderr"),
                "v_details": result.details,
                "v_connect_seconds": result.connect_seconds,
                "v_run_seconds": result.run_seconds,
                "v_started_at": result.started_at,
                "v_finished_at": result.finished_at,
            }
            for result in batch
        ]
        with self._ctx.store.session() as session:
            session.connection().execute(_SAVE_RESULT, rows)

    def _empty_files(self, result: HostResult) -> None:
        """pssh's -o/-e give every host a file, even one that printed nothing (the
        output itself was written as it arrived)."""
        name = _safe_file_name(result.host)
        for size, directory in (
            (result.size("stdout"), self._out_dir),
            (result.size("stderr"), self._err_dir),
        ):
            if directory is not None and not size:
                write_private(directory / name, b"")


_SAVE_RESULT = (
    update(JobResult)
    .where(JobResult.job_id == bindparam("job"), JobResult.host == bindparam("name"))
    .values(
        {
            column: bindparam(f"v_{column}")
            for column in (
                "address",
                "outcome",
                "exit_code",
                "error",
                "stdout",
                "stderr",
                "truncated",
                "stdout_bytes",
                "stderr_bytes",
                "details",
                "connect_seconds",
                "run_seconds",
                "started_at",
                "finished_at",
            )
        }
    )
)


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

    def __init__(self, limits: JobLimits | None = None, *, keep_connections: bool = False) -> None:
        self._pool: SSHPool | None = None
        self.limits = limits or JobLimits.of(get_settings())
        # A runner of one job (the CLI's) closes each host's connection once the host is
        # done, so a job holds at most -p of them; the server's keeps them for the next.
        self.keep_connections = keep_connections

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
        endpoints = await asyncio.to_thread(
            resolve_target, ctx, spec.target, user=spec.user, identity=spec.identity
        )
        for directory in (out_dir, err_dir):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)

        def build(output: OutputPolicy | None) -> Operation:
            if output is None:  # what the job's record describes
                return spec.operation(label=label, limits=self.limits)
            return spec.operation(
                sudo_password=password, label=label, limits=self.limits, output=output
            )

        return await self._execute(
            ctx,
            spec.target,
            endpoints,
            build,
            password=password,
            connect_timeout=spec.connect_timeout,
            parallel=spec.parallel,
            max_output=spec.max_output,
            out_dir=out_dir,
            err_dir=err_dir,
            on_start=on_start,
            on_result=on_result,
        )

    async def run_operation(
        self,
        ctx: Context,
        target: str,
        operation: Operation,
        *,
        action: Action,
        endpoints: list[Endpoint] | None = None,
        parallel: int = 64,
        connect_timeout: float = 10.0,
        user: str | None = None,
        identity: str | None = None,
        rollout: Rollout | None = None,
        secrets: Masker = NO_SECRETS,
        parameters: dict[str, Any] | None = None,
        on_start: Callable[[JobView], None] | None = None,
        on_result: Callable[[HostResult], None] | None = None,
    ) -> JobView:
        """Run a job whose per-host work is `operation` (config changes, patching): the
        caller must hold `action` on `target`; `endpoints` are the target's hosts when
        the caller has already resolved them. `secrets` are masked in everything the job
        shows or keeps; `parameters` are kept with the job (never a secret)."""
        ctx.require(action, target)
        if identity is not None and not ctx.is_local:
            raise InvalidInput(
                "identity names a key file on the server: over the API hosts log in with "
                "stored keys (credentials key:NAME)",
                field="identity",
            )
        if endpoints is None:
            endpoints = await asyncio.to_thread(
                resolve_target, ctx, target, user=user, identity=identity
            )
        return await self._execute(
            ctx,
            target,
            endpoints,
            lambda _output: operation,
            connect_timeout=connect_timeout,
            parallel=parallel,
            rollout=rollout,
            secrets=secrets,
            parameters=parameters,
            on_start=on_start,
            on_result=on_result,
        )

    async def _execute(
        self,
        ctx: Context,
        target: str,
        endpoints: list[Endpoint],
        build: Callable[[OutputPolicy | None], Operation],
        *,
        connect_timeout: float,
        parallel: int,
        password: str | None = None,
        max_output: int | None = None,
        out_dir: Path | None = None,
        err_dir: Path | None = None,
        rollout: Rollout | None = None,
        secrets: Masker = NO_SECRETS,
        parameters: dict[str, Any] | None = None,
        on_start: Callable[[JobView], None] | None = None,
        on_result: Callable[[HostResult], None] | None = None,
    ) -> JobView:
        """The job's record, its hosts worked on (in the rollout's stages), every result
        kept as it comes, and the job finished whatever happens."""
        from provisor.fleet.engine import execute
        from provisor.fleet.output import OutputPolicy
        from provisor.fleet.transport import SSHPool

        tenant_id = ctx.tenant_id()

        def prepare() -> tuple[Masker, DatabaseHostKeys, JobView]:
            """The database work before the first host, in one trip to a thread: no
            job left running that nobody runs, the secrets to mask, the tenant's host
            keys, then (last, so that a failure before leaves no job) the job's record."""
            interrupt_stale_jobs(ctx.store, self.limits.stale_after)
            masker = Masker.of(password) + secrets + _deployment_secrets(ctx, endpoints)
            host_keys = DatabaseHostKeys(ctx.store, tenant_id)
            job = _create_job(ctx, target, build(None), endpoints, masker, parameters or {})
            return masker, host_keys, job

        masker, host_keys, job = await asyncio.to_thread(prepare)
        job_dir = private_dir(Path(job.output_dir or "."))
        operation = build(
            OutputPolicy(
                max_output=max_output or self.limits.max_output,
                files=_output_files(job_dir, out_dir, err_dir),
                masker=masker,
            )
        )
        if on_start is not None:
            on_start(job)
        if self._pool is None:
            self._pool = SSHPool()
        connections = self._pool.scoped(
            host_keys,
            password=password,
            connect_timeout=connect_timeout,
            server_credentials=ctx.is_local,
        )
        writer = _ResultWriter(ctx, job.id, out_dir, err_dir)

        def collect(result: HostResult) -> None:
            result = result.masked(masker)  # errors and details too, before shown or kept
            writer.add(result)
            if on_result is not None:
                on_result(result)

        scope = f"job:{job.id}"
        logmask.remember(scope, masker)  # log lines of this process, while the job runs
        ended = asyncio.Event()
        keeper = asyncio.create_task(_keep_up(writer, ctx.store, job.id, self.limits, ended))
        stopped = None
        try:
            stopped = await _in_stages(
                endpoints,
                lambda chunk: execute(
                    chunk,
                    operation,
                    connections,
                    parallel=parallel,
                    on_result=collect,
                    keep_connections=self.keep_connections,
                ),
                rollout,
                collect,
            )
        finally:
            ended.set()  # the keeper ends its round (a save under way completes) and stops
            await asyncio.gather(keeper, return_exceptions=True)

            def wrap_up(batch: list[HostResult]) -> JobView:
                """The last results, the host keys first seen and the job's end, in one
                trip to a thread."""
                writer.save(batch)
                host_keys.flush()
                return _finish_job(ctx, job.id, dict(writer.counts), stopped)

            try:
                finished = await asyncio.to_thread(wrap_up, writer.take())
            finally:
                logmask.forget(scope)
        return finished

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _in_stages(
    endpoints: list[Endpoint],
    work: Callable[[list[Endpoint]], Awaitable[list[HostResult]]],
    rollout: Rollout | None,
    collect: Callable[[HostResult], None],
) -> str | None:
    """Every endpoint worked on, in the rollout's stages; once it stops, the hosts left
    get `skipped` results. Why it stopped, or None."""
    if rollout is None or not rollout.staged:
        await work(endpoints)
        return None
    done = failed = 0
    for stage, size in enumerate(rollout.stages(len(endpoints))):
        chunk = endpoints[done : done + size]
        done += size
        failed += sum(1 for result in await work(chunk) if not result.ok)
        reason = rollout.stop_reason(stage, failed, len(endpoints))
        if reason is not None and done < len(endpoints):
            for endpoint in endpoints[done:]:
                collect(
                    HostResult(
                        endpoint.name,
                        endpoint.address,
                        Outcome.skipped,
                        error=f"not started: the rollout stopped: {reason}",
                    )
                )
            return reason
    return None


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
    ctx: Context,
    target: str,
    operation: Operation,
    endpoints: list[Endpoint],
    masker: Masker,
    parameters: dict[str, Any],
) -> JobView:
    """The job's row, `running` with a first heartbeat, and a `pending` row per host: if
    the process dies, whoever notices knows which hosts never answered."""
    with audited(ctx, "job.started", target) as (session, audit):
        now = datetime.now(UTC)
        job = Job(
            tenant_id=ctx.tenant_id(),
            actor=ctx.actor,
            kind=operation.kind,
            target=target,
            command=masker.text(operation.describe()),  # a password typed into it too
            parameters=parameters,
            state="running",
            host_count=len(endpoints),
            summary={},
            heartbeat_at=now,
        )
        session.add(job)
        session.flush()
        job.output_dir = str(ctx.home / "jobs" / str(job.id))
        if endpoints:
            session.execute(
                insert(JobResult),
                [
                    {
                        "job_id": job.id,
                        "host": e.name,
                        "address": e.address,
                        "outcome": PENDING,
                        "stdout": "",
                        "stderr": "",
                        "truncated": False,
                        "details": {},
                    }
                    for e in endpoints
                ],
            )
        audit.details = {"job": job.id, "kind": job.kind, "hosts": len(endpoints)}
        return _view(job)


async def _keep_up(
    writer: _ResultWriter, store: Store, job_id: int, limits: JobLimits, ended: asyncio.Event
) -> None:
    """Until `ended`: results saved within half a second of arriving (a killed process
    loses no more), and a heartbeat every few seconds that says the process lives. A
    missed beat (a busy database) is no harm: the bound is several beats long."""
    last_beat = time.monotonic()
    while not ended.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), _FLUSH_SECONDS)
        try:
            batch = writer.take()
            if batch:
                await asyncio.to_thread(writer.save, batch)
            if time.monotonic() - last_beat >= limits.heartbeat_seconds:
                await asyncio.to_thread(_beat, store, job_id)
                last_beat = time.monotonic()
        except Exception as exc:  # the job goes on; the next round tries again
            log.warning("job %s: results or heartbeat not recorded yet: %s", job_id, exc)


def _beat(store: Store, job_id: int) -> None:
    with store.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running")
            .values(heartbeat_at=datetime.now(UTC))
        )


def _finish_job(
    ctx: Context, job_id: int, summary: dict[str, int], stopped: str | None = None
) -> JobView:
    """`done` with its summary; `interrupted` if it ended (Ctrl-C, a server shutting
    down) before every host answered, those hosts `unknown`. `stopped`: why its rollout
    stopped early."""
    with ctx.store.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        unanswered = _mark_unknown(session, job_id)
        job.state = "interrupted" if unanswered else "done"
        job.summary = {**summary, **({Outcome.unknown.value: unanswered} if unanswered else {})}
        job.finished_at = datetime.now(UTC)
        if stopped is not None:
            job.parameters = {**job.parameters, "stopped": stopped}
        failed = sum(n for outcome, n in job.summary.items() if outcome != "ok")
        record_event(
            session,
            actor=ctx.actor,
            tenant=ctx.tenant,
            kind="job.interrupted" if unanswered else "job.finished",
            subject=job.target,
            outcome="ok" if not failed else "failed",
            details={
                "job": job.id,
                "kind": job.kind,
                **job.summary,
                **({"stopped": stopped} if stopped else {}),
            },
        )
        session.flush()
        return _view(job)


def _mark_unknown(session: Session, job_id: int) -> int:
    """Hosts of the job still `pending` become `unknown`; how many there were."""
    marked: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(JobResult)
        .where(JobResult.job_id == job_id, JobResult.outcome == PENDING)
        .values(
            outcome=Outcome.unknown.value,
            error="no result: the process running the job stopped before this host answered",
        )
    )
    return int(marked.rowcount or 0)


def interrupt_stale_jobs(store: Store, stale_after: float) -> list[int]:
    """Jobs still `running` whose process has shown no sign of life for `stale_after`
    seconds (killed, its terminal lost) become `interrupted`: the hosts that answered
    keep their outcomes, the others are `unknown`, and an event says so. Any process may
    call this (the CLI, the server, a worker); a job is interrupted once. Its ids."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after)
    with store.session() as session:
        stale = session.execute(
            select(Job.id, Tenant.name)
            .join(Tenant, Tenant.id == Job.tenant_id)
            .where(
                Job.state == "running",
                func.coalesce(Job.heartbeat_at, Job.created_at) < cutoff,
            )
        ).all()
    interrupted = []
    for job_id, tenant in stale:
        with store.session() as session:
            claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                # the state check makes one caller the one
                update(Job)
                .where(Job.id == job_id, Job.state == "running")
                .values(state="interrupted", finished_at=datetime.now(UTC))
            )
            if not claimed.rowcount:
                continue
            _mark_unknown(session, job_id)
            job = session.get(Job, job_id)
            assert job is not None
            counts = session.execute(
                select(JobResult.outcome, func.count())
                .where(JobResult.job_id == job_id)
                .group_by(JobResult.outcome)
            ).all()
            job.summary = {outcome: n for outcome, n in counts}
            record_event(
                session,
                actor="provisor",
                tenant=tenant,
                kind="job.interrupted",
                subject=job.target,
                outcome="failed",
                details={
                    "job": job_id,
                    "kind": job.kind,
                    "last_heartbeat": (job.heartbeat_at or job.created_at).isoformat(),
                    **job.summary,
                },
            )
        interrupted.append(job_id)
    return interrupted


async def watch_stale_jobs(store: Store, stale_after: float) -> None:
    """Until cancelled, every `stale_after / 2` seconds: `interrupt_stale_jobs` (what the
    server and workers do beside their work)."""
    while True:
        try:
            await asyncio.to_thread(interrupt_stale_jobs, store, stale_after)
        except Exception as exc:  # the database may be busy: the next round retries
            log.warning("could not look for interrupted jobs: %s", exc)
        await asyncio.sleep(stale_after / 2)


def _interrupt_stale(ctx: Context) -> None:
    """Before showing jobs: none is shown `running` that nobody runs."""
    interrupt_stale_jobs(ctx.store, get_settings().job_stale_after)


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
        heartbeat_at=job.heartbeat_at,
        parameters=dict(job.parameters or {}),
        results=None
        if results is None
        else [
            JobResultView.model_validate(r, from_attributes=True)
            for r in sorted(results, key=lambda r: natural_key(r.host))
        ],
    )


def list_jobs(ctx: Context, *, limit: int = 50) -> list[JobView]:
    ctx.require(Action.jobs_read)
    _interrupt_stale(ctx)
    with ctx.store.session() as session:
        jobs = session.scalars(
            select(Job).where(Job.tenant_id == ctx.tenant_id()).order_by(Job.id.desc()).limit(limit)
        ).all()
        return [_view(j) for j in jobs]


def get_job(ctx: Context, job_id: int, *, with_results: bool = True) -> JobView:
    ctx.require(Action.jobs_read)
    _interrupt_stale(ctx)
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
    "JobLimits",
    "JobResultView",
    "JobRunner",
    "JobSpec",
    "JobView",
    "get_job",
    "interrupt_stale_jobs",
    "list_jobs",
    "rekey_host",
    "run_job",
    "watch_stale_jobs",
]
