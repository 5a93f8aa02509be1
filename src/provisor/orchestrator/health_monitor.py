"""The health monitor: the worker's tick that checks machines and starts recoveries.

Every second it looks for machines whose checks are due (deployments `ready`, nodes
with `checks`). Before any machine is checked, what every check depends on is: the
controller's database answers, its data directory has free space, and the API of
each provider the due machines run on answers (`Provider.check`). What is down pauses
the checks that depend on it (all of them, or one provider's machines) and is one
`infrastructure.down` event, `infrastructure.up` when it answers again: a provider
outage makes no machine unhealthy and starts no recovery.

Due machines are checked concurrently (at most CONCURRENCY rounds at once, each probe
within its timeout). A round steps the machine's health (core.health.observe); a
change of state is recorded with its event; a machine that turns unhealthy, with a
recovery ladder, gets its recovery workflow (orchestrator.recovery), whose id is
bound to the incident: started again after a crash, it is the same workflow. While a
machine recovers, the recovery checks it, not the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from provisor.core.health import Health, HealthState, Thresholds, observe
from provisor.orchestrator import health_records as records
from provisor.orchestrator.health_probes import Round, Target, run_round, target_for
from provisor.orchestrator.runtime import Runtime
from provisor.store.orchestration import Machine

CONCURRENCY = 16  # machine rounds at once
TICK = 1.0  # seconds between looks for due checks
INFRA_INTERVAL = 5.0  # infrastructure checked at most this often
INFRA_TIMEOUT = 10.0  # a provider's API answers within this, or is down
MIN_FREE_BYTES = 100 * 1024 * 1024  # the data directory's free space below which it is down
WATCH_INTERVAL = 5.0  # the list of watched deployments is read again this often
log = logging.getLogger(__name__)


def target_of(rt: Runtime, deployment: records.Watched, machine: Machine) -> Target:
    return target_for(rt, deployment.provider, deployment.tenant_id, deployment.id, machine)


def provider_key(deployment: records.Watched) -> str:
    """The infrastructure key of a deployment's provider (`local` is one for all)."""
    if deployment.provider == "local":
        return "provider:local"
    return f"provider:{deployment.tenant_id}:{deployment.provider}"


@dataclass
class Monitor:
    rt: Runtime
    concurrency: int = CONCURRENCY
    watching: bool = False  # any deployment with checks (the worker stays for it)
    _known: dict[str, records.Watched] = field(default_factory=dict)
    _watched: list[records.Watched] = field(default_factory=list)
    _watched_at: float = -1e9
    _due: dict[tuple[int, str], float] = field(default_factory=dict)  # next round, monotonic
    _infra_at: float = -1e9
    _down: dict[str, str] = field(default_factory=dict)  # infrastructure down: key -> why
    _started: set[str] = field(default_factory=set)  # recovery workflows started here

    @property
    def home(self) -> Path:
        return self.rt.home

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick until `stopping`; a tick's failure is logged, the next one goes on."""
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("health monitor tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), TICK)

    async def refresh(self, *, force: bool = False) -> list[records.Watched]:
        now = time.monotonic()
        if force or now - self._watched_at >= WATCH_INTERVAL:
            try:
                self._watched = await asyncio.to_thread(records.watched, self.rt.store, self._known)
            except Exception:  # the database, say: what was known stays watched
                log.exception("cannot read the deployments with checks")
                return self._watched
            self._watched_at = now
            self.watching = bool(self._watched)
            ids = {d.id for d in self._watched}
            self._due = {key: due for key, due in self._due.items() if key[0] in ids}
            if len(self._started) > 10_000:  # (the ids only spare DBOS a lookup)
                self._started.clear()
        return self._watched

    async def tick(self) -> None:
        deployments = await self.refresh()
        if not deployments:
            return
        now = time.monotonic()
        due: list[tuple[records.Watched, Machine, Health | None]] = []
        for deployment in deployments:
            machines = await asyncio.to_thread(records.machines_of, self.rt.store, deployment.id)
            health = await asyncio.to_thread(records.health_of, self.rt.store, deployment.id)
            for machine in machines:
                node = deployment.nodes.get(machine.node)
                if node is None:
                    continue
                current = health.get(machine.name, (None, None))[0]
                if current is not None and current.state is HealthState.unhealthy:
                    await self._recover(deployment, machine, current)
                if current is not None and current.state is HealthState.recovering:
                    continue  # its recovery checks it
                key = (deployment.id, machine.name)
                if self._due.get(key, 0.0) <= now:
                    self._due[key] = now + node.checks.interval
                    due.append((deployment, machine, current))
        if not due:
            return
        providers = {provider_key(d): d for d, _, _ in due}
        await self._infrastructure(providers)
        if not self._runnable(due):
            return
        runnable = [(d, m, h) for d, m, h in due if not self._paused(d)]
        limit = asyncio.Semaphore(self.concurrency)

        async def one(deployment: records.Watched, machine: Machine) -> Round:
            async with limit:
                node = deployment.nodes[machine.node]
                target = target_of(self.rt, deployment, machine)
                return await run_round(target, node.checks.probes, node.checks.timeout)

        rounds = await asyncio.gather(*(one(d, m) for d, m, _ in runnable), return_exceptions=True)
        # A failure counts only once what it depends on is seen up: an outage that began
        # since the last look would otherwise make every machine fail at once.
        if any(isinstance(r, Round) and not r.ok for r in rounds):
            await self._infrastructure(providers, force=True)
        for (deployment, machine, before), found in zip(runnable, rounds, strict=True):
            if isinstance(found, BaseException):
                log.error("health check failed to run: %s", found, exc_info=found)
            elif not self._paused(deployment):
                await self._observed(deployment, machine, before, found)

    def _paused(self, deployment: records.Watched) -> bool:
        """Whether what the deployment's checks depend on is down."""
        depends = {"controller:database", "controller:disk", provider_key(deployment)}
        return bool(depends & self._down.keys())

    def _runnable(self, due: list[tuple[records.Watched, Machine, Health | None]]) -> bool:
        return any(not self._paused(d) for d, _, _ in due)

    async def _observed(
        self, deployment: records.Watched, machine: Machine, before: Health | None, found: Round
    ) -> None:
        checks = deployment.nodes[machine.node].checks
        thresholds = Thresholds(checks.failures, checks.successes)
        after = observe(before or Health(), found.ok, thresholds)
        await asyncio.to_thread(
            records.save,
            self.rt.store,
            deployment,
            machine,
            before or Health(),
            after,
            results=found.as_json(),
            detail=found.summary(),
        )
        if after.state is HealthState.unhealthy:
            await self._recover(deployment, machine, after)

    async def _recover(self, deployment: records.Watched, machine: Machine, health: Health) -> None:
        """Start the machine's recovery for this incident (once: the id says which)."""
        node = deployment.nodes[machine.node]
        if not node.ladder or not node.recovery:
            return
        from provisor.orchestrator import recovery

        workflow_id = recovery.workflow_id(deployment.instance, machine, health.incident)
        if workflow_id in self._started:
            return
        await recovery.start(workflow_id, deployment.id, machine.name, health.incident)
        self._started.add(workflow_id)

    # Infrastructure

    async def _infrastructure(
        self, providers: dict[str, records.Watched], *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self._infra_at < INFRA_INTERVAL:
            return
        self._infra_at = now
        found: dict[str, tuple[str, str, str | None]] = {}  # key -> tenant, what, problem
        found["controller:database"] = ("default", "the controller's database", await self._db())
        found["controller:disk"] = ("default", "the controller's data directory", self._disk())
        checks = {
            key: asyncio.create_task(self._provider(deployment))
            for key, deployment in providers.items()
        }
        for key, task in checks.items():
            deployment = providers[key]
            tenant = "default" if key == "provider:local" else deployment.tenant
            found[key] = (tenant, f"provider {deployment.provider}", await task)
        for key, (tenant, what, problem) in found.items():
            if problem is None and key not in self._down:
                continue
            if problem is not None:
                self._down[key] = problem
            else:
                self._down.pop(key, None)
            if key == "controller:database" and problem is not None:
                log.error("health checks paused: %s does not answer: %s", what, problem)
                continue  # nothing can be recorded; it is when it answers again
            try:
                changed = await asyncio.to_thread(
                    records.infrastructure_changed,
                    self.rt.store,
                    key,
                    tenant,
                    problem is not None,
                    problem or "",
                    what,
                )
            except Exception as exc:  # the database went away meanwhile
                log.error("cannot record that %s is %s: %s", what, problem or "up", exc)
                continue
            if changed:
                log.warning("%s is %s", what, f"down: {problem}" if problem else "up again")

    async def _db(self) -> str | None:
        def ping() -> None:
            with self.rt.store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(asyncio.to_thread(ping), INFRA_TIMEOUT)
        except TimeoutError:
            return f"no answer within {INFRA_TIMEOUT:g}s"
        except Exception as exc:
            return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return None

    def _disk(self) -> str | None:
        try:
            free = shutil.disk_usage(self.home).free
        except OSError as exc:
            return str(exc)
        if free < MIN_FREE_BYTES:
            return (
                f"{free // (1024 * 1024)} MiB free in {self.home}, "
                f"below {MIN_FREE_BYTES // (1024 * 1024)} MiB"
            )
        return None

    async def _provider(self, deployment: records.Watched) -> str | None:
        try:
            provider = self.rt.provider(deployment.provider, deployment.tenant_id)
            await asyncio.wait_for(provider.check(), INFRA_TIMEOUT)
        except TimeoutError:
            return f"no answer within {INFRA_TIMEOUT:g}s"
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            return self.rt.masker_of(deployment.id).text(str(message))[:300]
        return None


@dataclass
class Running:
    """The monitor as the worker runs it: `watching` says whether the worker must stay."""

    monitor: Monitor
    task: asyncio.Task[None]
    stopping: asyncio.Event

    async def watching(self) -> bool:
        """Whether any deployment has checks (read again now: one may just be ready)."""
        await self.monitor.refresh(force=True)
        return self.monitor.watching

    async def stop(self) -> None:
        self.stopping.set()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def start(rt: Runtime) -> Running:
    """The monitor ticking in the running event loop, until `stop`; whether it watches
    anything is known when this returns."""
    monitor = Monitor(rt)
    await monitor.refresh(force=True)
    stopping = asyncio.Event()
    return Running(monitor, asyncio.create_task(monitor.run(stopping)), stopping)


__all__ = ["CONCURRENCY", "Monitor", "Running", "start"]
