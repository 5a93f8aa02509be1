"""Fleet jobs over HTTP: start one, read it, or follow its per-host results (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from provisor.api.auth import Ctx, Id
from provisor.services import jobs
from provisor.services.context import Context, Settings, Store
from provisor.services.jobs import JobLimits, JobRunner, JobSpec, JobView
from provisor.services.results import HostResult, result_json

router = APIRouter(tags=["jobs"])
# A job to start: given what to call when it starts and at each result, its end.
JobWork = Callable[[Callable[[JobView], None], Callable[[HostResult], None]], Awaitable[JobView]]
_KEEPALIVE_SECONDS = 15.0


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


class ServerJobs:
    """The server's jobs: one warm runner, and the running jobs' results for followers.

    A finished job's results stay in memory `live_seconds` for followers that come late,
    then only in the database (where /events replays them from): memory holds the jobs
    running now and the last few minutes' only. Every `stale_after / 2` seconds, jobs
    whose process died (a CLI killed, another server) are marked interrupted.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self.runner = JobRunner(JobLimits.of(settings), keep_connections=True)  # the warm pool
        self.live: dict[int, _Live] = {}
        self._live_seconds = settings.job_live_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(jobs.watch_stale_jobs(store, settings.job_stale_after))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget_later(self, job_id: int) -> None:
        asyncio.get_running_loop().call_later(self._live_seconds, self.live.pop, job_id, None)

    async def start(self, ctx: Context, spec: JobSpec) -> JobView:
        return await self.launch(
            ctx,
            lambda on_start, on_result: self.runner.run(
                ctx, spec, on_start=on_start, on_result=on_result
            ),
        )

    async def launch(self, ctx: Context, work: JobWork) -> JobView:
        """Start `work` (a job on the warm runner); its view once its hosts are known.
        Followers get its results at /jobs/{id}/events."""
        started: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
        live = _Live()

        def on_start(job: JobView) -> None:
            self.live[job.id] = live
            started.set_result(job)

        async def run() -> None:
            try:
                live.finish(await work(on_start, live.add))
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                else:  # followers hear the end from the database, not never
                    job_id = started.result().id
                    with contextlib.suppress(Exception):
                        live.finish(
                            await asyncio.to_thread(jobs.get_job, ctx, job_id, with_results=False)
                        )
                raise
            finally:
                if started.done() and not started.cancelled() and started.exception() is None:
                    self._forget_later(started.result().id)

        self._spawn(run())
        return await started

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.close()


def server_jobs(request: Request) -> ServerJobs:
    found: ServerJobs = request.app.state.jobs
    return found


Server = Annotated[ServerJobs, Depends(server_jobs)]


@router.post("/jobs", response_model=JobView, status_code=202)
async def start_job(ctx: Ctx, server: Server, body: JobSpec) -> JobView:
    """Start a job (run, copy or kill) on the server's warm connection pool; follow it at
    /jobs/{id}/events (or start and follow it in one request: POST /jobs/stream)."""
    return await server.start(ctx, body)


@router.post(
    "/jobs/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def start_and_follow_job(ctx: Ctx, server: Server, body: JobSpec) -> StreamingResponse:
    """Start a job as POST /jobs does and follow it in the same response, so a client
    makes one request per job. Server-sent events: `job` (the job, once its hosts are
    known), one `result` per host as it finishes, then `done` with the finished job. A
    job that cannot start (a bad target, no right) is an error response, as for POST
    /jobs. The job runs on if the client goes away: read it at /jobs/{id}."""
    job = await server.start(ctx, body)
    started = _sse("job", job.model_dump(mode="json"))
    return StreamingResponse(
        _events(ctx, job.id, server.live.get(job.id), first=started),
        media_type="text/event-stream",
    )


@router.get("/jobs", response_model=list[JobView])
def list_jobs(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobView]:
    return jobs.list_jobs(ctx, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(ctx: Ctx, job_id: Id) -> JobView:
    return jobs.get_job(ctx, job_id)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def follow_job(ctx: Ctx, server: Server, job_id: Id) -> StreamingResponse:
    """Server-sent events: one `result` per host as it finishes, then `done` with the job."""
    # Looked up first so that a job of another tenant answers 404, not an empty stream.
    await asyncio.to_thread(jobs.get_job, ctx, job_id, with_results=False)
    return StreamingResponse(
        _events(ctx, job_id, server.live.get(job_id)), media_type="text/event-stream"
    )


async def _events(
    ctx: Context, job_id: int, live: _Live | None, *, first: str = ""
) -> AsyncIterator[str]:
    """`first`, then the job's results and its end: as they come while it runs (`live`),
    else replayed from the store. The results that came together go out in one write."""
    if first:
        yield first
    if live is None:  # finished before this server started: replay from the store
        stored = await asyncio.to_thread(jobs.get_job, ctx, job_id)
        for result in stored.results or []:
            yield _sse("result", result.model_dump(mode="json"))
        yield _sse("done", stored.model_copy(update={"results": None}).model_dump(mode="json"))
        return
    sent = 0
    while True:
        changed = live.changed()
        fresh, finished = live.results[sent:], live.done
        if fresh:
            yield "".join(_sse("result", item) for item in fresh)
        sent += len(fresh)
        if finished is not None:
            yield _sse("done", finished.model_dump(mode="json"))
            return
        try:
            await asyncio.wait_for(asyncio.shield(changed), _KEEPALIVE_SECONDS)
        except TimeoutError:
            yield ": keep-alive\n\n"  # lets clients and proxies tell quiet from dead


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
