"""`provisor hosts ...`: the inventory of managed servers."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisor.cli import confirm
from provisor.cli._context import context
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    fields,
    read_input_file,
    table,
)
from provisor.core.errors import InvalidInput
from provisor.core.names import parse_key_values

if TYPE_CHECKING:  # the services load with the command that uses them
    from provisor.services.schemas import HostView

app = typer.Typer(help="Manage the inventory of hosts.", no_args_is_help=True)


class ImportFormat(StrEnum):
    auto = "auto"
    pssh = "pssh"
    ansible = "ansible"


class OnExisting(StrEnum):
    error = "error"
    skip = "skip"
    update = "update"


OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]


def _facts(items: list[str]) -> dict[str, Any]:
    """`--fact cpus=8` stores the number 8; text that is not JSON stays text."""
    result: dict[str, Any] = {}
    for key, raw in parse_key_values(items, field="fact").items():
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def _show(host: HostView) -> None:
    fields(
        [
            ("name", host.name),
            ("address", f"{host.address}:{host.port}"),
            ("user", host.user),
            ("credentials", host.credentials),
            ("proxy jump", host.proxy_jump),
            ("state", host.state),
            ("groups", host.groups),
            ("tags", host.tags),
            ("facts", host.facts),
            ("tenant", host.tenant),
            ("created", host.created_at.isoformat(timespec="seconds")),
        ]
    )


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="host name, unique in the tenant")],
    address: Annotated[
        str | None, typer.Option(help="IP address or DNS name (default: NAME)")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="SSH port")] = 22,
    user: Annotated[str | None, typer.Option("--user", "-l", help="SSH login user")] = None,
    credentials: Annotated[
        str | None, typer.Option(help="key:/path/to/key, secret:NAME or agent")
    ] = None,
    proxy_jump: Annotated[
        str | None, typer.Option("--proxy-jump", "-J", help="[user@]host[:port] of a bastion")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable")] = None,
    fact: Annotated[list[str] | None, typer.Option("--fact", help="KEY=VALUE, repeatable")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Add a host to the inventory."""
    from provisor.services import hosts
    from provisor.services.schemas import HostSpec, validate

    spec = validate(
        HostSpec,
        {
            "name": name,
            "address": address,
            "port": port,
            "user": user,
            "credentials": credentials,
            "proxy_jump": proxy_jump,
            "tags": parse_key_values(tag or [], field="tag"),
            "facts": _facts(fact or []),
        },
    )
    host = hosts.add_host(context(), spec)
    if output is Format.json:
        emit_json(host)
    else:
        console.print(f"added host [bold]{host.name}[/] ({host.address}:{host.port})")


@app.command("list")
def list_(output: OutputOption = Format.table, wide: WideOption = False) -> None:
    """List hosts (long groups and tags shortened to fit the terminal; --wide: whole)."""
    from provisor.services import hosts

    found = hosts.list_hosts(context())
    if output is Format.json:
        emit_json(found)
        return
    table(
        [
            Col("name"),
            Col("address", cut=True),
            Col("port"),
            Col("user", cut=True),
            Col("state"),
            Col("groups", cut=True),
            Col("tags", cut=True),
        ],
        [(h.name, h.address, h.port, h.user, h.state, h.groups, h.tags) for h in found],
        wide=wide,
    )
    console.print(f"{len(found)} host(s)")


@app.command("show")
def show(name: str, output: OutputOption = Format.table) -> None:
    """Show one host with its facts, tags and groups."""
    from provisor.services import hosts

    host = hosts.get_host(context(), name)
    if output is Format.json:
        emit_json(host)
    else:
        _show(host)


@app.command("set")
def set_(
    name: str,
    address: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    user: Annotated[str | None, typer.Option("--user", "-l")] = None,
    credentials: Annotated[str | None, typer.Option()] = None,
    proxy_jump: Annotated[
        str | None, typer.Option("--proxy-jump", "-J", help="[user@]host[:port] of a bastion")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="new, active, unreachable, maintenance, retired")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE; KEY= removes")] = None,
    fact: Annotated[
        list[str] | None, typer.Option("--fact", help="KEY=VALUE; KEY= removes")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Change a host's address, login, state, tags or facts."""
    given: dict[str, Any] = {
        k: v
        for k, v in {
            "address": address,
            "port": port,
            "user": user,
            "credentials": credentials,
            "proxy_jump": proxy_jump,
            "state": state,
        }.items()
        if v is not None
    }
    if tag:
        given["tags"] = {k: (v or None) for k, v in parse_key_values(tag, field="tag").items()}
    if fact:
        given["facts"] = {k: (None if v == "" else v) for k, v in _facts(fact).items()}
    if not given:
        raise InvalidInput("nothing to change: give at least one option", field="options")
    from provisor.services import hosts
    from provisor.services.schemas import HostChanges, validate

    host = hosts.update_host(context(), name, validate(HostChanges, given))
    if output is Format.json:
        emit_json(host)
    else:
        _show(host)


@app.command("rm")
def rm(
    names: Annotated[list[str], typer.Argument(help="one or more host names")],
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
) -> None:
    """Remove hosts from the inventory (the servers themselves are not touched).

    More than one host is asked about on a terminal; without one, pass --yes."""
    from provisor.services import hosts

    confirm.remove_each(
        "host", names, lambda name: hosts.remove_host(context(), name), yes=yes, dry_run=dry_run
    )


@app.command("rekey")
def rekey(
    name: Annotated[
        str, typer.Argument(help="an inventory host, or ADDRESS[:PORT] of one outside it")
    ],
) -> None:
    """Forget a host's trusted SSH host key; the next connection trusts the new one."""
    from provisor.services import jobs

    had_key = jobs.rekey_host(context(), name)
    if had_key:
        console.print(f"forgot the host key of [bold]{name}[/]; the next connection trusts anew")
    else:
        console.print(f"no host key was recorded for [bold]{name}[/]")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a pssh hosts file or an Ansible INI inventory")],
    format: Annotated[ImportFormat, typer.Option("--format")] = ImportFormat.auto,
    on_existing: Annotated[
        OnExisting, typer.Option(help="when a host already exists")
    ] = OnExisting.error,
    output: OutputOption = Format.table,
) -> None:
    """Import hosts (and groups) from a file; all of it or nothing."""
    from provisor.services import importing

    try:
        text = read_input_file(file, field="file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file} is not UTF-8 text: {exc.reason}", field="file") from None
    report = importing.import_hosts(
        context(), text, source=str(file), format=format.value, on_existing=on_existing.value
    )
    if output is Format.json:
        emit_json(report)
        return
    console.print(
        f"imported {file} ({report.format}): {len(report.hosts_created)} host(s) created, "
        f"{len(report.hosts_updated)} updated, {len(report.hosts_skipped)} skipped, "
        f"{len(report.groups_created)} group(s) created"
    )
