"""The `provisor` command."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from provisor import __version__
from provisor.cli import blueprints, deployments, events, fleet, groups, hosts, providers
from provisor.cli._context import set_tenant
from provisor.cli.output import err_console
from provisor.core.errors import ProvisorError

app = typer.Typer(
    name="provisor",
    help="Provision, configure, operate and retire multi-machine services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(hosts.app, name="hosts")
app.add_typer(groups.app, name="groups")
app.command("events")(events.events)
app.command("run")(fleet.run)
app.command("copy")(fleet.copy)
app.command("fetch")(fleet.fetch)
app.command("kill")(fleet.kill)
app.add_typer(fleet.jobs_app, name="jobs")
app.add_typer(blueprints.app, name="blueprints")
app.command("up")(deployments.up)
app.command("down")(deployments.down)
app.command("status")(deployments.status)
app.command("approve")(deployments.approve)
app.command("reject")(deployments.reject)
app.command("params")(deployments.params)
app.command("worker")(deployments.worker_command)
app.add_typer(deployments.deployments_app, name="deployments")
app.add_typer(providers.app, name="providers")


def _version(value: bool) -> None:
    if value:
        print(f"provisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", envvar="PROVISOR_TENANT", help="act for this tenant")
    ] = None,
) -> None:
    set_tenant(tenant)


@app.command("server")
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
) -> None:
    """Run the REST API (and, later, the portal and scheduler)."""
    import uvicorn

    # Named, not imported: the CLI and the API are two faces over services, and neither
    # imports the other; uvicorn builds the app from its factory.
    uvicorn.run("provisor.api:create_app", factory=True, host=host, port=port, log_level="info")


def main() -> None:
    """Entry point: user errors are one clear line, never a traceback."""
    logging.basicConfig(level=os.environ.get("PROVISOR_LOG_LEVEL", "WARNING").upper())
    try:
        app()
    except ProvisorError as exc:
        err_console.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
        sys.exit(2 if exc.status < 500 else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        for error in exc.errors():  # a bad PROVISOR_* variable or provisor.toml entry
            variable = "PROVISOR_" + "_".join(str(p) for p in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            err_console.print(f"[red]error[/]: {variable}: {escape(message)}", highlight=False)
        sys.exit(2)
    except Exception as exc:  # a bug: say so briefly, keep the traceback for --debug
        if os.environ.get("PROVISOR_DEBUG"):
            raise
        err_console.print(
            f"[red]internal error[/]: {type(exc).__name__}: {escape(str(exc))}\n"
            "(set PROVISOR_DEBUG=1 to see the traceback; please report it)",
            highlight=False,
        )
        sys.exit(70)
