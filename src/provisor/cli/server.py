"""`provisor server`: the REST API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from provisor.cli.output import err_console
from provisor.core.errors import ProvisorError


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
