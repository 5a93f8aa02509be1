"""Deploy `cluster.yaml` with 30 machines on the local provider and time the orchestrator.

    python bench/deploy.py [--machines 30] [--repeat 1] [--profile out.prof] [--no-docs]

The worker runs in this process, so `time.process_time()` (all threads) is the
controller's own CPU: DBOS checkpoints, the provider's bookkeeping, SSH client
work, the parameter endpoint. The machines' CPU (sshd, their scripts) is in
other processes and not counted; waiting on them costs the controller nothing.
Results go to docs/benchmarks.md between the deploy markers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "examples" / "blueprints" / "cluster.yaml"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- deploy:begin -->", "<!-- deploy:end -->"


def one_run(machines: int, profile: Path | None) -> dict[str, float]:
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
    text = BLUEPRINT.read_text()
    wall = time.monotonic()
    cpu = time.process_time()
    deployments.request_deployment(
        ctx,
        settings,
        text,
        source=str(BLUEPRINT),
        parameters={"workers": str(machines - 1)},
        name="bench",
    )
    request_cpu = time.process_time() - cpu
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    asyncio.run(worker.serve(settings, until_idle=True))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)  # type: ignore[arg-type]
    total_cpu = time.process_time() - cpu
    total_wall = time.monotonic() - wall
    view = deployments.get_deployment(ctx, "bench")
    if view.state != "ready":
        raise SystemExit(f"the deployment ended {view.state}: {view.error}")
    ready = sum(1 for m in view.machines if m.state == "ready")
    asyncio.run(deployments.remove_deployment(ctx, settings, "bench"))
    ctx.store.close()
    shutil.rmtree(home, ignore_errors=True)
    return {
        "load": os.getloadavg()[0],
        "machines": ready,
        "wall_s": total_wall,
        "cpu_s": total_cpu,
        "request_cpu_ms": request_cpu * 1000,
        "cpu_ms_per_machine": total_cpu * 1000 / ready,
    }


def report(runs: list[dict[str, float]], machines: int) -> str:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return "\n".join(
        [
            BEGIN,
            f"## Deployment: `cluster.yaml` with {machines} machines on the local provider",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"median of {len(runs)} run(s); `make bench` (bench/deploy.py). Load average at "
            f"the end of the run: {median('load'):.0f} (a shared machine; goal: under 20 ms of "
            f"controller CPU per machine, {median('cpu_ms_per_machine') / 20:.1f}x that now).",
            "",
            "| what | value |",
            "| --- | ---: |",
            f"| machines ready | {int(median('machines'))} |",
            f"| total time, request to ready | {median('wall_s'):.1f} s |",
            f"| controller CPU, whole deployment | {median('cpu_s'):.2f} s |",
            f"| controller CPU per machine | {median('cpu_ms_per_machine'):.1f} ms |",
            f"| of which the request (validate, record, queue) | "
            f"{median('request_cpu_ms'):.0f} ms |",
            "",
            "Controller CPU is the worker process's own CPU (every thread): DBOS checkpoints,",
            "the local provider's bookkeeping and process starts, SSH client work and the",
            "parameter endpoint. The machines' own work (sshd, their scripts) runs in other",
            "processes and is not in it; the rest of the total time is waiting on machines.",
            END,
        ]
    )


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machines", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        run = one_run(args.machines, args.profile)
        print(run, flush=True)
        runs.append(run)
    section = report(runs, args.machines)
    print(section)
    if not args.no_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
