"""One round of a machine's health checks, each probe within its timeout.

Probes run in the order the blueprint lists them, and a round stops at the first that
fails: the rest would only fail too (a stopped machine's SSH, then its HTTP), each
after its own timeout. What each said is kept, bounded, for `provisor health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from provisor.core.blueprint.health import Probe
from provisor.core.masking import Masker
from provisor.core.regex import compile_regex
from provisor.fleet.operations import run_command
from provisor.fleet.transport import Endpoint, ScopedPool, TransportError, machine_trust_id
from provisor.orchestrator.runtime import Runtime
from provisor.providers.base import MachineState, Provider, ProviderError
from provisor.store.orchestration import Machine

MAX_DETAIL = 300  # characters of what one probe says
MAX_BODY = 64 * 1024  # bytes of an HTTP answer read to match its body against


@dataclass(frozen=True)
class Target:
    """A machine as the probes reach it."""

    name: str
    provider: Provider
    provider_id: str
    endpoint: Endpoint
    pool: ScopedPool
    masker: Masker


def target_for(
    rt: Runtime, provider: str, tenant_id: int, deployment_id: int, machine: Machine
) -> Target:
    """A launched machine of a deployment on `provider`, as the probes reach it."""
    assert machine.address is not None and machine.provider_id is not None
    return Target(
        name=machine.name,
        provider=rt.provider(provider, tenant_id),
        provider_id=machine.provider_id,
        endpoint=Endpoint(
            name=machine.name,
            address=machine.address,
            port=machine.port,
            user=machine.login_user,
            identity=str(rt.controller_key),
            trust_id=machine_trust_id(provider, machine.provider_id),
        ),
        pool=rt.pool(tenant_id),
        masker=rt.masker_of(deployment_id),
    )


@dataclass(frozen=True)
class ProbeResult:
    probe: str  # e.g. "http :8080/health"
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class Round:
    ok: bool
    results: tuple[ProbeResult, ...]

    def summary(self) -> str:
        """What failed (or "ok"), for an event."""
        failed = [r for r in self.results if not r.ok]
        return "; ".join(f"{r.probe}: {r.detail}" for r in failed) or "ok"

    def as_json(self) -> list[dict[str, object]]:
        return [
            {"probe": r.probe, "ok": r.ok, "detail": r.detail, "seconds": round(r.seconds, 3)}
            for r in self.results
        ]


def describe(probe: Probe) -> str:
    if probe.kind == "tcp":
        return f"tcp :{probe.port}"
    if probe.kind == "http":
        return f"{probe.scheme} :{probe.port}{probe.path}"
    if probe.kind == "command":
        text = probe.command or ""
        return f"command {text if len(text) <= 40 else text[:37] + '...'}"
    return probe.kind


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


async def _provider(target: Target) -> str | None:
    found = await target.provider.describe([target.provider_id])
    if not found:
        return "the provider does not know the machine"
    state = found[0].state
    return None if state is MachineState.running else f"the provider says {state.value}"


async def _ssh(target: Target, timeout: float) -> str | None:
    try:
        connection = await target.pool.connect(target.endpoint)
        result = await run_command(connection, target.endpoint, "true", timeout=timeout)
    except TransportError as exc:
        target.pool.forget(target.endpoint)
        return exc.message
    if not result.ok:
        target.pool.forget(target.endpoint)
        return result.error or f"exit status {result.exit_code}"
    return None


async def _tcp(target: Target, port: int) -> str | None:
    try:
        _, writer = await asyncio.open_connection(target.endpoint.address, port)
    except OSError as exc:
        return f"port {port}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def _http(target: Target, probe: Probe, timeout: float) -> str | None:
    url = f"{probe.scheme}://{target.endpoint.address}:{probe.port}{probe.path}"
    # A machine's own certificate: nothing to verify it against (the check is "answers").
    verify = False
    async with httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False) as client:
        try:
            async with client.stream("GET", url) as reply:
                body = b""
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY:
                        break
        except httpx.HTTPError as exc:
            return f"{url}: {str(exc) or type(exc).__name__}"
    if reply.status_code != probe.status:
        return f"{url} answered {reply.status_code}, expected {probe.status}"
    if probe.body is not None:
        text = body[:MAX_BODY].decode("utf-8", "replace")
        if not compile_regex(probe.body).search(text):
            return f"{url}: the body does not match {probe.body!r}"
    return None


async def _command(target: Target, command: str, timeout: float) -> str | None:
    try:
        connection = await target.pool.connect(target.endpoint)
    except TransportError as exc:
        target.pool.forget(target.endpoint)
        return exc.message
    # The scripts' environment: a check may need the deployment's parameters.
    line = f'. /etc/provisor/env 2>/dev/null; cd "$HOME" && sh -c {shlex.quote(command)}'
    result = await run_command(connection, target.endpoint, line, timeout=timeout)
    if result.ok:
        return None
    result = result.masked(target.masker)
    said = result.text("stderr").strip() or result.text().strip()
    tail = said.splitlines()[-1:]
    detail = result.error or f"exit status {result.exit_code}"
    return detail + (f": {tail[0]}" if tail else "")


async def _one(target: Target, probe: Probe, timeout: float) -> str | None:
    if probe.kind == "provider":
        return await _provider(target)
    if probe.kind == "ssh":
        return await _ssh(target, timeout)
    if probe.kind == "tcp":
        assert probe.port is not None
        return await _tcp(target, probe.port)
    if probe.kind == "http":
        return await _http(target, probe, timeout)
    assert probe.command is not None
    return await _command(target, probe.command, timeout)


async def run_probe(target: Target, probe: Probe, timeout: float) -> ProbeResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            problem = await _one(target, probe, timeout)
    except TimeoutError:
        problem = f"no answer within {timeout:g}s"
        if probe.kind in ("ssh", "command"):
            target.pool.forget(target.endpoint)
    except ProviderError as exc:
        problem = exc.message
    except (OSError, TransportError) as exc:
        problem = str(exc) or type(exc).__name__
    seconds = time.monotonic() - started
    detail = "ok" if problem is None else target.masker.text(_cut(problem))
    return ProbeResult(describe(probe), problem is None, detail, seconds)


async def run_round(target: Target, probes: Sequence[Probe], timeout: float) -> Round:
    """Every probe in order, until one fails."""
    results = []
    for probe in probes:
        result = await run_probe(target, probe, timeout)
        results.append(result)
        if not result.ok:
            return Round(False, tuple(results))
    return Round(True, tuple(results))


__all__ = ["ProbeResult", "Round", "Target", "describe", "run_probe", "run_round", "target_for"]
