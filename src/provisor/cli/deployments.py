"""`provisor up|down|status|approve|reject|params|worker` and `provisor deployments`."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisor.cli._context import Server, context, settings
from provisor.cli._params import read_parameters
from provisor.cli.output import Format, console, emit_json, err_console, fields, table
from provisor.core.errors import InvalidInput

if TYPE_CHECKING:
    from provisor.services.deployments import DeploymentView

deployments_app = typer.Typer(help="Deployments of blueprints.", no_args_is_help=True)

FINAL = ("ready", "failed", "rejected", "terminated")


def _is_file(reference: str) -> bool:
    """Whether a blueprint reference names a file (else NAME[@VERSION] in a catalog)."""
    path = Path(reference)
    return path.suffix in (".yaml", ".yml") or path.exists()


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

    name, _, version = reference.partition("@")
    stored = blueprints.get_blueprint(context(), name, version or None)
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


def _progress(name: str, shown: dict[str, str]) -> DeploymentView:
    from provisor.services import deployments

    return progress(deployments.get_deployment(context(), name), shown)


def _follow(name: str, be_worker: bool) -> DeploymentView:
    """Print progress until the deployment ends; be its worker too when none runs."""
    shown: dict[str, str] = {}
    failure: list[BaseException] = []
    thread = None
    if be_worker:
        from provisor.services import workers

        def work() -> None:
            # Its own thread and loop: DBOS takes over the loop's default executor.
            try:
                asyncio.run(workers.serve(settings(), until_idle=True))
            except BaseException as exc:  # reported below, in the main thread
                failure.append(exc)

        thread = threading.Thread(target=work, name="provisor-worker", daemon=True)
        thread.start()
    while True:
        view = _progress(name, shown)
        if view.state in FINAL:
            break
        if thread is not None and not thread.is_alive():
            if failure:
                raise failure[0]
            break
        time.sleep(0.5)
    if thread is not None:
        thread.join()
        if failure:
            raise failure[0]
    return _progress(name, shown)


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
        ]
    )
    table(
        ["machine", "node", "index", "hostname", "address", "state"],
        [(m.name, m.node, m.index, m.hostname, m.address, m.state) for m in view.machines],
    )
    if view.outputs:
        fields([(key, value) for key, value in view.outputs.items()])


def up(
    blueprint: Annotated[str, typer.Argument(help="a blueprint file, or NAME[@VERSION] added")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
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
    wait: Annotated[bool, typer.Option("--wait", help="follow progress until it ends")] = False,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """Deploy a blueprint: validate, (approval), launch, configure, deliver."""
    from provisor.core.blueprint import load_blueprint
    from provisor.services import deployments

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
            wait=wait,
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
    )
    from provisor.services import workers

    be_worker = workers.ensure_worker(settings(), here=wait)
    if not wait:
        if output is Format.json:
            emit_json(view)
        else:
            console.print(
                f"deployment [bold]{view.name}[/] queued; "
                f"follow it with `provisor status {view.name} --wait`"
            )
        return
    final = _follow(view.name, be_worker)
    if output is Format.json:
        emit_json(final)
    else:
        show(final)
        if final.state == "ready":
            console.print(
                f"\n[bold green]ready[/]. Run commands on it: `provisor run deployment:{final.name}"
                f" -- uptime`; remove it: `provisor down {final.name}`"
            )
    raise typer.Exit(0 if final.state == "ready" else 1)


def down(name: str, server: Server = None) -> None:
    """Terminate every machine of a deployment and forget it."""
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.down(server, name)
        return
    from provisor.services import deployments

    view = asyncio.run(deployments.remove_deployment(context(), settings(), name))
    console.print(f"deployment [bold]{name}[/] removed ({len(view.machines)} machines terminated)")


def status(
    name: str,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="follow progress until it ends (this process works when no worker runs)"
        ),
    ] = False,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    server: Server = None,
) -> None:
    """A deployment's machines, current step and outputs."""
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.status(server, name, wait=wait, output=output)
        return
    from provisor.services import deployments

    view = deployments.get_deployment(context(), name)  # an unknown name fails here, at once
    if wait and view.state not in FINAL:
        from provisor.services import workers

        view = _follow(name, workers.ensure_worker(settings(), here=True))
    if output is Format.json:
        emit_json(view)
    else:
        show(view)
    if wait:
        raise typer.Exit(0 if view.state == "ready" else 1)


def approve(name: str, server: Server = None) -> None:
    """Let a deployment that waits for approval go ahead."""
    if server is not None:
        from provisor.cli import remote_deployments

        remote_deployments.decide(server, name, approved=True, reason=None)
        return
    from provisor.services import deployments

    deployments.decide(context(), settings(), name, approved=True)
    console.print(f"approved [bold]{name}[/]")


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


def worker_command(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="exit once no deployment is in progress")
    ] = False,
) -> None:
    """Run deployment workflows (resumes unfinished ones first)."""
    from provisor.services import workers

    asyncio.run(workers.serve(settings(), until_idle=until_idle))


@deployments_app.command("list")
def list_(
    output: Annotated[Format, typer.Option("--output")] = Format.table, server: Server = None
) -> None:
    """List deployments."""
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
        ["name", "blueprint", "state", "step", "machines", "owner", "created"],
        [
            (
                v.name,
                f"{v.blueprint} {v.blueprint_version}",
                v.state,
                v.step,
                len(v.machines),
                v.owner,
                v.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for v in views
        ],
    )
