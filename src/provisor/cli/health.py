"""`provisor health [DEPLOYMENT]`: machines' health, and a deployment's own settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisor.cli._context import context, settings
from provisor.cli.output import Format, console, emit_json, err_console, fields, table
from provisor.core.errors import InvalidInput

if TYPE_CHECKING:
    from provisor.services.health import DeploymentHealthView

SWITCHES = {"on": True, "off": False}


def _settings(pairs: list[str]) -> dict[str, Any]:
    """`--set interval=5s --set recovery=off` as settings (values checked by the service)."""
    from provisor.services.health import OVERRIDABLE

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise InvalidInput(f"--set {pair!r}: use KEY=VALUE, e.g. interval=10s", field="set")
        if key in ("checks", "recovery"):
            if value not in SWITCHES:
                raise InvalidInput(f"--set {key}={value!r}: use on or off", field="set")
            settings[key] = SWITCHES[value]
        elif key in ("failures", "successes"):
            if not value.isdigit() or len(value) > 6:
                raise InvalidInput(f"--set {key}={value!r}: a whole number", field="set")
            settings[key] = int(value)
        elif key in OVERRIDABLE:
            settings[key] = value[:40]
        else:
            known = ", ".join([*OVERRIDABLE, "checks", "recovery"])
            raise InvalidInput(f"--set {key!r}: not a setting (settings: {known})", field="set")
    return settings


def _since(view: Any) -> str:
    return f"{view:%Y-%m-%d %H:%M:%S}" if view is not None else "-"


def _show(view: DeploymentHealthView) -> None:
    title = f"{view.deployment} ({view.state})"
    if not view.checked:
        console.print(f"{title}: no node has checks", highlight=False)
        return
    table(
        ["machine", "node", "health", "since", "checked", "incident", "last checks"],
        [
            (
                m.name,
                m.node,
                m.state,
                _since(m.since),
                _since(m.checked_at),
                m.incident or "-",
                "; ".join(f"{p.probe}: {p.detail}" for p in m.last) or "-",
            )
            for m in view.machines
        ],
        title=title,
    )
    if view.overrides:
        fields([(f"override {node}", settings) for node, settings in view.overrides.items()])
    for down in view.infrastructure:
        console.print(
            f"[red]{down.key} down[/] since {_since(down.since)}: {down.detail} "
            "(machine checks that depend on it are paused)",
            highlight=False,
        )


def health(
    deployment: Annotated[str | None, typer.Argument(help="one deployment (default: all)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE: this deployment's own interval, timeout, failures, successes, "
            "checks=on|off or recovery=on|off (repeatable)",
        ),
    ] = None,
    node: Annotated[
        str, typer.Option(help="with --set: the node it applies to (default: every node)")
    ] = "*",
    reset: Annotated[bool, typer.Option(help="with --set: drop the node's earlier --set")] = False,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
) -> None:
    """Machines' health: state, since when, the last checks' results; with --set, change
    a deployment's checks from its blueprint's (docs/operations.md, "Health checks")."""
    from provisor.services import health as service

    if set_ or reset:
        if deployment is None:
            raise InvalidInput("--set needs a DEPLOYMENT", field="deployment")
        changes = _settings(set_ or [])
        views = [service.set_override(context(), deployment, node, changes, reset=reset)]
    elif deployment is not None:
        views = [service.deployment_health(context(), deployment)]
    else:
        views = service.all_health(context())
    if output is Format.json:
        emit_json(views[0] if deployment is not None else views)
        return
    if not views:
        console.print("no deployment has health checks")
    for view in views:
        _show(view)
    from provisor.services import workers

    if any(v.checked and v.state == "ready" for v in views) and not workers.worker_running(
        settings()
    ):
        err_console.print(
            "no worker is running: machines are not being checked (`provisor worker start`)",
            highlight=False,
        )
