"""`provisor hosts ...`: the inventory of managed servers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from provisor.cli import confirm
from provisor.cli._context import context
from provisor.cli.fleet_jobs import identity_option, output_mode, seconds_option
from provisor.cli.fleet_options import ConnectTimeout, Identity, OutputMode, Parallel, User
from provisor.cli.fleet_output import Reporter, exit_status
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
from provisor.core.facts import typed_value
from provisor.core.names import check_name, parse_key_values
from provisor.core.nodeset import fold, natural_key

if TYPE_CHECKING:  # the services load with the command that uses them
    from provisor.services.context import Context
    from provisor.services.results import HostResult
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
    """`--fact cpus=8` stores the number 8; text that is not JSON stays text. A dotted
    name is a path: `--fact cpu.count=8` is `count` inside `cpu`."""
    return {key: typed_value(raw) for key, raw in parse_key_values(items, field="fact").items()}


def _flat(facts: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Facts as `name = value` lines, nested objects by dotted names (as they are set)."""
    lines = []
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            lines += _flat(value, name + ".")
        else:
            lines.append(f"{name} = {json.dumps(value, ensure_ascii=False)}")
    return lines


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
            ("facts", "\n".join(_flat(host.facts)) or "-"),
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
        str | None, typer.Option("--proxy-jump", "-J", help="\\[user@]host[:port] of a bastion")
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
def list_(
    target: Annotated[
        str | None,
        typer.Argument(help="only these hosts: web[01-20], group:web, tag:env=prod, ..."),
    ] = None,
    output: OutputOption = Format.table,
    wide: WideOption = False,
) -> None:
    """List hosts: all of them, or those a target expression selects (long groups and
    tags shortened to fit the terminal; --wide: whole)."""
    from provisor.services import hosts

    found = hosts.list_hosts(context(), target=target)
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
        str | None, typer.Option("--proxy-jump", "-J", help="\\[user@]host[:port] of a bastion")
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
    targets: Annotated[
        list[str],
        typer.Argument(help="hosts to remove: names or targets (web[01-20], group:old, ...)"),
    ],
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
) -> None:
    """Remove the hosts the targets select from the inventory (the servers themselves are
    not touched); a target that selects no host is an error and nothing is removed.

    The hosts are listed and asked about on a terminal, unless the targets are one host
    named plainly; without a terminal, pass --yes."""
    from provisor.services import hosts

    ctx = context()
    names: list[str] = []
    for target in targets:
        names += [n for n in _selected(ctx, target) if n not in names]
    names.sort(key=natural_key)
    plain = all(_plain_name(t) for t in targets)
    if not dry_run and (len(names) > 1 or not plain):
        console.print(f"{len(names)} host(s) to remove: {escape(fold(names))}", highlight=False)
    confirm.remove_each(
        "host",
        names,
        lambda name: hosts.remove_host(ctx, name),
        yes=yes,
        dry_run=dry_run,
        ask_for_one=not plain,
    )


def _selected(ctx: Context, target: str) -> list[str]:
    from provisor.services import targets

    return targets.inventory_names(ctx, target)


def _plain_name(target: str) -> bool:
    """A target that is one host's name (it cannot stand for more than that host)."""
    try:
        check_name(target)
    except InvalidInput:
        return False
    return True


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


@app.command("gather")
def gather(
    target: Annotated[str, typer.Argument(help="hosts: web[01-20], group:web, tag:env=prod, ...")],
    parallel: Parallel = 64,
    timeout: Annotated[
        str,
        typer.Option("--timeout", "-t", help="time the facts script may run per host, e.g. 30s"),
    ] = "60s",
    connect_timeout: ConnectTimeout = 10.0,
    user: User = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Read facts from every host over SSH (OS, kernel, architecture, CPUs, memory,
    disks, addresses, virtualization) and keep them in the inventory.

    Read-only on the hosts. A host that fails is reported and keeps its facts; the
    others' gathered facts are replaced (see docs/concepts.md, "Gathered facts")."""
    from provisor.services import gathering
    from provisor.services.schemas import validate

    mode = output_mode(output, 0)  # a bad --output is refused before anything runs
    request = validate(
        gathering.GatherRequest,
        {
            "target": target,
            "parallel": parallel,
            "timeout": seconds_option(timeout, "timeout"),
            "connect_timeout": connect_timeout,
            "user": user,
            "identity": identity_option(identity),
        },
    )
    reporters: list[Reporter] = []
    unconnected: list[str] = []  # --output json: hosts whose login timed out

    def started(job: Any) -> None:
        if mode != "json":
            reporters.append(Reporter(output_mode(output, job.host_count), job.host_count))

    def answered(result: HostResult) -> None:
        if reporters:
            reporters[0].result(result)
        elif result.details.get("limit") == "connect":
            unconnected.append(result.host)

    report = asyncio.run(gathering.gather(context(), request, on_start=started, on_result=answered))
    if mode == "json":
        emit_json(report)
        counts = Counter(report.job.summary)
        raise typer.Exit(exit_status(counts, unconnected=len(unconnected)))
    status = reporters[0].finish(report.job.id)
    for line in report.summary:
        console.print(escape(line), highlight=False)
    raise typer.Exit(status)
