"""Deploy `cluster.yaml` with 30, 100 and 300 machines on the local provider and time it.

    python bench/deploy.py [--machines 30,100,300] [--repeat 1] [--profile out.prof]
                           [--breakdown] [--no-docs]

Each size runs in a process of its own and reports the time from the request to ready,
`down`'s time, the controller's CPU and peak RSS growth per machine, and the machines'
memory (their cgroups).

The worker runs in this process, so `time.process_time()` (all threads) is the
controller's own CPU: DBOS checkpoints, the provider's bookkeeping, SSH client
work, the parameter endpoint. The machines' CPU (sshd, their scripts) is in
other processes and not counted. Two shares are measured alone in the same run and
told apart: the local provider making the same machines (a cloud makes them
elsewhere), and an idle worker over the same wall time (DBOS's pollers and timers
tick while the controller waits on the machines). Results go to docs/benchmarks.md
between the deploy markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import os
import platform
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from docsection import markers, write_section

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "examples" / "blueprints" / "cluster.yaml"
BEGIN, END = markers("deploy")


class ThreadCPU:
    """Where the controller's CPU went, by thread: sampled from /proc/self/task.

    The event loop that runs the workflows (DBOS's), the threads the steps hand
    blocking work to (store, provider, DBOS checkpoints), DBOS's own pollers and
    the parameter endpoint's loop (the main thread) are told apart by name.
    A thread's last fraction of a sampling interval before it exits is lost. The
    sampler's own CPU (`own`) is not the controller's: callers subtract it.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._start = self._sample()
        self._process_start = time.process_time()
        self._process_end = self._process_start
        self.own = 0.0

    def _sample(self) -> dict[int, tuple[str, float]]:
        """CPU seconds of each thread (schedstat: nanoseconds, not 10 ms ticks)."""
        names = {t.native_id: t.name for t in threading.enumerate()}
        found = {}
        for tid_text in os.listdir("/proc/self/task"):
            tid = int(tid_text)
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    on_cpu = int(f.read().split()[0]) / 1e9
            except OSError:
                continue
            found[tid] = (names.get(tid, "?"), on_cpu)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._seen.update(self._sample())
        self.own = time.thread_time()

    def __enter__(self) -> ThreadCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._seen.update(self._sample())
        self._process_end = time.process_time()

    def by_kind(self) -> dict[str, float]:
        kinds: dict[str, float] = {}
        for tid, (name, cpu) in self._seen.items():
            if name == "bench-monitor":
                continue
            kind = (
                "event loop (workflows, SSH, parameter endpoint)"
                if name == "MainThread"
                else "worker threads (store, provider, checkpoints)"
                if name.startswith(("dbos-executor", "asyncio", "ThreadPoolExecutor"))
                else "DBOS background threads"
            )
            kinds[kind] = kinds.get(kind, 0.0) + cpu - self._start.get(tid, (name, 0.0))[1]
        # Threads gone before a sample saw their last CPU.
        total = self._process_end - self._process_start - self.own
        kinds["threads that exited"] = total - sum(kinds.values())
        return kinds


class WorkItemCPU:
    """CPU of the blocking calls the event loop hands to threads, by function.

    Wraps `concurrent.futures`' work items while active: `asyncio.to_thread(f)`
    and DBOS's own executor calls are charged to `f`'s qualified name.
    """

    def __init__(self, profile: str | None = None) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self._original: Any = None
        self._profile = profile  # profile the calls whose name has this in it
        self.stats: pstats.Stats | None = None

    @staticmethod
    def _name(fn: Any, args: tuple[Any, ...]) -> str:
        while isinstance(fn, functools.partial):
            fn, args = fn.func, fn.args + args
        if getattr(fn, "__name__", "") == "run" and args:  # Context.run(func, ...)
            return WorkItemCPU._name(args[0], args[1:])
        module = getattr(fn, "__module__", None) or ""
        # Not getattr's default: repr() of a bound method shows its object whole (the
        # parameter board with every value), and would cost more than the call it names.
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        return f"{module.split('.')[0]}:{qualname}"

    def __enter__(self) -> WorkItemCPU:
        from concurrent.futures import thread

        self._original = original = thread._WorkItem.run
        lock = threading.Lock()

        def run(item: Any) -> None:
            name = WorkItemCPU._name(item.fn, item.args)
            profiler = cProfile.Profile() if self._profile and self._profile in name else None
            start = time.thread_time()
            try:
                if profiler:
                    profiler.runcall(original, item)
                else:
                    original(item)
            finally:
                with lock:
                    self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - start
                    self.calls[name] += 1
                    if profiler:
                        if self.stats is None:
                            self.stats = pstats.Stats(profiler)
                        else:
                            self.stats.add(profiler)

        thread._WorkItem.run = run  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        from concurrent.futures import thread

        thread._WorkItem.run = self._original  # type: ignore[method-assign]

    def table(self, limit: int = 25) -> str:
        lines = [f"{'cpu ms':>8} {'calls':>6}  blocking call (in worker threads)"]
        for name, cpu in sorted(self.cpu.items(), key=lambda kv: -kv[1])[:limit]:
            lines.append(f"{cpu * 1000:8.0f} {self.calls[name]:6d}  {name}")
        return "\n".join(lines)


class Phases:
    """When the workflow passed its step boundaries (seconds from `start`).

    The orchestrator raises each boundary as the audit event `provisor.step`
    (deploy.py `_boundary`): `launched`, `reachable`, `configured-N`, `outputs`, and
    per machine `launch-called:NAME`, `configured:NAME` (kept as the first and last).
    """

    hooked: Phases | None = None

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.seen: dict[str, float] = {}

    def __enter__(self) -> Phases:
        if Phases.hooked is None:  # an audit hook stays for the process: one, rebound
            sys.addaudithook(Phases._hook)
        Phases.hooked = self
        return self

    def __exit__(self, *exc: object) -> None:
        Phases.hooked = None

    @staticmethod
    def _hook(event: str, args: tuple[Any, ...]) -> None:
        phases = Phases.hooked
        if phases is None or event != "provisor.step":
            return
        name, at = str(args[0]), time.monotonic() - phases.start
        kind, _, machine = name.partition(":")
        if machine:
            phases.seen.setdefault(f"first {kind}", at)
            phases.seen[f"last {kind}"] = at
        else:
            phases.seen[name] = at

    def line(self) -> str:
        return ", ".join(
            f"{k} {v:.1f}s" for k, v in sorted(self.seen.items(), key=lambda kv: kv[1])
        )


def one_run(
    machines: int, profile: Path | None, breakdown: bool = False, profile_call: str | None = None
) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="provisor-bench-deploy-"))
    os.environ["PROVISOR_HOME"] = str(home)
    os.environ["PROVISOR_LOCAL_NETWORK"] = f"127.{random.randint(101, 199)}.0.0/16"
    os.environ.pop("PROVISOR_DATABASE_URL", None)
    # Start-up (imports) is paid once per worker, not per machine: done before timing.
    import dbos  # noqa: F401

    from provisor.orchestrator import deploy, worker  # noqa: F401
    from provisor.providers import local  # noqa: F401
    from provisor.services import deployments
    from provisor.services.context import open_context
    from provisor.settings import Settings

    settings = Settings()
    ctx = open_context(settings)
    removed = False
    try:
        run = _measure(ctx, settings, machines, profile, breakdown, profile_call)
        # `down`, timed: what `provisor down bench` does, in this process.
        start = time.monotonic()
        asyncio.run(deployments.remove_deployment(ctx, settings, "bench"))
        run["down_s"] = time.monotonic() - start
        removed = True
        return run
    except BaseException:  # whatever happened (even a broken pipe), no machine is left
        try:
            asyncio.run(deployments.remove_deployment(ctx, settings, "bench"))
            removed = True
        except Exception as exc:  # reported: the first error matters more
            print(f"bench: could not remove the deployment: {exc}", file=sys.stderr)
        raise
    finally:
        ctx.store.close()
        if removed:
            shutil.rmtree(home, ignore_errors=True)
        else:  # its registry is how its machines can still be removed
            print(
                f"bench: machines may be left: PROVISOR_HOME={home} provisor down bench",
                file=sys.stderr,
            )


def _memory_kib(field: str) -> int:
    """A line of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def machines_memory_mb(home: Path) -> float:
    """What the sandbox machines hold now, from their memory cgroups (processes and the
    page cache of the files they wrote); 0 when the provider could not make cgroups."""
    try:
        registry = json.loads((home / "local-provider" / "registry.json").read_text())
    except (OSError, ValueError):
        return 0.0
    total = 0
    for record in registry.get("machines", {}).values():
        cgroup = record.get("cgroup")
        if not cgroup or record.get("phase") == "terminated":
            continue
        for name in ("memory.current", "memory.usage_in_bytes"):  # cgroup v2, v1
            with contextlib.suppress(OSError, ValueError):
                total += int((Path(cgroup) / name).read_text())
                break
    return total / 2**20


def provider_alone(machines: int) -> float:
    """CPU (ms per machine) of the local provider launching the same machines by itself.

    The local provider makes machines inside the controller's process (a cloud makes
    them elsewhere): what it costs alone is not the orchestrator's own work.
    """
    from provisor.core.blueprint import expand, load_blueprint
    from provisor.orchestrator.secrets import controller_public_key
    from provisor.providers import MachineSpec, Size
    from provisor.providers.local import LocalProvider

    home = Path(tempfile.mkdtemp(prefix="provisor-bench-provider-"))
    network = f"127.{random.randint(101, 199)}.0.0/16"
    provider = LocalProvider(home / "local-provider", network=network)
    plans = expand(
        load_blueprint(BLUEPRINT.read_text()), {"workers": str(machines - 1)}, deployment="alone"
    )
    key = controller_public_key(home)
    specs = [
        MachineSpec(
            token=f"alone/{p.name}",
            name=p.name,
            hostname=p.hostname,
            image=p.image,
            ssh_public_key=key,
            size=Size(p.size.cpu, p.size.memory_mb, p.size.flavor),
            user_data=p.user_data,
        )
        for p in plans
    ]

    async def launch_all() -> list[str]:
        return [m.id for m in await asyncio.gather(*(provider.launch(s) for s in specs))]

    async def terminate(ids: list[str]) -> None:
        await asyncio.gather(*(provider.terminate(i) for i in ids))

    cpu = time.process_time()
    ids = asyncio.run(launch_all())
    used = time.process_time() - cpu
    asyncio.run(terminate(ids))
    shutil.rmtree(home, ignore_errors=True)
    return used * 1000 / len(specs)


def idle_worker(seconds: float) -> float:
    """CPU seconds per second of a worker with nothing to do, after its start-up.

    DBOS's queue and job pollers and the parameter endpoint's timer run whether a
    deployment does or not: over a deployment's wall time, their CPU is the cost of
    waiting on the machines, not of working for them. Start-up is not in this rate
    (the deployment's run counts it).
    """
    from provisor.orchestrator import worker
    from provisor.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="provisor-bench-idle-"))
    os.environ["PROVISOR_HOME"] = str(home)

    async def measure() -> float:
        serving = asyncio.create_task(worker.serve(Settings(), until_idle=False))
        await asyncio.sleep(3.0)  # started
        if serving.done():
            serving.result()  # its error
            raise SystemExit("the idle worker stopped by itself")
        start = time.process_time()
        await asyncio.sleep(seconds)
        used = time.process_time() - start
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return used / seconds

    try:
        return asyncio.run(measure())
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _measure(
    ctx: Any,
    settings: Any,
    machines: int,
    profile: Path | None,
    breakdown: bool,
    profile_call: str | None,
) -> dict[str, float]:
    from provisor.services import deployments

    text = BLUEPRINT.read_text()
    _reset_peak_rss()
    rss_start = _memory_kib("VmRSS")
    wall = time.monotonic()
    cpu = time.process_time()
    times = os.times()
    deployments.request_deployment(
        ctx,
        settings,
        text,
        source=str(BLUEPRINT),
        parameters={"workers": str(machines - 1)},
        name="bench",
    )
    request_cpu = time.process_time() - cpu
    # The event loop thread's CPU (not wall time: waits would dominate).
    profiler = cProfile.Profile(time.thread_time) if profile else None
    if profiler:
        profiler.enable()
    items = WorkItemCPU(profile_call)
    watching = breakdown or profile_call
    with (
        ThreadCPU() as threads,
        Phases() as phases,
        items if watching else contextlib.nullcontext(),
    ):
        ready_wall = asyncio.run(_serve_until_settled(ctx, settings, "bench")) - wall
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)  # type: ignore[arg-type]
    total_cpu = time.process_time() - cpu - threads.own
    rss_growth_mb = (_memory_kib("VmHWM") - rss_start) / 1024
    end = os.times()
    total_wall = time.monotonic() - wall
    print(f"phases: {phases.line()}", flush=True)
    phase_times = {f"phase: {k}": v for k, v in phases.seen.items()}
    if breakdown:
        print(items.table(), flush=True)
    if items.stats is not None:
        items.stats.sort_stats("tottime").print_stats(25)
    view = deployments.get_deployment(ctx, "bench")
    if view.state != "ready":
        raise SystemExit(f"the deployment ended {view.state}: {view.error}")
    ready = sum(1 for m in view.machines if m.state == "ready")
    machines_mb = machines_memory_mb(settings.home)
    return {
        "load": os.getloadavg()[0],
        "machines": ready,
        "wall_s": ready_wall,
        "worker_wall_s": total_wall,
        "cpu_s": total_cpu,
        "request_cpu_ms": request_cpu * 1000,
        "cpu_ms_per_machine": total_cpu * 1000 / ready,
        "rss_growth_mb": rss_growth_mb,
        "rss_kib_per_machine": rss_growth_mb * 1024 / ready,
        "machines_memory_mb": machines_mb,
        "user_s": end.user - times.user - threads.own,
        "sys_s": end.system - times.system,
        **{f"threads: {k}": round(v, 2) for k, v in sorted(threads.by_kind().items())},
        **phase_times,
    }


SETTLED = ("ready", "failed", "refused", "rejected")


async def _serve_until_settled(ctx: Any, settings: Any, name: str) -> float:
    """Be the worker until the deployment settles; when it did (time.monotonic()).

    A deployment with a lease keeps an `until_idle` worker for the lease's end, so
    the worker is stopped as `provisor worker stop` does (SIGTERM), once the
    deployment's state (one indexed row, read every 0.1 s) says it is done.
    """
    from sqlalchemy import select

    from provisor.orchestrator import worker
    from provisor.store.orchestration import Deployment

    serving = asyncio.create_task(worker.serve(settings, until_idle=False))
    query = select(Deployment.state).where(Deployment.name == name)
    while True:
        await asyncio.sleep(0.1)
        if serving.done():
            serving.result()  # its error
            raise SystemExit("the worker stopped by itself")
        with ctx.store.session() as session:
            state = session.scalar(query)
        if state in SETTLED:
            settled = time.monotonic()
            break
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler: a clean stop
    await serving
    return settled


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, float("nan")) for r in runs)


def report(results: dict[int, list[dict[str, float]]]) -> str:
    sizes = sorted(results)
    repeats = {len(runs) for runs in results.values()}
    loads = ", ".join(f"{_median(results[n], 'load'):.0f}" for n in sizes)

    def row(n: int) -> str:
        runs = results[n]

        def m(key: str) -> float:
            return _median(runs, key)

        return (
            f"| {n} | {int(m('machines'))} | {m('wall_s'):.1f} s | {m('down_s'):.1f} s "
            f"| {m('cpu_ms_per_machine'):.1f} ms | {m('provider_cpu_ms_per_machine'):.1f} ms "
            f"| {m('idle_cpu_ms_per_machine'):.1f} ms "
            f"| **{m('orchestrator_cpu_ms_per_machine'):.1f} ms** "
            f"| {m('with_idle_cpu_ms_per_machine'):.1f} ms "
            f"| {m('rss_growth_mb'):.0f} MiB ({m('rss_kib_per_machine'):.0f} KiB) "
            f"| {m('machines_memory_mb'):.0f} MiB "
            f"({m('machines_memory_mb') * 1024 / max(m('machines'), 1):.0f} KiB) |"
        )

    def phases(n: int) -> str:
        runs = results[n]

        def at(key: str) -> float:
            return _median(runs, f"phase: {key}")

        launched, reachable, ready = at("launched"), at("reachable"), _median(runs, "wall_s")
        return (
            f"| {n} | {at('planned'):.1f} s | {launched - at('planned'):.1f} s "
            f"(first machine {at('first launch-called') - at('planned'):.1f} s) "
            f"| {reachable - launched:.1f} s | {ready - reachable:.1f} s |"
        )

    return "\n".join(
        [
            BEGIN,
            "## Deployment: `cluster.yaml` at 30, 100 and 300 machines on the local provider",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"median of {', '.join(str(r) for r in sorted(repeats))} run(s) per size, each "
            "size in a process of its own; `make bench` (bench/deploy.py "
            f"--machines {','.join(str(n) for n in sizes)}). Load average at the end of each "
            f"run: {loads} (a shared machine; the machines' own processes count in it). Goal: "
            "299 workers (300 machines) ready in under 60 s from one command, and under 20 ms "
            "of the orchestrator's own CPU per machine.",
            "",
            "| machines | ready | request to ready | `down` | controller CPU per machine "
            "| of which the local provider (alone) | of which an idle worker "
            "| **orchestrator's own** | the same, idle share left in "
            "| controller memory: peak RSS growth (per machine) "
            "| machines' memory at ready (per machine) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(row(n) for n in sizes),
            "",
            "Where the time to ready goes (from the workflow's step boundaries):",
            "",
            "| machines | worker start and plan | launch all | wait for SSH "
            "| configure (the machines' scripts) |",
            "| ---: | ---: | ---: | ---: | ---: |",
            *(phases(n) for n in sizes),
            "",
            "Controller CPU is the worker process's own CPU (every thread) from the request",
            "to ready: DBOS checkpoints, the local provider's bookkeeping and process starts,",
            "SSH client work and the parameter endpoint. Two shares are measured alone in the",
            "same process and subtracted: the local provider making the same machines (a",
            "cloud makes them elsewhere) and an idle worker over the same time (DBOS's queue",
            "and job pollers, the parameter endpoint's timer: the cost of waiting on the",
            "machines; its rate varies with the machine's load, so the figure with its share",
            "left in is the conservative one). The machines' own work (sshd, their scripts)",
            "runs in other processes and is not in it: at 300 machines it is most of the",
            "configure phase, 299 workers each starting an agent and calling `provisor-param`",
            "on two cores. `down` is `provisor down`'s work (cancel, terminate every machine,",
            "forget them). Controller memory is the growth of the worker's peak RSS over the",
            "deployment; the machines' memory is the sum of their memory cgroups' usage at",
            "ready (their processes and the page cache of the files they wrote).",
            "",
            "What made 300 machines work and faster: the worker, which stays for the",
            "deployment's lease, is stopped once the deployment is ready, as `provisor worker",
            "stop` does; `cluster.yaml` takes up to 299 workers; `provisor-param` keeps",
            "trying for five minutes when the controller is too busy to answer in time (a",
            "`get` gave up at the first timeout, and a worker failed with it), starts lean",
            "(`ssl`, `urllib` and `json` only where needed: ~50 ms of a machine's CPU saved",
            "per call, a few calls per machine) and reads several keys in one call, so the",
            "head waits for 299 workers with one process instead of 299 in a row; each",
            "worker's agent registers itself and then serves in the background (one Python",
            "start, not two); the local provider makes only the record it needs from its registry",
            "(not every machine's, three times per launch) and parses the file only when",
            "it changed; the deployment's console logs are read a few at a time. Earlier:",
            "8 checkpointed steps for this blueprint instead of 97, one SSH",
            "command per machine to install the agent and the scripts, runtime parameters in",
            "memory while the workflow runs, launched machines recorded with one statement",
            "per table, start-up objects frozen out of the garbage collector, blueprints",
            "read with libyaml. Where the controller's CPU goes: `python bench/deploy.py",
            "--machines 300 --breakdown` (blocking calls by function).",
            END,
        ]
    )


def measure_size(args: argparse.Namespace, machines: int) -> list[dict[str, float]]:
    runs = []
    for _ in range(args.repeat):
        run = one_run(machines, args.profile, args.breakdown, args.profile_call)
        run["provider_cpu_ms_per_machine"] = provider_alone(machines)
        # A rate: 20 s of idleness tell it as well as the deployment's whole time.
        idle_rate = idle_worker(min(run["wall_s"], 20.0))
        run["idle_cpu_ms_per_s"] = idle_rate * 1000
        run["idle_cpu_ms_per_machine"] = idle_rate * run["wall_s"] * 1000 / run["machines"]
        run["with_idle_cpu_ms_per_machine"] = (
            run["cpu_ms_per_machine"] - run["provider_cpu_ms_per_machine"]
        )
        run["orchestrator_cpu_ms_per_machine"] = (
            run["with_idle_cpu_ms_per_machine"] - run["idle_cpu_ms_per_machine"]
        )
        print(run, flush=True)
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--machines",
        default="30,100,300",
        help="machine counts, comma-separated (a head and N-1 workers each)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)  # one size's, as JSON
    parser.add_argument(
        "--profile-call",
        metavar="NAME",
        help="cProfile the blocking calls whose name contains NAME (e.g. _load)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="print the CPU of the blocking calls handed to threads, by function",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.machines.split(",")]
    if any(n < 2 for n in sizes):
        parser.error("--machines: at least 2 (a head and a worker)")
    if args.results is not None:  # one size, in a process of its own (see below)
        args.results.write_text(json.dumps(measure_size(args, sizes[0])))
        return
    results: dict[int, list[dict[str, float]]] = {}
    # Each size in a fresh process: its peak RSS and its imports are its own.
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="provisor-bench-results-") as folder:
            out = Path(folder) / "runs.json"
            command = [sys.executable, __file__, "--machines", str(n), "--results", str(out)]
            command += ["--repeat", str(args.repeat)]
            if args.breakdown:
                command.append("--breakdown")
            if args.profile_call:
                command += ["--profile-call", args.profile_call]
            if args.profile:
                command += ["--profile", f"{args.profile}.{n}"]
            subprocess.run(command, check=True)
            results[n] = json.loads(out.read_text())
    section = report(results)
    print(section)
    if not args.no_docs:
        write_section("deploy", section)


if __name__ == "__main__":
    main()
