"""`provisor up|down|status|approve|reject|params` and `provisor deployments`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from provisor.cli import confirm
from provisor.cli._context import Server, context, settings
from provisor.cli._params import read_parameters
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    err_console,
    fields,
    full_time,
    table,
)
from provisor.core.errors import InvalidInput, ProvisorError
from provisor.core.lease import describe_left
from provisor.core.timespec import parse_duration

if TYPE_CHECKING:
    from provisor.services.deployments import DeploymentView

deployments_app = typer.Typer(help="Deployments of blueprints.", no_args_is_help=True)

ACTIVE_STATES = ("requested", "deploying", "stopping", "starting")  # moving only with a worker


def _is_file(reference: str) -> bool:
    """Whether a blueprint reference names a file (else NAME[@VERSION] in a catalog)."""
    path = Path(reference)
    return path.suffix in (".yaml", ".yml") or path.exists()


def catalog_reference(reference: str) -> tuple[str, str | None]:
    """(name, version or None for the newest) of `NAME[@VERSION]`."""
    name, at, version = reference.partition("@")
    if at and not version:
        raise InvalidInput(
            f"{reference!r} names no version after @: give {name}@VERSION, or {name} alone "
            "for the newest stored version",
            field="blueprint",
        )
    return name, version or None


def _blueprint_text(reference: str) -> tuple[str, str]:
    """A blueprint file, or NAME[@VERSION] of one added with `provisor blueprints add`."""
    path = Path(reference)
    if _is_file(reference):
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise InvalidInput(
                f"cannot read {path}: {exc.strerror or exc}", field="blueprint"
            ) from None
    from provisor.services import blueprints

    name, version = catalog_reference(reference)
    stored = blueprints.get_blueprint(context(), name, version)
    return stored.text, f"{stored.name}@{stored.version}"


def progress(view: DeploymentView, shown: dict[str, str]) -> DeploymentView:
    """Print a line when the deployment's state or step changed since the last one."""
    line = f"{view.state}: {view.step}"
    if shown.get("line") != line:
        shown["line"] = line
        ready = sum(1 for m in view.machines if m.state == "ready")
        err_console.print(
            f"[{time.strftime('%H:%M:%S')}] {view.name} {line} "
            f"({ready}/{len(view.machines)} machines ready)",
            highlight=False,
        )
    return view


# `--wait`'s exit status; docs/deployments.md says the same.
WAIT_EXIT = {"ready": 0, "failed": 1, "rejected": 3, "terminating": 4, "terminated": 4}
EXIT_REMOVED = 4
EXIT_NO_WORKER = 5
EXIT_TIMEOUT = 6
EXIT_INTERRUPTED = 130
WAIT_HELP = (
    "follow progress until it ends; exit status 0 ready, 1 failed, 2 refused, 3 rejected, "
    "4 removed, 5 no worker running, 6 --timeout reached, 130 interrupted (the "
    "deployment goes on)"
)
TIMEOUT_HELP = "with --wait: stop waiting after this long (30s, 15m, 2h); the deployment goes on"
_POLL = 0.5  # seconds between looks at a deployment on its way
_ABSENT = 3  # looks without a worker before `--wait` says so


@dataclass
class WaitEnd:
    """How a `--wait` ended: the deployment as last seen, the exit status, and why it
    stopped without `ready` (None when ready)."""

    view: DeploymentView | None
    code: int
    reason: str | None


def _state_line(view: DeploymentView) -> str:
    error = f": {view.error}" if view.error else ""
    return f"deployment {view.name} is {view.state} (step: {view.step}){error}"


def wait_end_of(view: DeploymentView) -> WaitEnd:
    code = WAIT_EXIT[view.state]
    return WaitEnd(view, code, None if code == 0 else _state_line(view))


def wait_timeout(text: str, *, field: str = "timeout") -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None


def follow(
    name: str,
    fetch: Callable[[], DeploymentView],
    *,
    timeout: float,
    worker_gone: Callable[[], bool] | None = None,
    again: str,
) -> WaitEnd:
    """Print progress until the deployment ends, is removed, has no worker to move it
    (`worker_gone`, none asked while it waits for approval), the timeout passes or the
    user presses Ctrl-C. `again` is the command that follows it once more."""
    shown: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    absent = 0
    view: DeploymentView | None = None
    try:
        while True:
            try:
                view = fetch()  # kept before it is printed: Ctrl-C may come meanwhile
                progress(view, shown)
            except ProvisorError as exc:
                if exc.status != 404:
                    raise
                return WaitEnd(view, EXIT_REMOVED, f"deployment {name} was removed: {exc.message}")
            if view.state in WAIT_EXIT:
                return wait_end_of(view)
            waits_for_worker = worker_gone is not None and view.state != "awaiting_approval"
            absent = absent + 1 if waits_for_worker and worker_gone() else 0  # type: ignore[misc]
            if absent >= _ABSENT:
                view = fetch()  # a last look: it may have ended just before its worker
                if view.state in WAIT_EXIT:
                    return wait_end_of(view)
                return WaitEnd(
                    view,
                    EXIT_NO_WORKER,
                    f"{_state_line(view)}, and no worker is running to move it (it was "
                    "stopped, or gave up: see `provisor worker status` and its log); "
                    f"`provisor worker start` resumes it",
                )
            if time.monotonic() >= deadline:
                return WaitEnd(
                    view,
                    EXIT_TIMEOUT,
                    f"stopped waiting after {timeout:g}s: {_state_line(view)}; it goes on: "
                    f"`{again}`",
                )
            time.sleep(_POLL)
    except KeyboardInterrupt:
        where = f" ({view.state}: {view.step})" if view else ""
        return WaitEnd(
            view,
            EXIT_INTERRUPTED,
            f"stopped following {name}{where}; it goes on in the background: `{again}`",
        )


def finish(end: WaitEnd, output: Format) -> None:
    """Show the deployment, say why the wait ended without `ready`, exit with its code."""
    if end.view is not None:
        if output is Format.json:
            emit_json(end.view)
        else:
            show(end.view)
            if end.code == 0:
                console.print(
                    f"\n[bold green]ready[/]. Run commands on it: `provisor run "
                    f"deployment:{end.view.name} -- uptime`; remove it: "
                    f"`provisor down {end.view.name}`"
                )
    if end.reason:
        err_console.print(f"[red]{escape(end.reason)}[/]", highlight=False)
    raise typer.Exit(end.code)


def _follow_here(name: str, timeout: float) -> WaitEnd:
    """`follow` a deployment of this data directory; its worker runs in the background."""
    from provisor.services import deployments, workers

    return follow(
        name,
        lambda: deployments.get_deployment(context(), name),
        timeout=timeout,
        worker_gone=lambda: not workers.worker_running(settings()),
        again=f"provisor status {name} --wait",
    )


def _ensure_worker() -> None:
    """A deployment was given work: make sure a worker will do it."""
    from provisor.services import workers

    if workers.ensure_worker(settings()):
        err_console.print(
            f"started the background worker (log: {workers.log_path(settings())})",
            highlight=False,
        )


def queued_line(view: DeploymentView) -> str:
    """`queued`, or when it starts; with its lease's end."""
    when = f"scheduled for {view.starts_at:%Y-%m-%d %H:%M:%S} UTC" if view.starts_at else "queued"
    if view.lease_expires_at:
        when += f" (lease ends {view.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC: {view.lease_end})"
    return when


def lease_line(view: DeploymentView) -> str | None:
    """`ends 2026-12-31 08:00:00 UTC (3d 4h left), then stop`; None without a lease."""
    if view.lease_expires_at is None:
        return None
    left = describe_left(view.lease_seconds_left)
    shown = "ended" if left == "ended" else f"{left} left"
    return f"ends {view.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC ({shown}), then {view.lease_end}"


def show(view: DeploymentView) -> None:
    fields(
        [
            ("deployment", view.name),
            ("blueprint", f"{view.blueprint} {view.blueprint_version}"),
            ("state", view.state),
            ("step", view.step),
            ("error", view.error),
            ("owner", view.owner),
            ("provider", view.provider),
            ("inputs", view.inputs),
            ("starts", f"{view.starts_at:%Y-%m-%d %H:%M:%S} UTC" if view.starts_at else None),
            ("lease", lease_line(view)),
        ]
    )
    checked = any(m.health for m in view.machines)
    table(
        ["machine", "node", "index", "hostname", "address", "state"]
        + (["health"] if checked else []),
        [
            (m.name, m.node, m.index, m.hostname, m.address, m.state)
            + ((m.health or "-",) if checked else ())
            for m in view.machines
        ],
    )
    if view.outputs:
        fields([(key, value) for key, value in view.outputs.items()])


def up(
    blueprint: Annotated[str, typer.Argument(help="a blueprint file, or NAME\\[@VERSION] added")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="NAME=VALUE input, repeatable; NAME=@FILE reads a file, NAME=- standard "
            "input (for secrets: kept out of `ps`); one left out is read from "
            "$PROVISOR_INPUT_NAME, and a secret still missing is asked for on a terminal",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="deployment name (default: blueprint's)")] = None,
    hostname_completion: Annotated[
        str | None, typer.Option("--hostname-completion", help="replaces # in hostname patterns")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="provider to deploy on (default: the blueprint's, else local)"),
    ] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            help="how long it lives from its start: 30d, 12h, 90s, or none (default: the "
            "blueprint's lease)"
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="start it later: an ISO time (UTC unless it names a zone) or a duration "
            "from now (2h); it waits, scheduled, until then"
        ),
    ] = None,
    lease_end: Annotated[
        str | None,
        typer.Option(
            "--lease-end",
            help="at the end of the lease: stop (disks kept) or terminate (default: the "
            "blueprint's, else stop)",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
    timeout: Annotated[str, typer.Option(help=TIMEOUT_HELP)] = "2h",
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Deploy a blueprint: validate, (approval), launch, configure, deliver.

    The work is done by the background worker (started if none runs), so the
    deployment goes on when this command ends or is interrupted."""
    from provisor.core.blueprint import load_blueprint
    from provisor.services import deployments

    limit = wait_timeout(timeout)
    # A file is read here (its secret parameters may be asked for); a blueprint in the
    # server's catalog is the server's to check.
    on_server = server is not None and not _is_file(blueprint)
    text, source = ("", "") if on_server else _blueprint_text(blueprint)
    parameters = {} if on_server else load_blueprint(text, source=source).parameters
    inputs = read_parameters(
        param or [],
        [key for key, p in parameters.items() if p.type == "secret"],
        declared=None if on_server else parameters.keys(),
        warn=lambda line: err_console.print(line, markup=False, highlight=False),
    )
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.up(
            server,
            blueprint,
            inputs,
            name=name,
            completion=hostname_completion,
            provider=provider,
            lease=(lease, at, lease_end),
            wait=wait,
            timeout=limit,
            output=output,
        )
        return
    view = deployments.request_deployment(
        context(),
        settings(),
        text,
        source=source,
        parameters=inputs,
        name=name,
        completion=hostname_completion,
        provider=provider,
        lease=lease,
        at=at,
        lease_end=lease_end,
    )
    _ensure_worker()
    if not wait:
        if output is Format.json:
            emit_json(view)
        else:
            console.print(
                f"deployment [bold]{view.name}[/] {queued_line(view)}; "
                f"follow it with `provisor status {view.name} --wait`"
            )
        return
    finish(_follow_here(view.name, limit), output)


def down(
    names: Annotated[list[str], typer.Argument(help="one or more deployments")],
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
    final_backup: Annotated[
        bool,
        typer.Option(
            "--final-backup",
            help="first take and verify a backup of every machine; if any fails, remove nothing",
        ),
    ] = False,
    server: Server = None,
) -> None:
    """Terminate every machine of a deployment and forget it.

    A deployment still on its way is stopped first (a launch in progress is waited
    for, then removed too); an interrupted `down` is finished by running it again.
    More than one deployment is asked about on a terminal; without one, pass --yes."""
    if dry_run:
        for name in names:
            view = _current(name, server)
            machines = ", ".join(m.name for m in view.machines) or "none"
            console.print(
                f"would remove deployment {escape(name)} ({view.state}; machines: {machines})",
                highlight=False,
            )
        return
    if not confirm.go_ahead("remove", "deployments", names, yes=yes, dry_run=False):
        raise confirm.declined("remove")
    failed = 0
    for name in names:
        try:
            if final_backup:
                _final_backup(name, server)
            _down(name, server)
        except ProvisorError as exc:
            if len(names) == 1:
                raise
            failed += 1
            err_console.print(f"[red]error[/]: {escape(name)}: {escape(str(exc))}")
    if failed:
        raise typer.Exit(2)


def _final_backup(name: str, server: str | None) -> None:
    if server is not None:
        raise InvalidInput(
            "--final-backup runs on this computer's data directory only", field="server"
        )
    from provisor.services import backups

    views = backups.final_backup(context(), settings(), name, timeout=wait_timeout("6h"))
    for view in views:
        console.print(
            f"final backup {view.id} of {escape(view.machine)}: {view.state}", highlight=False
        )


def _current(name: str, server: str | None) -> DeploymentView:
    if server is not None:
        from provisor.cli import remote_deployments

        return remote_deployments.get(server, name)
    from provisor.services import deployments

    return deployments.get_deployment(context(), name)


def _down(name: str, server: str | None) -> None:
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.down(server, name)
        return
    from provisor.services import deployments

    def waiting(step: str) -> None:
        err_console.print(
            f"waiting for {name}'s worker to end its step ({step}) before removing it",
            highlight=False,
        )

    view = asyncio.run(deployments.remove_deployment(context(), settings(), name, waiting=waiting))
    console.print(removed_line(view))


def removed_line(view: DeploymentView) -> str:
    ended = sum(1 for m in view.machines if m.state == "terminated")
    return f"deployment [bold]{view.name}[/] removed ({ended} machines terminated)"


def status(
    name: str,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
    timeout: Annotated[str, typer.Option(help=TIMEOUT_HELP)] = "2h",
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """A deployment's machines, current step and outputs.

    With --wait, a deployment in progress with no worker gets one."""
    limit = wait_timeout(timeout)
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.status(server, name, wait=wait, timeout=limit, output=output)
        return
    from provisor.services import deployments, workers

    view = deployments.get_deployment(context(), name)  # an unknown name fails here, at once
    if wait and view.state not in WAIT_EXIT:
        if view.state != "awaiting_approval":
            _ensure_worker()
        finish(_follow_here(name, limit), output)
    if wait:
        finish(wait_end_of(view), output)
    if output is Format.json:
        emit_json(view)
        return
    show(view)
    if view.state in ACTIVE_STATES and not workers.worker_running(settings()):
        err_console.print(
            f"no worker is running to move {name}: `provisor worker start` (or "
            f"`provisor status {name} --wait`) starts one",
            highlight=False,
        )


def approve(name: str, server: Server = None) -> None:
    """Let a deployment that waits for approval go ahead (the background worker, started
    if none runs, deploys it)."""
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.decide(server, name, approved=True, reason=None)
        return
    from provisor.services import deployments

    deployments.decide(context(), settings(), name, approved=True)
    console.print(f"approved [bold]{name}[/]")
    _ensure_worker()


def reject(
    name: str,
    reason: Annotated[str, typer.Option(help="why; the requester is told")] = "",
    server: Server = None,
) -> None:
    """Refuse a deployment that waits for approval."""
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.decide(server, name, approved=False, reason=reason or None)
        return
    from provisor.services import deployments

    deployments.decide(context(), settings(), name, approved=False, reason=reason or None)
    console.print(f"rejected [bold]{name}[/]")
    _ensure_worker()  # the workflow ends, recording the rejection


def params(
    name: str,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Runtime parameters of a deployment, and who is waiting on what."""
    if server is not None:
        from provisor.cli import remote_deployments

        view = remote_deployments.parameters(server, name)
    else:
        from provisor.services import deployments

        view = deployments.parameters(context(), name)
    if output is Format.json:
        emit_json(view)
        return
    table(["parameter", "value", "set by"], [(v.key, v.value, v.set_by) for v in view.values])
    if view.waiting:
        table(
            ["waiting machine", "for", "since"],
            [(w.waiter, w.key, w.since.strftime("%H:%M:%S")) for w in view.waiting],
        )


@deployments_app.command("show")
def show_deployment(
    name: Annotated[str, typer.Argument(help="the deployment")],
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """One deployment's whole picture: blueprint, state, owner and tenant, parameters
    (secrets masked), machines, outputs, latest events and jobs, backups and health."""
    if server is not None:
        from provisor.cli import remote_deployments

        view = remote_deployments.detail(server, name)
    else:
        from provisor.services import deployments

        view = deployments.describe_deployment(context(), name)
    if output is Format.json:
        emit_json(view)
        return
    from provisor.cli.deployment_detail import show_detail

    show_detail(view)


@deployments_app.command("list")
def list_(
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    wide: WideOption = False,
    server: Server = None,
) -> None:
    """List deployments (fitted to the terminal; --wide adds the owner and when it was
    created, and shows everything whole)."""
    if server is not None:
        from provisor.cli import remote_deployments

        views = remote_deployments.listing(server)
    else:
        from provisor.services import deployments

        views = deployments.list_deployments(context())
    if output is Format.json:
        emit_json(views)
        return
    table(
        [
            Col("name"),
            Col("blueprint", cut=True),
            Col("state"),
            Col("step", cut=True),
            Col("machines"),
            Col("owner", wide=True),
            Col("created", wide=True),
            Col("lease left"),
        ],
        [
            (
                v.name,
                f"{v.blueprint} {v.blueprint_version}",
                v.state,
                v.step,
                len(v.machines),
                v.owner,
                full_time(v.created_at),
                describe_left(v.lease_seconds_left),
            )
            for v in views
        ],
        wide=wide,
    )
