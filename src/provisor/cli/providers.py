"""`provisor providers ...`: configure the infrastructure deployments run on.

A secret (an EC2 secret access key) is never a command-line argument, where it would
land in shell history and `ps`: it is read from PROVISOR_SECRET_ACCESS_KEY or asked
for without echo, and stored sealed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from provisor.cli._context import context, settings
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    err_console,
    fields,
    full_time,
    short_time,
    table,
)
from provisor.core.errors import InvalidInput, NotFound, ProvisorError

if TYPE_CHECKING:
    from provisor.services.providers import ProviderView

SECRET_ENV = "PROVISOR_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name, not a secret

app = typer.Typer(
    help="Infrastructure providers: local (built in) and the ones you configure.",
    no_args_is_help=True,
)

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]


def _pairs(items: list[str], *, field: str, example: str) -> dict[str, str]:
    """`["2x4096=m5.large"]` -> `{"2x4096": "m5.large"}`; the settings check the keys."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"expected {example}, got {item!r}", field=field)
        result[key.strip()] = value.strip()
    return result


def _secret_access_key(access_key_id: str | None) -> str | None:
    """The secret that goes with --access-key-id: from the environment, else asked for."""
    from_env = os.environ.get(SECRET_ENV) or None
    if access_key_id is None:
        if from_env is not None:
            raise InvalidInput(
                f"{SECRET_ENV} is set but --access-key-id is not: give both, or neither "
                "to use boto3's own credentials (AWS_* variables, ~/.aws)",
                field="access_key_id",
            )
        return None
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        with contextlib.suppress(EOFError):  # the terminal closed: no answer, as if none
            return getpass.getpass(f"secret access key for {access_key_id}: ")
    raise InvalidInput(
        f"--access-key-id needs its secret access key: set {SECRET_ENV} or run in a "
        "terminal to be asked (it is never a command-line argument)",
        field="secret_access_key",
    )


def _credentials(view: ProviderView) -> str:
    if view.kind == "local":
        return "-"
    key_id = view.settings.get("access_key_id")
    if view.has_secret:
        return f"{key_id} (secret sealed)" if key_id else "secret sealed"
    return "SDK's own chain"


def _added(view: ProviderView, wide: bool) -> str:
    if view.created_at is None:
        return "built in"
    return full_time(view.created_at) if wide else short_time(view.created_at)


def _show(view: ProviderView) -> None:
    pairs: list[tuple[str, Any]] = [("name", view.name), ("type", view.kind)]
    if view.kind == "local":
        pairs.append(("settings", "none: built in, machines on loopback addresses"))
    pairs.extend((key.replace("_", " "), value) for key, value in view.settings.items())
    pairs.append(("credentials", _credentials(view)))
    pairs.append(("secret", "stored sealed (never shown)" if view.has_secret else "none"))
    pairs.append(("added", _added(view, wide=True)))
    if view.created_by:
        pairs.append(("by", view.created_by))
    fields(pairs)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="provider name, unique in the tenant")],
    kind: Annotated[str, typer.Option("--type", help="provider type: ec2")],
    region: Annotated[
        str | None, typer.Option(help="e.g. us-east-1 (OpenStack's EC2 API often wants nova)")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="the EC2 API URL (default: AWS's endpoint of the region)")
    ] = None,
    zone: Annotated[str | None, typer.Option(help="availability zone for machines")] = None,
    subnet: Annotated[str | None, typer.Option(help="subnet id for machines (VPC)")] = None,
    login_user: Annotated[
        str | None, typer.Option("--login-user", help="the user the images let SSH in")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="address to reach machines at: public or private")
    ] = None,
    address_map: Annotated[
        Path | None,
        typer.Option("--address-map", help="JSON file {instance id: address} (NAT, labs)"),
    ] = None,
    ssh_source: Annotated[
        str | None,
        typer.Option(
            "--ssh-source",
            help="CIDR allowed to reach port 22 (default: the controller's "
            "PROVISOR_PARAMETER_ADDRESS alone)",
        ),
    ] = None,
    instance_type: Annotated[
        list[str] | None,
        typer.Option(
            "--instance-type",
            help="CPUxMEMORY_MB=TYPE, repeatable (replaces the default t3 map)",
        ),
    ] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", help="NAME=AMI_ID, repeatable")
    ] = None,
    access_key_id: Annotated[
        str | None,
        typer.Option(
            "--access-key-id",
            help=f"the secret key comes from {SECRET_ENV} or a prompt "
            "(default: boto3's own credentials at run time)",
        ),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="tries per API call")
    ] = None,
    call_timeout: Annotated[
        float | None, typer.Option("--call-timeout", help="seconds per API call")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Configure a provider (the secret key is stored sealed, never shown)."""
    from provisor.services import providers

    given: dict[str, Any] = {
        "region": region,
        "endpoint": endpoint,
        "zone": zone,
        "subnet": subnet,
        "login_user": login_user,
        "address": address,
        # Absolute: the worker that reads it may run elsewhere than this shell's directory.
        "address_map": str(address_map.expanduser().absolute()) if address_map else None,
        "ssh_source": ssh_source,
        "access_key_id": access_key_id,
        "max_attempts": max_attempts,
        "call_timeout": call_timeout,
    }
    settings = {key: value for key, value in given.items() if value is not None}
    if instance_type:
        settings["instance_types"] = _pairs(
            instance_type,
            field="instance_types",
            example="CPUxMEMORY_MB=TYPE, e.g. 2x4096=m5.large",
        )
    if image:
        settings["images"] = _pairs(image, field="images", example="NAME=AMI_ID")
    secret = _secret_access_key(access_key_id)
    view = providers.add_provider(context(), name, kind, settings, secret)
    if output is Format.json:
        emit_json(view)
    else:
        console.print(
            f"added provider [bold]{escape(view.name)}[/] ({view.kind}); "
            f"check it with `provisor providers check {escape(view.name)}`"
        )


@app.command("list")
def list_(output: OutputOption = Format.table, wide: WideOption = False) -> None:
    """List providers: local (built in) and the configured ones (fitted to the terminal;
    --wide: whole)."""
    from provisor.services import providers

    views = providers.list_providers(context())
    if output is Format.json:
        emit_json(views)
        return
    table(
        [
            Col("name"),
            Col("type"),
            Col("region", cut=True),
            Col("endpoint", cut=True),
            Col("credentials", cut=True),
            Col("added"),
            Col("by", cut=True),
        ],
        [
            (
                v.name,
                v.kind,
                v.settings.get("region"),
                v.settings.get("endpoint"),
                _credentials(v),
                _added(v, wide),
                v.created_by,
            )
            for v in views
        ],
        wide=wide,
    )
    console.print(f"{len(views)} provider(s)")


@app.command("show")
def show(name: str, output: OutputOption = Format.table) -> None:
    """Show one provider's settings (never its secret)."""
    from provisor.services import providers

    view = providers.get_provider(context(), name)
    if output is Format.json:
        emit_json(view)
    else:
        _show(view)


@app.command("check")
def check(name: str) -> None:
    """Reach the provider with its credentials; exit status 1 when that fails."""
    import asyncio

    from provisor.services import providers

    started = time.monotonic()
    try:
        description = asyncio.run(providers.check_provider(context(), settings(), name))
    except NotFound:
        raise
    except ProvisorError as exc:
        elapsed = time.monotonic() - started
        message = " ".join(str(exc).split())
        err_console.print(f"[red]error[/]: {escape(message)} ({elapsed:.1f} s)", highlight=False)
        raise typer.Exit(1) from None
    elapsed = time.monotonic() - started
    console.print(
        f"{escape(name)}: ok: {escape(description)} ({elapsed:.1f} s)",
        highlight=False,
        soft_wrap=True,  # one line, however long
    )


@app.command("remove")
def remove(name: str) -> None:
    """Forget a provider (refused while a deployment uses it)."""
    from provisor.services import providers

    providers.remove_provider(context(), name)
    console.print(f"removed provider [bold]{escape(name)}[/]")
