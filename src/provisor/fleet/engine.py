"""Running one operation over many hosts at once, each ending in exactly one outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

from provisor._asyncssh import asyncssh
from provisor.fleet.operations import Operation
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint, ScopedPool, TransportError, classify

ResultCallback = Callable[[HostResult], Awaitable[None] | None]

# Raised when a connection dies under a running command: the command's fate is unknown.
_LOST = (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionResetError, BrokenPipeError)

# The pool of the job an operation runs in: what `reconnect` logs in again through.
_JOB_POOL: ContextVar[ScopedPool | None] = ContextVar("provisor_job_pool", default=None)


async def reconnect(endpoint: Endpoint) -> asyncssh.SSHClientConnection:
    """A fresh connection to `endpoint` through the pool of the job running this host's
    operation (whose host went away on purpose: a reboot), verified like the first one.
    Raises `TransportError` when the host does not answer."""
    pool = _JOB_POOL.get()
    if pool is None:
        raise RuntimeError("reconnect is for operations run by execute()")
    pool.forget(endpoint)
    return await pool.connect(endpoint)


async def execute(
    endpoints: Sequence[Endpoint],
    operation: Operation,
    pool: ScopedPool,
    *,
    parallel: int = 64,
    on_result: ResultCallback | None = None,
    keep_connections: bool = True,
) -> list[HostResult]:
    """Run `operation` on every endpoint, `parallel` hosts at a time.

    Every endpoint yields one result, whatever happens to it; results are
    returned in the order of `endpoints` and handed to `on_result` as they come.
    Without `keep_connections` a host's connection is closed once its result is in,
    so open connections (and file descriptors) stay bounded by `parallel`.
    """
    slots = asyncio.Semaphore(max(1, parallel))
    results: list[HostResult | None] = [None] * len(endpoints)

    async def one(index: int, endpoint: Endpoint) -> None:
        async with slots:
            result = await _on_host(endpoint, operation, pool)
            if not keep_connections:
                pool.release(endpoint)
        results[index] = result
        if on_result is not None:
            outcome = on_result(result)
            if outcome is not None:
                await outcome

    scope = _JOB_POOL.set(pool)  # each host's task starts with a copy of this context
    try:
        await asyncio.gather(*(one(i, e) for i, e in enumerate(endpoints)))
    finally:
        _JOB_POOL.reset(scope)
    return [r for r in results if r is not None]


async def _on_host(endpoint: Endpoint, operation: Operation, pool: ScopedPool) -> HostResult:
    started_at = datetime.now(UTC)
    start = time.monotonic()
    for attempt in (1, 2):
        reused = pool.has_live(endpoint)
        try:
            connection = await pool.connect(endpoint)
        except TransportError as exc:
            return _finish(
                HostResult(
                    endpoint.name,
                    endpoint.address,
                    exc.outcome,
                    error=exc.message,
                    details=dict(exc.details),
                ),
                started_at,
                start,
                None,
            )
        connected = time.monotonic()
        try:
            result = await operation(connection, endpoint)
            if result.details.get("limit") == "progress":
                pool.forget(endpoint)  # a link that stalled is not one to reuse
        except asyncssh.ChannelOpenError as exc:
            pool.forget(endpoint)
            if reused and attempt == 1:
                continue  # a pooled connection went stale; nothing ran, so try a fresh one
            result = HostResult(
                endpoint.name, endpoint.address, Outcome.error, error=f"channel refused: {exc}"
            )
        except _LOST as exc:
            pool.forget(endpoint)
            result = HostResult(
                endpoint.name,
                endpoint.address,
                Outcome.error,
                error=f"connection lost during the command (exit status unknown): {exc}",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one host's surprise must not sink the job
            classified = classify(exc)
            result = HostResult(
                endpoint.name, endpoint.address, classified.outcome, error=classified.message
            )
        return _finish(result, started_at, start, connected)
    raise AssertionError("unreachable")  # pragma: no cover


def _finish(
    result: HostResult, started_at: datetime, start: float, connected: float | None
) -> HostResult:
    end = time.monotonic()
    result.started_at = started_at
    result.finished_at = datetime.now(UTC)
    result.connect_seconds = round((connected or end) - start, 4)
    result.run_seconds = round(end - connected, 4) if connected is not None else None
    return result
