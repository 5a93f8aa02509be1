"""`provisor patch analyze|list|apply`: what the fleet could upgrade, and upgrading it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from provisor.cli import confirm
from provisor.cli._context import context
from provisor.cli.fleet_jobs import identity_option, seconds_option
from provisor.cli.fleet_options import ConnectTimeout, Identity, Parallel, User
from provisor.cli.fleet_output import exit_status
from provisor.cli.output import Format, console, emit_json, table
from provisor.core.patches import RebootPolicy, split_packages

if TYPE_CHECKING:
    from provisor.services.patches import PatchReport
    from provisor.services.results import HostResult

app = typer.Typer(
    help="The fleet's patch catalog: analyze what hosts could upgrade, list it, apply it.",
    no_args_is_help=True,
)

Security = Annotated[bool, typer.Option("--security", help="security updates only")]
Output = Annotated[Format, typer.Option("--output", help="table or json")]
RefreshTimeout = Annotated[
    str,
    typer.Option("--refresh-timeout", help="time for apt-get update / dnf makecache per host"),
]


def _show_host(result: HostResult) -> None:
    """A host's answer as it comes: its outcome, then what it listed or did."""
    colour = "green" if result.ok else "red"
    line = f"[{colour}]{escape(result.host)}[/]: {result.outcome.value}"
    if result.error:
        line += f": {escape(result.error)}"
    console.print(line, highlight=False)
    for text in result.text("stdout").splitlines():
        if result.ok and text.strip():
            console.print(f"  {escape(text)}", highlight=False)


def _finish(report: PatchReport, output: Format) -> None:
    if output is Format.json:
        emit_json(report)
    else:
        console.print(f"job {report.job.id} ({report.job.kind}): {report.job.summary}")
        stopped = report.job.parameters.get("stopped")
        if stopped:
            console.print(f"[red]rollout stopped[/]: {escape(str(stopped))}", highlight=False)
        for line in report.summary:
            console.print(escape(line), highlight=False)
    raise typer.Exit(exit_status(Counter(report.job.summary)))


def _common(
    target: str,
    parallel: int,
    connect_timeout: float,
    user: str | None,
    identity: Path | None,
    security: bool,
    refresh_timeout: str,
) -> dict[str, Any]:
    return {
        "target": target,
        "parallel": parallel,
        "connect_timeout": connect_timeout,
        "user": user,
        "identity": identity_option(identity),
        "security": security,
        "refresh_timeout": seconds_option(refresh_timeout, "refresh_timeout"),
    }


@app.command("analyze")
def analyze(
    target: Annotated[str, typer.Argument(help="hosts: web[01-20], group:web, tag:env=prod, ...")],
    security: Security = False,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    refresh_timeout: RefreshTimeout = "5m",
    user: User = None,
    identity: Identity = None,
    output: Output = Format.table,
) -> None:
    """Refresh each host's package lists and record what it could upgrade (the catalog);
    print who misses what."""
    from provisor.services import patches
    from provisor.services.schemas import validate

    request = validate(
        patches.AnalyzeRequest,
        _common(target, parallel, connect_timeout, user, identity, security, refresh_timeout),
    )
    report = asyncio.run(
        patches.analyze(
            context(), request, on_result=_show_host if output is Format.table else None
        )
    )
    _finish(report, output)


@app.command("list")
def list_(
    target: Annotated[str | None, typer.Argument(help="only these hosts")] = None,
    security: Security = False,
    output: Output = Format.table,
) -> None:
    """The catalog as the last analyses left it: each host's upgradable packages."""
    from provisor.services import patches

    found = patches.list_patches(context(), target, security=security)
    if output is Format.json:
        emit_json(found)
        return
    table(
        ["host", "package", "installed", "candidate", "security", "analyzed"],
        [
            (
                p.host,
                p.package,
                p.installed,
                p.candidate,
                "yes" if p.security else "",
                p.analyzed_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for p in found
        ],
    )
    for missing in patches.catalog_summary(found):
        console.print(escape(missing.text), highlight=False)


@app.command("apply")
def apply(
    target: Annotated[str, typer.Argument(help="hosts to upgrade")],
    packages: Annotated[
        str | None,
        typer.Option("--packages", help="a,b,c: only these (default: every upgradable package)"),
    ] = None,
    security: Security = False,
    reboot: Annotated[
        RebootPolicy,
        typer.Option("--reboot", help="never, if-needed (the host says so) or always"),
    ] = RebootPolicy.never,
    batch: Annotated[
        str | None, typer.Option("--batch", help="N or N% hosts at a time (default: all)")
    ] = None,
    parallel: Parallel = 64,
    timeout: Annotated[
        str, typer.Option("--timeout", "-t", help="time the upgrade may take per host")
    ] = "1h",
    reboot_timeout: Annotated[
        str, typer.Option("--reboot-timeout", help="time a rebooted host has to come back")
    ] = "10m",
    connect_timeout: ConnectTimeout = 10.0,
    refresh_timeout: RefreshTimeout = "5m",
    user: User = None,
    identity: Identity = None,
    output: Output = Format.table,
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
) -> None:
    """Upgrade packages on every host of TARGET, report each from -> to, reboot as asked.

    More than one host is asked about on a terminal; without one, pass --yes."""
    from provisor.services import patches
    from provisor.services.schemas import validate
    from provisor.services.targets import resolve_target

    request = validate(
        patches.ApplyRequest,
        {
            **_common(target, parallel, connect_timeout, user, identity, security, refresh_timeout),
            "packages": list(split_packages(packages)),
            "reboot": reboot,
            "batch": batch,
            "timeout": seconds_option(timeout, "timeout"),
            "reboot_timeout": seconds_option(reboot_timeout, "reboot_timeout"),
        },
    )
    hosts = [e.name for e in resolve_target(context(), target)]
    what = "upgrade " + (", ".join(request.packages) or "every upgradable package") + " on"
    if not confirm.go_ahead(what, "hosts", hosts, yes=yes, dry_run=dry_run):
        if dry_run:
            return
        raise confirm.declined("upgrade")
    report = asyncio.run(
        patches.apply(context(), request, on_result=_show_host if output is Format.table else None)
    )
    _finish(report, output)
