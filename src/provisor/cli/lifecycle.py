"""`provisor stop|start NAME` and `provisor lease extend NAME`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from provisor.cli._context import Server, context, settings
from provisor.cli.deployments import TIMEOUT_HELP, lease_line, show, wait_timeout
from provisor.cli.output import Format, console, emit_json, err_console

if TYPE_CHECKING:
    from provisor.services.deployments import DeploymentView

_POLL = 0.5
EXIT_FAILED = 1
EXIT_TIMEOUT = 6
_DURING = {"stop": "stopping", "start": "starting"}


def _fetch(name: str, server: str | None) -> Callable[[], DeploymentView]:
    if server is not None:
        from provisor.cli import remote_deployments

        return lambda: remote_deployments.get(server, name)
    from provisor.services import deployments

    return lambda: deployments.get_deployment(context(), name)


def _wait(action: str, fetch: Callable[[], DeploymentView], timeout: float) -> DeploymentView:
    """Until the deployment is no longer `stopping`/`starting`, or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        view = fetch()
        if view.state != _DURING[action]:
            return view
        if time.monotonic() >= deadline:
            err_console.print(
                f"stopped waiting after {timeout:g}s: {escape(view.name)} is still "
                f"{view.state}; it goes on: `provisor status {escape(view.name)}`",
                highlight=False,
            )
            raise typer.Exit(EXIT_TIMEOUT)
        time.sleep(_POLL)


def _act(
    action: str, name: str, wait: bool, timeout: str, output: Format, server: str | None
) -> None:
    limit = wait_timeout(timeout)
    if server is not None:
        from provisor.cli import remote_deployments

        view = remote_deployments.lifecycle(server, name, action)
    else:
        from provisor.services import lifecycle, workers

        change = lifecycle.stop_deployment if action == "stop" else lifecycle.start_deployment
        view = change(context(), settings(), name)
        workers.ensure_worker(settings())
    if wait:
        view = _wait(action, _fetch(name, server), limit)
    if output is Format.json:
        emit_json(view)
    elif not wait:
        console.print(f"deployment [bold]{escape(name)}[/] {view.state}")
    else:
        show(view)
    if view.state == "failed":
        err_console.print(f"[red]{escape(view.error or 'failed')}[/]", highlight=False)
        raise typer.Exit(EXIT_FAILED)


WAIT = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="wait until it is done; exit status 0 done, 1 failed, 2 refused, 6 --timeout",
    ),
]


def stop(
    name: str,
    wait: WAIT = True,
    timeout: Annotated[str, typer.Option(help=TIMEOUT_HELP)] = "15m",
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Stop a deployment's machines: powered off, their disks, addresses and inventory
    hosts kept (`provisor start` brings them back; `provisor down` removes them)."""
    _act("stop", name, wait, timeout, output, server)


def start(
    name: str,
    wait: WAIT = True,
    timeout: Annotated[str, typer.Option(help=TIMEOUT_HELP)] = "15m",
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Start a stopped deployment's machines again; it is ready once each answers SSH."""
    _act("start", name, wait, timeout, output, server)


lease_app = typer.Typer(help="Leases: when a deployment ends.", no_args_is_help=True)


@lease_app.command("extend")
def extend(
    name: str,
    by: Annotated[
        str | None, typer.Option(help="end this much later (after its current end): 7d, 12h")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="end at this time: ISO (UTC unless it names a zone), or 3d from now"),
    ] = None,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Move the end of a deployment's lease (one without a lease gets one)."""
    if server is not None:
        from provisor.cli import remote_deployments

        view = remote_deployments.extend_lease(server, name, by=by, until=until)
    else:
        from provisor.services import lifecycle, workers

        view = lifecycle.extend_lease(context(), name, by=by, until=until)
        workers.ensure_worker(settings())  # the worker's lease tick acts on the new end
    if output is Format.json:
        emit_json(view)
        return
    console.print(f"deployment [bold]{escape(name)}[/]: lease {lease_line(view)}", highlight=False)
