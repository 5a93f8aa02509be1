"""`provisor groups ...`: static and smart groups of hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

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
    table,
)
from provisor.core.errors import InvalidInput

if TYPE_CHECKING:  # the services load with the command that uses them
    from provisor.services.schemas import GroupView

app = typer.Typer(help="Manage static and smart groups of hosts.", no_args_is_help=True)

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]


def _show(group: GroupView) -> None:
    fields(
        [
            ("name", group.name),
            ("kind", group.kind),
            ("rule", group.rule),
            ("parent", group.parent),
            ("subgroups", group.children),
            ("description", group.description),
            ("members", f"{len(group.members)}: {' '.join(group.members)}"),
        ]
    )


@app.command("add")
def add(
    name: str,
    rule: Annotated[
        str | None,
        typer.Option(
            help='makes a smart group, e.g. \'facts.os == "debian" and tags.env == "prod"\''
        ),
    ] = None,
    parent: Annotated[str | None, typer.Option(help="the group this one is inside")] = None,
    member: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="host name, repeatable")
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    proxy_jump: Annotated[
        str | None,
        typer.Option("--proxy-jump", "-J", help="bastion for members that have none"),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Add a static group (explicit members) or a smart group (--rule)."""
    from provisor.services import groups
    from provisor.services.schemas import GroupSpec, validate

    spec = validate(
        GroupSpec,
        {
            "name": name,
            "rule": rule,
            "parent": parent,
            "members": member or [],
            "description": description,
            "proxy_jump": proxy_jump,
        },
    )
    group = groups.add_group(context(), spec)
    if output is Format.json:
        emit_json(group)
    else:
        console.print(
            f"added {group.kind} group [bold]{group.name}[/] with {len(group.members)} member(s)"
        )


@app.command("list")
def list_(output: OutputOption = Format.table, wide: WideOption = False) -> None:
    """List groups with their resolved member counts (long rules shortened to fit the
    terminal; --wide: whole)."""
    from provisor.services import groups

    found = groups.list_groups(context())
    if output is Format.json:
        emit_json(found)
        return
    table(
        [Col("name"), Col("kind"), Col("parent", cut=True), Col("members"), Col("rule", cut=True)],
        [(g.name, g.kind, g.parent, len(g.members), g.rule) for g in found],
        wide=wide,
    )


@app.command("show")
def show(name: str, output: OutputOption = Format.table) -> None:
    """Show a group and its resolved members."""
    from provisor.services import groups

    group = groups.get_group(context(), name)
    if output is Format.json:
        emit_json(group)
    else:
        _show(group)


@app.command("members")
def members(
    name: str,
    add: Annotated[list[str] | None, typer.Option("--add", help="host to add, repeatable")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="host to remove, repeatable")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """List a group's hosts; with --add/--remove, change a static group's members."""
    from provisor.services import groups, hosts

    ctx = context()
    if add or remove:
        group = groups.change_members(ctx, name, add=add or [], remove=remove or [])
        names = group.members
    else:
        names = groups.group_members(ctx, name)
    if output is Format.json:
        emit_json(hosts.list_hosts(ctx, names=names))
        return
    for host in names:
        console.print(host, highlight=False)


@app.command("move")
def move(
    name: str,
    parent: Annotated[str | None, typer.Option("--parent", help="new parent group")] = None,
    top: Annotated[bool, typer.Option("--top", help="make it a top-level group")] = False,
) -> None:
    """Move a group under another group, or to the top level."""
    if (parent is None) == (not top):
        raise InvalidInput("give exactly one of --parent GROUP or --top", field="parent")
    from provisor.services import groups

    group = groups.set_parent(context(), name, parent)
    where = f"under {group.parent}" if group.parent else "to the top level"
    console.print(f"moved group [bold]{group.name}[/] {where}")


@app.command("rm")
def rm(
    names: Annotated[list[str], typer.Argument(help="one or more group names")],
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
) -> None:
    """Remove groups (their hosts stay in the inventory).

    More than one group is asked about on a terminal; without one, pass --yes."""
    from provisor.services import groups

    confirm.remove_each(
        "group", names, lambda name: groups.remove_group(context(), name), yes=yes, dry_run=dry_run
    )
