"""`provisor worker`: run deployment workflows here, or see and stop the background one."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from provisor.cli._context import context, settings
from provisor.cli.deployments import wait_timeout
from provisor.cli.output import Format, console, emit_json, err_console, fields, table

worker_app = typer.Typer(
    help="The worker that moves deployments: run it here, or see, start and stop the "
    "background one that `up`, `approve` and `reject` start when none runs.",
)


@worker_app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="exit once no deployment is in progress")
    ] = False,
) -> None:
    """Run deployment workflows in this process (resumes unfinished ones first)."""
    if ctx.invoked_subcommand is not None:
        return
    from provisor.services import workers

    asyncio.run(workers.serve(settings(), until_idle=until_idle))
    if until_idle and workers.hand_over_if_pending(settings()):
        err_console.print("work arrived as this worker ended: started the background worker")


@worker_app.command("status")
def status(output: Annotated[Format, typer.Option("--output")] = Format.table) -> None:
    """Whether a worker runs (pid, since when, its log) and the deployments in progress."""
    from provisor.services import workers

    view = workers.worker_status(context(), settings())
    if output is Format.json:
        emit_json(view)
        return
    if view.running:
        supervised = (
            f", supervised by pid {view.supervisor_pid}" if view.supervisor_pid else " (foreground)"
        )
        restarted = f", restarted {view.restarts} times" if view.restarts else ""
        state = f"running (pid {view.pid or 'starting'}{supervised}, since {view.since}{restarted})"
    else:
        state = "not running"
    fields([("worker", state), ("log", view.log)])
    if not view.deployments:
        console.print("no deployment in progress")
        return
    table(
        ["deployment", "tenant", "state", "step", "updated"],
        [
            (d.name, d.tenant, d.state, d.step, d.updated_at.strftime("%Y-%m-%d %H:%M:%S"))
            for d in view.deployments
        ],
    )
    moving = [d for d in view.deployments if d.state in ("requested", "deploying")]
    if moving and not view.running:
        err_console.print(
            f"{len(moving)} deployment(s) in progress and no worker: `provisor worker start`",
            highlight=False,
        )


@worker_app.command("start")
def start() -> None:
    """Start the background worker if none runs (it ends when no work is left)."""
    from provisor.services import workers

    if workers.ensure_worker(settings()):
        console.print(f"background worker started (log: {workers.log_path(settings())})")
    else:
        console.print("a worker is running already: `provisor worker status`")


@worker_app.command("stop")
def stop(
    timeout: Annotated[
        str, typer.Option(help="how long to wait for it to end before killing it")
    ] = "30s",
) -> None:
    """Stop the worker: SIGTERM, then SIGKILL after --timeout. Its deployments stop where
    they are (checkpointed); the next worker resumes them."""
    from provisor.services import workers

    result = workers.stop_worker(settings(), timeout=wait_timeout(timeout, field="timeout"))
    if not result.running:
        console.print("no worker was running")
        return
    if result.killed:
        pids = ", ".join(str(p) for p in result.killed)
        err_console.print(f"killed pid {pids}: it did not end within {timeout}", highlight=False)
    console.print("worker stopped")


@worker_app.command("supervise", hidden=True)
def supervise(
    lock_fd: Annotated[int | None, typer.Option("--lock-fd", help="the lock, already held")] = None,
) -> None:
    """The background worker's supervisor, which `up`, `approve`, `reject` and `worker
    start` run: it runs `provisor worker --until-idle` and starts it again when it dies."""
    from provisor.services import workers

    raise typer.Exit(workers.supervise(settings(), lock_fd))
