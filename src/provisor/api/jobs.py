"""Fleet jobs over HTTP: start one, read it, or follow its per-host results (SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, model_validator

from provisor.api.routes import Ctx
from provisor.fleet import Copy, HostResult, Kill, Operation, Run, SSHPool
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.fleet.results import result_json
from provisor.services import Context
from provisor.services import fleet as fleet_service
from provisor.services.fleet import FleetOptions, JobView

router = APIRouter(tags=["jobs"])
_KEEPALIVE_SECONDS = 15.0


class JobRequest(BaseModel):
    kind: Literal["run", "copy", "kill"]
    target: str = Field(min_length=1, description="target expression, e.g. group:web")
    command: str | None = Field(default=None, description="run: the command")
    stdin: str | None = Field(default=None, description="run: text fed to standard input")
    timeout: float | None = Field(default=None, gt=0, description="run: seconds per host")
    sudo: bool = False
    pattern: str | None = Field(default=None, description="kill: pkill -f pattern")
    signal: str = Field(default="TERM", pattern=r"^[A-Z0-9]{1,10}$")
    sources: list[str] = Field(default_factory=list, description="copy: paths on the server")
    destination: str | None = Field(default=None, description="copy: path on the hosts")
    parallel: int = Field(default=64, ge=1, le=10_000)
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)
    user: str | None = None
    identity: str | None = Field(default=None, description="private key file on the server")

    @model_validator(mode="after")
    def _fits_kind(self) -> JobRequest:
        if self.kind == "run" and not self.command:
            raise ValueError("a run job needs a command")
        if self.kind == "kill" and not self.pattern:
            raise ValueError("a kill job needs a pattern")
        if self.kind == "copy" and (not self.sources or not self.destination):
            raise ValueError("a copy job needs sources and a destination")
        return self

    def operation(self) -> Operation:
        if self.kind == "run":
            assert self.command is not None
            return Run(
                self.command,
                stdin=self.stdin.encode() if self.stdin else None,
                timeout=self.timeout,
                sudo=self.sudo,
            )
        if self.kind == "kill":
            assert self.pattern is not None
            return Kill(self.pattern, self.signal)
        assert self.destination is not None
        return Copy(tuple(self.sources), self.destination)


class _Live:
    """A running job's results so far, for any number of followers."""

    def __init__(self) -> None:
        self.results: list[dict[str, object]] = []
        self.done: JobView | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def changed(self) -> asyncio.Future[None]:
        """Resolves at the next change; take it before looking, then await it."""
        return self._changed

    def _notify(self) -> None:
        fired, self._changed = self._changed, asyncio.get_running_loop().create_future()
        fired.set_result(None)

    def add(self, result: HostResult) -> None:
        self.results.append(result_json(result))
        self._notify()

    def finish(self, job: JobView) -> None:
        self.done = job
        self._notify()


class JobRunner:
    """Runs the server's jobs on one warm connection pool."""

    def __init__(self) -> None:
        self.live: dict[int, _Live] = {}
        self.pool: SSHPool | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, ctx: Context, body: JobRequest) -> JobView:
        options = FleetOptions(
            parallel=body.parallel,
            connect_timeout=body.connect_timeout,
            user=body.user,
            identity=body.identity,
        )
        endpoints = await asyncio.to_thread(fleet_service.resolve_target, ctx, body.target, options)
        host_keys = await asyncio.to_thread(DatabaseHostKeys, ctx.store)
        if self.pool is None:
            self.pool = SSHPool(host_keys, connect_timeout=body.connect_timeout)
        started: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
        live = _Live()

        def on_start(job: JobView) -> None:
            self.live[job.id] = live
            started.set_result(job)

        async def run() -> None:
            try:
                job = await fleet_service.run_job(
                    ctx,
                    body.target,
                    body.operation(),
                    options,
                    endpoints=endpoints,
                    pool=self.pool,
                    on_start=on_start,
                    on_result=live.add,
                )
                live.finish(job)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await started

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()


def runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


Runner = Annotated[JobRunner, Depends(runner)]


@router.post("/jobs", response_model=JobView, status_code=202)
async def start_job(ctx: Ctx, jobs: Runner, body: JobRequest) -> JobView:
    """Start a job on the server's warm connection pool; follow it at /jobs/{id}/events."""
    return await jobs.start(ctx, body)


@router.get("/jobs", response_model=list[JobView])
def list_jobs(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobView]:
    return fleet_service.list_jobs(ctx, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(ctx: Ctx, job_id: int) -> JobView:
    return fleet_service.get_job(ctx, job_id)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def follow_job(ctx: Ctx, jobs: Runner, job_id: int) -> StreamingResponse:
    """Server-sent events: one `result` per host as it finishes, then `done` with the job."""
    job = await asyncio.to_thread(fleet_service.get_job, ctx, job_id, with_results=False)
    live = jobs.live.get(job_id)

    async def stream() -> AsyncIterator[str]:
        if live is None:  # finished before this server started: replay from the store
            stored = await asyncio.to_thread(fleet_service.get_job, ctx, job_id)
            for result in stored.results or []:
                yield _sse("result", result.model_dump(mode="json"))
            yield _sse("done", stored.model_copy(update={"results": None}).model_dump(mode="json"))
            return
        sent = 0
        while True:
            changed = live.changed()
            fresh, finished = live.results[sent:], live.done
            for item in fresh:
                yield _sse("result", item)
            sent += len(fresh)
            if finished is not None:
                yield _sse("done", finished.model_dump(mode="json"))
                return
            try:
                await asyncio.wait_for(asyncio.shield(changed), _KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"  # lets clients and proxies tell quiet from dead

    del job  # looked up only to answer 404 for a job of another tenant
    return StreamingResponse(stream(), media_type="text/event-stream")


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
