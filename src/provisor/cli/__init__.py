"""The `provisor` command."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from provisor import __version__
from provisor.cli import (
    alerts,
    backups,
    blueprints,
    changes,
    completion,
    deployments,
    events,
    fleet,
    groups,
    health,
    hosts,
    identity,
    keys,
    lifecycle,
    patches,
    providers,
    worker,
)
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
app.add_typer(changes.app, name="config")
app.add_typer(blueprints.app, name="blueprints")
app.command("up")(deployments.up)
app.command("down")(deployments.down)
app.command("status")(deployments.status)
app.command("approve")(deployments.approve)
app.command("reject")(deployments.reject)
app.command("params")(deployments.params)
app.command("health")(health.health)
app.command("stop")(lifecycle.stop)
app.command("start")(lifecycle.start)
app.add_typer(lifecycle.lease_app, name="lease")
app.add_typer(worker.worker_app, name="worker")
app.add_typer(deployments.deployments_app, name="deployments")
app.add_typer(providers.app, name="providers")
app.add_typer(alerts.notifiers_app, name="notifiers")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(keys.app, name="keys")
app.add_typer(backups.app, name="backup")
app.add_typer(patches.app, name="patch")
app.add_typer(identity.users_app, name="users")
app.add_typer(identity.tokens_app, name="tokens")
app.command("login")(identity.login)
app.command("logout")(identity.logout)
app.command("completion")(completion.completion)


def _version(value: bool) -> None:
    if value:
        print(f"provisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="print the version"),
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
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="certificate (PEM) for HTTPS")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="its private key (PEM)")] = None,
    tls_self_signed: Annotated[
        bool,
        typer.Option(
            "--tls-self-signed",
            help="HTTPS with a certificate made (and kept) in the data directory; "
            "its fingerprint is printed",
        ),
    ] = False,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http", help="plain HTTP on a non-loopback address (tokens in clear)"
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="a name clients reach the server by, repeatable"),
    ] = None,
) -> None:
    """Run the REST API (and, later, the portal and scheduler).

    It listens on 127.0.0.1 unless told otherwise; any other address needs HTTPS
    (--tls-cert and --tls-key) or an explicit --insecure-http. Requests must name the
    server by an address or name it answers to (its own, localhost, --allowed-host).
    """
    import ipaddress

    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise ProvisorError("give both --tls-cert and --tls-key", field="tls-cert")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise ProvisorError(f"no such file: {path}", field="tls-cert")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ProvisorError(f"invalid address {host!r}: an IP address", field="host") from None
    if tls_self_signed and tls_cert is not None:
        raise ProvisorError("give --tls-cert or --tls-self-signed, not both", field="tls-cert")
    if not loopback and tls_cert is None and not tls_self_signed and not insecure_http:
        raise ProvisorError(
            f"listening on {host} needs HTTPS: give --tls-cert and --tls-key, or "
            "--tls-self-signed (or --insecure-http to send tokens in clear on purpose)",
            field="host",
        )
    if insecure_http and not loopback:
        err_console.print(
            f"[red]warning[/]: plain HTTP on {host}: tokens and data cross the network "
            "unencrypted; anyone on the path can act as the callers",
            highlight=False,
        )
    names = [n for n in (host, *(allowed_host or [])) if n not in ("0.0.0.0", "::")]  # noqa: S104
    if tls_self_signed:
        from provisor.cli._context import settings
        from provisor.services import system

        tls_cert, public, fingerprint = system.server_certificate(settings(), [*names, "localhost"])
        err_console.print(
            f"HTTPS with a self-signed certificate, SHA-256 fingerprint {fingerprint}\n"
            f"clients trust {public} (e.g. SSL_CERT_FILE={public}) once they have checked "
            "that fingerprint",
            highlight=False,
        )
    given = os.environ.get("PROVISOR_ALLOWED_HOSTS", "")
    os.environ["PROVISOR_ALLOWED_HOSTS"] = ",".join(n for n in (given, *names) if n)
    # Named, not imported: the CLI and the API are two faces over services, and neither
    # imports the other; uvicorn builds the app from its factory.
    uvicorn.run(
        "provisor.api:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


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
