"""`provisor backup now|list|show|verify|restore|delete|schedule` and `backup stores`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from provisor.cli import confirm
from provisor.cli._context import context, settings
from provisor.cli.deployments import wait_timeout
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
from provisor.cli.providers import _secret_access_key
from provisor.core.errors import ProvisorError

if TYPE_CHECKING:
    from provisor.services.backups import BackupView

app = typer.Typer(
    help="Backups of deployments' machines: take, list, verify, restore, delete.",
    no_args_is_help=True,
)
stores_app = typer.Typer(
    help="Where backups go: local (built in, under the data directory) and S3 buckets.",
    no_args_is_help=True,
)
app.add_typer(stores_app, name="stores")

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]
EXIT_FAILED = 1


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def _rows(views: list[BackupView], *, wide: bool = False) -> None:
    """One line a backup; the deployment is in the machine's name (NAME-NODE-INDEX)."""
    table(
        [
            Col("id"),
            Col("deployment", wide=True),
            Col("machine", cut=True),
            Col("state"),
            Col("trigger"),
            Col("store", cut=True),
            Col("size"),
            Col("created"),
        ],
        [
            (
                v.id,
                v.deployment,
                v.machine,
                v.state,
                v.trigger,
                v.store,
                _size(v.size),
                full_time(v.created_at) if wide else short_time(v.created_at),
            )
            for v in views
        ],
        wide=wide,
    )


def _ensure_worker() -> None:
    from provisor.cli.deployments import _ensure_worker as ensure

    ensure()


def take(
    deployment: str,
    machines: list[str],
    store: str | None,
    *,
    run: str,
    wait: bool,
    timeout: float,
) -> list[BackupView]:
    """Start backups, then (with `wait`) wait for them; [] without waiting."""
    from provisor.services import backups, workers

    ids = backups.start_backups(
        context(), settings(), deployment, machines or None, store=store, trigger=run
    )
    _ensure_worker()
    if not wait:
        return []
    return backups.wait_backups(
        context(),
        ids,
        timeout=timeout,
        worker_gone=lambda: not workers.worker_running(settings()),
    )


@app.command("now")
def now(
    deployment: Annotated[str, typer.Argument(help="the deployment")],
    machines: Annotated[
        list[str] | None, typer.Argument(help="its machines (default: every one)")
    ] = None,
    store: Annotated[str | None, typer.Option(help="another store than the policy's")] = None,
    wait: Annotated[
        bool, typer.Option(help="wait for the backups to end (exit 1 if any failed)")
    ] = True,
    timeout: Annotated[str, typer.Option(help="how long to wait (30m, 2h)")] = "2h",
    output: OutputOption = Format.table,
) -> None:
    """Back up a deployment's machines now (each a durable workflow run by the worker)."""
    views = take(
        deployment, machines or [], store, run="now", wait=wait, timeout=wait_timeout(timeout)
    )
    if not wait:
        console.print(f"backups of [bold]{escape(deployment)}[/] started; `provisor backup list`")
        return
    if output is Format.json:
        emit_json(views)
    else:
        _rows(views)
        for view in views:
            if view.error:
                err_console.print(
                    f"[red]failed[/]: {escape(view.machine)}: {escape(view.error)}", highlight=False
                )
    if any(v.state != "good" for v in views):
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def list_(
    deployment: Annotated[str | None, typer.Argument(help="only this deployment's")] = None,
    machine: Annotated[str | None, typer.Option(help="only this machine's")] = None,
    output: OutputOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Backups, newest first (fitted to the terminal; --wide: every column, whole)."""
    from provisor.services import backups

    views = backups.list_backups(context(), deployment, machine)
    if output is Format.json:
        emit_json(views)
        return
    _rows(views, wide=wide)


@app.command("show")
def show(backup: str, output: OutputOption = Format.table) -> None:
    """One backup and its stored objects (size and SHA-256 of each)."""
    from provisor.services import backups

    view = backups.get_backup(context(), backup)
    if output is Format.json:
        emit_json(view)
        return
    fields(
        [
            ("id", view.id),
            ("deployment", view.deployment),
            ("machine", view.machine),
            ("state", view.state),
            ("trigger", view.trigger),
            ("store", view.store),
            ("size", _size(view.size)),
            ("created", view.created_at.isoformat(timespec="seconds")),
            (
                "verified",
                view.verified_at.isoformat(timespec="seconds") if view.verified_at else "-",
            ),
            *([("error", view.error)] if view.error else []),
        ]
    )
    table(
        ["object", "state", "size", "sha256"],
        [(o.name, o.state, _size(o.size), o.sha256) for o in view.objects],
    )


@app.command("verify")
def verify(
    deployment: Annotated[str | None, typer.Argument(help="only this deployment's")] = None,
    backup: Annotated[str | None, typer.Option(help="only this backup")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Read back and hash every stored copy; a copy not as recorded is marked bad (never
    used again) and reported. Exit status 1 when any is bad."""
    from provisor.services import backups

    results = backups.verify(context(), deployment=deployment, backup_id=backup)
    bad = [r for r in results if not r.ok]
    if output is Format.json:
        emit_json(results)
    else:
        for result in bad:
            console.print(
                f"[red]BAD[/] backup {result.backup} ({escape(result.machine)}) object "
                f"{escape(result.object)}: {escape(result.problem or '')}",
                highlight=False,
            )
        console.print(
            f"{len(results) - len(bad)} stored object(s) good, {len(bad)} bad", highlight=False
        )
    if bad:
        raise typer.Exit(EXIT_FAILED)


@app.command("restore")
def restore(
    deployment: str,
    machine: str,
    backup: Annotated[
        str | None, typer.Option(help="this backup (default: the newest good)")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="roll the machine itself back (local provider)")
    ] = False,
    yes: confirm.Yes = False,
    output: OutputOption = Format.table,
) -> None:
    """Restore a machine from a backup: a replacement machine with its identity (the old
    one retired), or with --in-place the same machine rolled back."""
    from provisor.services import backups

    how = "roll back" if in_place else "replace"
    if not confirm.go_ahead(how, "machines", [f"{deployment}/{machine}"], yes=yes, dry_run=False):
        raise confirm.declined(how)

    def said(line: str) -> None:
        err_console.print(line, highlight=False, markup=False)

    result = asyncio.run(
        backups.restore(
            context(),
            settings(),
            deployment,
            machine,
            backup_id=backup,
            in_place=in_place,
            say=said,
        )
    )
    if output is Format.json:
        emit_json(result)
        return
    console.print(
        f"restored [bold]{escape(machine)}[/] of {escape(deployment)} from backup "
        f"{result.backup} ({result.how}); machine {result.provider_id} at {result.address}",
        highlight=False,
    )


@app.command("delete")
def delete(
    backups_: Annotated[list[str], typer.Argument(metavar="BACKUP...")], yes: confirm.Yes = False
) -> None:
    """Delete backups: their stored objects, then their records."""
    from provisor.services import backups

    if not confirm.go_ahead("delete", "backups", backups_, yes=yes, dry_run=False):
        raise confirm.declined("delete")
    failed = 0
    for backup in backups_:
        try:
            view = asyncio.run(backups.delete(context(), backup))
            console.print(f"deleted backup {view.id} ({escape(view.machine)})", highlight=False)
        except ProvisorError as exc:
            if len(backups_) == 1:
                raise
            failed += 1
            err_console.print(f"[red]error[/]: {escape(backup)}: {escape(str(exc))}")
    if failed:
        raise typer.Exit(2)


@app.command("schedule")
def schedule(
    deployment: str,
    node: str,
    cron: Annotated[str, typer.Argument(help="cron (UTC), 'off', or 'blueprint'")],
) -> None:
    """Override a node's backup schedule for one deployment ('blueprint' undoes it)."""
    from provisor.services import backups

    now_in_force = backups.set_schedule(context(), deployment, node, cron)
    console.print(
        f"{escape(deployment)} {escape(node)}: backups {escape(now_in_force)}", highlight=False
    )


@stores_app.command("add")
def stores_add(
    name: str,
    kind: Annotated[str, typer.Option("--type", help="s3 or directory")] = "s3",
    bucket: Annotated[str | None, typer.Option(help="s3: the bucket (it must exist)")] = None,
    endpoint: Annotated[str | None, typer.Option(help="s3: the URL (none: AWS)")] = None,
    region: Annotated[str, typer.Option(help="s3: the region")] = "us-east-1",
    prefix: Annotated[str, typer.Option(help="s3: keys start with this")] = "",
    access_key_id: Annotated[
        str | None,
        typer.Option(help="s3: with PROVISOR_SECRET_ACCESS_KEY (never an argument)"),
    ] = None,
    path: Annotated[str | None, typer.Option(help="directory: an absolute path")] = None,
) -> None:
    """Configure a backup store."""
    from provisor.services import backup_stores

    settings_: dict[str, object]
    if kind == "s3":
        settings_ = {"bucket": bucket, "endpoint": endpoint, "region": region, "prefix": prefix}
        if access_key_id is not None:
            settings_["access_key_id"] = access_key_id
        secret = _secret_access_key(access_key_id)
    else:
        settings_ = {"path": path}
        secret = None
    view = backup_stores.add_store(context(), name, kind, settings_, secret)
    console.print(f"added backup store [bold]{escape(view.name)}[/] ({view.kind})")


@stores_app.command("list")
def stores_list(output: OutputOption = Format.table) -> None:
    """The stores: local (built in) and the configured ones."""
    from provisor.services import backup_stores

    views = backup_stores.list_stores(context())
    if output is Format.json:
        emit_json(views)
        return
    table(
        ["name", "type", "where", "credentials"],
        [
            (
                v.name,
                v.kind,
                v.settings.get("bucket") or v.settings.get("path") or "data directory",
                "secret sealed" if v.has_secret else "-",
            )
            for v in views
        ],
    )


@stores_app.command("check")
def stores_check(name: str) -> None:
    """Reach a store with its credentials."""
    from provisor.services import backup_stores

    console.print(asyncio.run(backup_stores.check_store(context(), name)), highlight=False)


@stores_app.command("remove")
def stores_remove(name: str) -> None:
    """Forget a store (refused while backups are kept there)."""
    from provisor.services import backup_stores

    backup_stores.remove_store(context(), name)
    console.print(f"removed backup store [bold]{escape(name)}[/]")
