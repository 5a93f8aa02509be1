"""`provisor notifiers ...` and `provisor alerts ...`: where alerts go, which events raise
one, the alerts themselves, and the dispatcher that delivers them.

A notifier's secret (an SMTP password, a webhook's HMAC key) is never a command-line
argument, where it would land in shell history and `ps`: it is read from
PROVISOR_NOTIFIER_SECRET or asked for without echo, and stored sealed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from provisor.cli._context import context, settings
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    compact,
    console,
    emit_json,
    err_console,
    full_time,
    short_time,
    table,
)
from provisor.core.errors import InvalidInput, ProvisorError
from provisor.core.timespec import parse_seconds

if TYPE_CHECKING:
    from provisor.services.alerts import AlertView, DispatchView

SECRET_ENV = "PROVISOR_NOTIFIER_SECRET"  # noqa: S105 - a variable name, not a secret

notifiers_app = typer.Typer(
    help="Where alerts go: log, email, webhook or a command.", no_args_is_help=True
)
alerts_app = typer.Typer(
    help="Alerts raised by rules over events: list, acknowledge, dispatch.", no_args_is_help=True
)
rules_app = typer.Typer(
    help="Which events raise an alert, and who hears of it.", no_args_is_help=True
)
alerts_app.add_typer(rules_app, name="rules")

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]


def _secret(kind: str, username: str | None) -> str | None:
    """The notifier's secret: from the environment, else asked for on a terminal."""
    from provisor.services.alerts import SECRETS

    required, what = SECRETS.get(kind, (False, ""))
    wanted = required or (kind == "email" and username is not None)
    from_env = os.environ.get(SECRET_ENV) or None
    if not wanted:
        if from_env is not None and not what:
            raise InvalidInput(f"{SECRET_ENV} is set but a {kind} notifier takes no secret")
        if from_env is not None:
            raise InvalidInput(f"{SECRET_ENV} is set: give --username with an SMTP password")
        return None
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        with contextlib.suppress(EOFError):
            return getpass.getpass(f"{what}: ") or None
    raise InvalidInput(
        f"a {kind} notifier needs its {what}: set {SECRET_ENV} or run in a terminal to be "
        "asked (it is never a command-line argument)",
        field="secret",
    )


@notifiers_app.command("add")
def add_notifier(
    name: Annotated[str, typer.Argument(help="notifier name, unique in the tenant")],
    kind: Annotated[str, typer.Option("--type", help="log, email, webhook or command")],
    url: Annotated[str | None, typer.Option(help="webhook: the http(s) URL to POST to")] = None,
    smtp_host: Annotated[str | None, typer.Option("--smtp-host", help="email: server")] = None,
    smtp_port: Annotated[
        int | None, typer.Option("--smtp-port", help="email: port (587, 465 or 25 by security)")
    ] = None,
    security: Annotated[
        str | None, typer.Option(help="email: starttls (default), tls or none")
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(help=f"email: SMTP user; the password comes from {SECRET_ENV} or a prompt"),
    ] = None,
    sender: Annotated[str | None, typer.Option("--from", help="email: sender address")] = None,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="email: a recipient, repeatable")
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="command: the program (absolute path; no shell)")
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="command: an argument, repeatable")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(help="seconds a send may take: 10, 30s, 1m")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Configure a notifier (its secret is stored sealed, never shown).

    The webhook's HMAC key, or the SMTP password, comes from PROVISOR_NOTIFIER_SECRET
    or a prompt without echo.
    """
    from provisor.services import alerts

    given: dict[str, Any] = {
        "url": url,
        "host": smtp_host,
        "port": smtp_port,
        "security": security,
        "username": username,
        "from": sender,
        "to": to or None,
        "argv": [command, *(arg or [])] if command else None,
        "timeout": _seconds(timeout, "timeout") if timeout else None,
    }
    if arg and not command:
        raise InvalidInput("--arg goes with --command", field="arg")
    settings = {key: value for key, value in given.items() if value is not None}
    secret = _secret(kind, username)
    view = alerts.add_notifier(context(), name, kind, settings, secret)
    if output is Format.json:
        emit_json(view)
    else:
        console.print(
            f"added notifier [bold]{escape(view.name)}[/] ({view.kind}); "
            f"try it with `provisor notifiers test {escape(view.name)}`"
        )


def _seconds(text: str, field: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None


@notifiers_app.command("list")
def list_notifiers(output: OutputOption = Format.table, wide: WideOption = False) -> None:
    """List the tenant's notifiers (never their secrets; --wide: every field whole)."""
    from provisor.services import alerts

    views = alerts.list_notifiers(context())
    if output is Format.json:
        emit_json(views)
        return
    table(
        [
            Col("name"),
            Col("type"),
            Col("settings", cut=True),
            Col("secret"),
            Col("added"),
            Col("by", cut=True),
        ],
        [
            (
                v.name,
                v.kind,
                compact(v.settings),
                "sealed" if v.has_secret else "-",
                full_time(v.created_at) if wide else short_time(v.created_at),
                v.created_by,
            )
            for v in views
        ],
        wide=wide,
    )
    console.print(f"{len(views)} notifier(s)")


@notifiers_app.command("test")
def test_notifier(name: str) -> None:
    """Send a test notification now; exit status 1 when it does not go out."""
    import asyncio

    from provisor.services import alerts

    try:
        seconds = asyncio.run(alerts.send_test(context(), name))
    except ProvisorError as exc:
        if exc.status != 502:
            raise
        err_console.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{escape(name)}: sent ({seconds:.1f} s)", highlight=False)


@notifiers_app.command("rm")
def remove_notifier(name: str) -> None:
    """Forget a notifier (refused while a rule sends to it)."""
    from provisor.services import alerts

    alerts.remove_notifier(context(), name)
    console.print(f"removed notifier [bold]{escape(name)}[/]")


notifiers_app.command("remove", hidden=True)(remove_notifier)


@rules_app.command("add")
def add_rule(
    name: Annotated[str, typer.Argument(help="rule name, unique in the tenant")],
    kind: Annotated[
        list[str],
        typer.Option("--kind", "-k", help="event kind: backup.failed, backup.* or *; repeatable"),
    ],
    notify: Annotated[list[str], typer.Option("--notify", help="a notifier's name; repeatable")],
    severity: Annotated[
        str, typer.Option(help="lowest severity that raises an alert: info, warning, critical")
    ] = "warning",
    deployment: Annotated[str | None, typer.Option(help="only this deployment's events")] = None,
    node: Annotated[str | None, typer.Option(help="only this node's (e.g. db) events")] = None,
    remind_after: Annotated[
        str | None,
        typer.Option("--remind-after", help="remind this often while open and unacked: 4h"),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Raise an alert for matching events and tell the notifiers."""
    from provisor.services import alerts

    remind = _seconds(remind_after, "remind_after") if remind_after else None
    view = alerts.add_rule(
        context(),
        name,
        kinds=kind,
        notifiers=notify,
        min_severity=severity,
        deployment=deployment,
        node=node,
        remind_seconds=remind,
    )
    if output is Format.json:
        emit_json(view)
    else:
        console.print(f"added rule [bold]{escape(view.name)}[/]")


def _every(seconds: int | None) -> str:
    """`4h`, `15m`, `90s`; `never` for none."""
    if not seconds:
        return "never"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"every {seconds // size}{unit}"
    return f"every {seconds}s"


@rules_app.command("list")
def list_rules(output: OutputOption = Format.table, wide: WideOption = False) -> None:
    """List the tenant's alert rules (fitted to the terminal; --wide: whole)."""
    from provisor.services import alerts

    views = alerts.list_rules(context())
    if output is Format.json:
        emit_json(views)
        return
    table(
        [
            Col("name"),
            Col("kinds", cut=True),
            Col("severity"),
            Col("deployment", cut=True),
            Col("node", cut=True),
            Col("notifiers", cut=True),
            Col("remind"),
        ],
        [
            (
                v.name,
                ",".join(v.kinds),
                f">= {v.min_severity}",
                v.deployment or "any",
                v.node or "any",
                ",".join(v.notifiers),
                _every(v.remind_seconds),
            )
            for v in views
        ],
        wide=wide,
    )
    console.print(f"{len(views)} rule(s)")


@rules_app.command("rm")
def remove_rule(name: str) -> None:
    """Forget a rule, with its alerts (the events stay)."""
    from provisor.services import alerts

    alerts.remove_rule(context(), name)
    console.print(f"removed rule [bold]{escape(name)}[/]")


rules_app.command("remove", hidden=True)(remove_rule)


ALERT_COLUMNS = [
    Col("id"),
    Col("state"),
    Col("severity"),
    Col("kind", cut=True),
    Col("subject", cut=True),
    Col("deployment", wide=True),
    Col("machine", wide=True),
    Col("events"),
    Col("opened"),
    Col("rule", wide=True),
    Col("deliveries", wide=True),
]


def _alert_rows(views: list[AlertView], *, wide: bool = False) -> list[tuple[Any, ...]]:
    return [
        (
            v.id,
            v.state + (" (acked)" if v.acked_at and v.state == "open" else ""),
            v.severity,
            v.kind,
            v.subject,
            v.deployment or "-",
            v.machine or v.node or "-",
            v.events,
            full_time(v.opened_at) if wide else short_time(v.opened_at),
            v.rule,
            compact(v.deliveries),
        )
        for v in views
    ]


@alerts_app.command("list")
def list_alerts(
    include_ended: Annotated[
        bool, typer.Option("--all", help="resolved and closed ones too")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    output: OutputOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Open alerts, newest first (fitted to the terminal; --wide adds the deployment,
    machine, rule and deliveries, and shows everything whole)."""
    from provisor.services import alerts

    views = alerts.list_alerts(context(), include_ended=include_ended, limit=limit)
    if output is Format.json:
        emit_json(views)
        return
    table(ALERT_COLUMNS, _alert_rows(views, wide=wide), wide=wide)
    console.print(f"{len(views)} alert(s)")


@alerts_app.command("show")
def show_alert(alert_id: Annotated[int, typer.Argument(help="the alert's id")]) -> None:
    """One alert, as JSON."""
    from provisor.services import alerts

    emit_json(alerts.get_alert(context(), alert_id))


@alerts_app.command("ack")
def ack_alert(alert_id: Annotated[int, typer.Argument(help="the alert's id")]) -> None:
    """Acknowledge an alert: no more reminders (its resolution is still sent)."""
    from provisor.services import alerts

    view = alerts.ack_alert(context(), alert_id)
    console.print(f"alert {view.id} acknowledged ({view.state})")


def _report(result: DispatchView) -> None:
    if result.busy:
        console.print(f"another dispatcher ({escape(result.busy)}) is delivering; nothing done")
        return
    console.print(
        f"{result.events} event(s) read, {result.opened} alert(s) opened, "
        f"{result.resolved} resolved, {result.reminded} reminder(s); "
        f"{result.sent} notification(s) sent, {result.failed} failed",
        highlight=False,
    )
    for error in result.errors:
        err_console.print(f"[yellow]not sent[/]: {escape(error)}", highlight=False)


@alerts_app.command("dispatch")
def dispatch(
    once: Annotated[
        bool, typer.Option("--once", help="one pass, then exit (for cron and tests)")
    ] = False,
    output: OutputOption = Format.table,
) -> None:
    """Deliver alerts: read new events, raise alerts, send notifications.

    `provisor server` and `provisor worker` do this in the background; run this from
    cron (with --once) where neither runs. Exit status 1 when a notification failed.
    """
    import asyncio

    from provisor.services import alerts

    if not once:
        ctx = context()
        stopping = asyncio.Event()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(alerts.run_dispatcher(settings(), ctx.store, stopping))
        return
    result = asyncio.run(alerts.dispatch_once(context(), settings()))
    if output is Format.json:
        emit_json(result)
    else:
        _report(result)
    if result.failed:
        raise typer.Exit(1)
