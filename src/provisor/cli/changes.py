"""`provisor config plan|check|apply|rollback|history`: fleet configuration changes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisor.cli._context import context
from provisor.cli.fleet_jobs import identity_option, output_mode, seconds_option
from provisor.cli.fleet_options import ConnectTimeout, Identity, OutputMode, Parallel, User
from provisor.cli.fleet_output import Reporter
from provisor.cli.output import Format, emit_json, read_input_file, table
from provisor.core.errors import InvalidInput
from provisor.core.nodeset import fold, natural_key
from provisor.core.rollout import Amount, Rollout

if TYPE_CHECKING:
    from provisor.services.changes import ConfigOptions
    from provisor.services.jobs import JobView

app = typer.Typer(
    help="Fleet configuration changes as transactions: plan, apply in batches, check for "
    "drift, roll back exactly what an apply changed.",
    no_args_is_help=True,
)

ChangeSetFile = Annotated[Path, typer.Argument(help="the change set (YAML)", show_default=False)]
Target = Annotated[str, typer.Argument(help="hosts: web[01-20], group:web, tag:env=prod, ...")]
Timeout = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        "-t",
        help="how long each host's reading or writing may take, e.g. 90, 10m",
        show_default="10m",
    ),
]
EXIT_DRIFT = 1


def _options(
    parallel: int,
    connect_timeout: float,
    timeout: str | None,
    user: str | None,
    identity: Path | None,
) -> ConfigOptions:
    from provisor.services.changes import ConfigOptions
    from provisor.services.schemas import validate

    return validate(
        ConfigOptions,
        {
            "parallel": parallel,
            "connect_timeout": connect_timeout,
            "timeout": seconds_option(timeout, "timeout") or 600.0,
            "user": user,
            "identity": identity_option(identity),
        },
    )


def _read(path: Path) -> str:
    from provisor.services.changes import MAX_CHANGE_SET

    data = read_input_file(path, field="change_set", limit=MAX_CHANGE_SET)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason})", field="change_set") from None


class _Job:
    """Runs one configuration job with the fleet commands' reporter, and a line per kind of
    outcome: `tb[01-40]: 2 changes; tb41: up to date`."""

    def __init__(self, output: str | None) -> None:
        output_mode(output, 0)  # a bad --output is refused before anything runs
        self.output = output
        self.reporters: list[Reporter] = []

    def start(self, job: JobView) -> None:
        self.reporters.append(Reporter(output_mode(self.output, job.host_count), job.host_count))

    def finish(self, job: JobView, *, changes_line: bool) -> int:
        reporter = self.reporters[0]
        status = reporter.finish(job.id)
        if reporter.mode != "json":
            if changes_line:
                reporter.err.write(_changes_line(reporter) + "\n")
            stopped = job.parameters.get("stopped")
            if stopped:
                reporter.err.write(f"rollout stopped: {stopped}\n")
        return status


def _changes_line(reporter: Reporter) -> str:
    by_count: dict[int, list[str]] = defaultdict(list)
    for result in reporter.results:
        if result.ok:
            by_count[int(result.details.get("changes") or 0)].append(result.host)
    parts = []
    for count, hosts in sorted(by_count.items(), key=lambda i: natural_key(i[1][0])):
        what = "up to date" if not count else f"{count} change{'s' if count != 1 else ''}"
        parts.append(f"{fold(hosts)}: {what}")
    return "; ".join(parts) or "no host answered"


def _drifted(reporter: Reporter) -> bool:
    return any(r.details.get("changes") for r in reporter.results)


def _plan_or_check(
    mode: str,
    change_set: Path,
    target: str,
    parallel: int,
    connect_timeout: float,
    timeout: str | None,
    user: str | None,
    identity: Path | None,
    output: str | None,
) -> None:
    from provisor.services import changes

    options = _options(parallel, connect_timeout, timeout, user, identity)
    text = _read(change_set)
    job = _Job(output)
    view = asyncio.run(
        changes.run_config(
            context(),
            "check" if mode == "check" else "plan",
            text,
            str(change_set),
            target,
            options=options,
            on_start=job.start,
            on_result=lambda r: job.reporters[0].result(r),
        )
    )
    status = job.finish(view, changes_line=True)
    if status == 0 and mode == "check" and _drifted(job.reporters[0]):
        status = EXIT_DRIFT
    raise typer.Exit(status)


@app.command("plan")
def plan(
    change_set: ChangeSetFile,
    target: Target,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: Timeout = None,
    user: User = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Show, per host, what applying CHANGE_SET would change (a diff per file)."""
    _plan_or_check(
        "plan", change_set, target, parallel, connect_timeout, timeout, user, identity, output
    )


@app.command("check")
def check(
    change_set: ChangeSetFile,
    target: Target,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: Timeout = None,
    user: User = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Drift report: which hosts deviate from CHANGE_SET and how; changes nothing. Exit
    status 1 when a host deviates."""
    _plan_or_check(
        "check", change_set, target, parallel, connect_timeout, timeout, user, identity, output
    )


@app.command("apply")
def apply(
    change_set: ChangeSetFile,
    target: Target,
    batch: Annotated[
        str | None,
        typer.Option("--batch", help="hosts changed per stage: N or N% (default: all at once)"),
    ] = None,
    canary: Annotated[
        int,
        typer.Option("--canary", min=0, help="change N hosts first; any failure among them stops"),
    ] = 0,
    max_failures: Annotated[
        str | None,
        typer.Option(
            "--max-failures",
            help="stop the rollout once more than N (or N%) hosts failed; later stages are "
            "not touched",
        ),
    ] = None,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: Timeout = None,
    user: User = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Apply CHANGE_SET to TARGET: each object's state is kept before it changes, then
    written and read back. The job id is the apply's id for `config rollback`."""
    from provisor.services import changes

    rollout = Rollout(
        batch=Amount.parse(batch, "batch") if batch is not None else None,
        canary=canary,
        max_failures=Amount.parse(max_failures, "max_failures")
        if max_failures is not None
        else None,
    )
    options = _options(parallel, connect_timeout, timeout, user, identity)
    text = _read(change_set)
    job = _Job(output)
    view = asyncio.run(
        changes.run_config(
            context(),
            "apply",
            text,
            str(change_set),
            target,
            options=options,
            rollout=rollout,
            on_start=job.start,
            on_result=lambda r: job.reporters[0].result(r),
        )
    )
    status = job.finish(view, changes_line=False)
    if job.reporters[0].mode != "json":
        job.reporters[0].err.write(f"roll back with: provisor config rollback {view.id}\n")
    raise typer.Exit(status)


@app.command("rollback")
def rollback(
    apply_id: Annotated[int, typer.Argument(help="the apply's job id", show_default=False)],
    target: Annotated[
        str | None, typer.Argument(help="only these of the apply's hosts", show_default=False)
    ] = None,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: Timeout = None,
    user: User = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Write back, on each host apply APPLY_ID changed, every object's state from before
    it: file content, mode and owner byte for byte; users; packages where the package
    manager still offers the version; services; kernel parameters."""
    from provisor.services import changes

    options = _options(parallel, connect_timeout, timeout, user, identity)
    job = _Job(output)
    view = asyncio.run(
        changes.rollback_apply(
            context(),
            apply_id,
            target,
            options=options,
            on_start=job.start,
            on_result=lambda r: job.reporters[0].result(r),
        )
    )
    raise typer.Exit(job.finish(view, changes_line=False))


@app.command("history")
def history(
    host: Annotated[str, typer.Argument(help="an inventory host", show_default=False)],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    output: Annotated[Format, typer.Option("--output", help="table or json")] = Format.table,
) -> None:
    """The configuration jobs that worked on HOST, newest first."""
    from provisor.services import changes

    entries = changes.change_history(context(), host, limit=limit)
    if output is Format.json:
        emit_json(entries)
        return
    table(
        ["job", "kind", "change set", "outcome", "changes", "actor", "when"],
        [
            (
                e.job,
                e.kind.removeprefix("config-"),
                e.change_set or (f"rollback of {e.rolls_back}" if e.rolls_back else ""),
                e.outcome,
                "" if e.changes is None else e.changes,
                e.actor,
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for e in entries
        ],
    )


@app.command("set-password")
def set_password(
    target: Target,
    user: Annotated[str, typer.Option("--user", "-u", help="whose password (must exist)")],
    same: Annotated[
        bool,
        typer.Option(
            "--same/--random",
            help="--same: one password for every host, asked for twice (not echoed); "
            "--random: a new random one per host",
        ),
    ] = False,
    batch: Annotated[str | None, typer.Option("--batch", help="hosts per stage: N or N%")] = None,
    max_failures: Annotated[
        str | None, typer.Option("--max-failures", help="stop once more than N (N%) failed")
    ] = None,
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: Timeout = None,
    login_user: Annotated[
        str | None, typer.Option("--login", "-l", help="login user for hosts that name none")
    ] = None,
    identity: Identity = None,
    output: OutputMode = None,
) -> None:
    """Change USER's password on every host of TARGET. The new passwords are stored
    encrypted (`provisor config password HOST --user USER` shows one) and appear in no
    output, log, event or job; `config rollback` gives the old ones back."""
    import getpass

    from provisor.services import passwords

    given = None
    if same:
        given = getpass.getpass("New password: ")
        passwords.check_password(given)
        if getpass.getpass("Again: ") != given:
            raise InvalidInput("the two passwords differ", field="password")
    rollout = Rollout(
        batch=Amount.parse(batch, "batch") if batch is not None else None,
        max_failures=Amount.parse(max_failures, "max_failures")
        if max_failures is not None
        else None,
    )
    options = _options(parallel, connect_timeout, timeout, login_user, identity)
    job = _Job(output)
    view = asyncio.run(
        passwords.set_password(
            context(),
            user,
            target,
            same=given,
            options=options,
            rollout=rollout,
            on_start=job.start,
            on_result=lambda r: job.reporters[0].result(r),
        )
    )
    status = job.finish(view, changes_line=False)
    if job.reporters[0].mode != "json":
        job.reporters[0].err.write(
            f"passwords: provisor config password HOST --user {user}; "
            f"undo: provisor config rollback {view.id}\n"
        )
    raise typer.Exit(status)


@app.command("password")
def password(
    host: Annotated[str, typer.Argument(help="the host", show_default=False)],
    user: Annotated[str, typer.Option("--user", "-u", help="whose password")],
    output: Annotated[Format, typer.Option("--output", help="table or json")] = Format.table,
) -> None:
    """Show the password `config set-password` gave USER on HOST (an audited event)."""
    from provisor.services import passwords

    found = passwords.get_password(context(), host, user)
    if output is Format.json:
        emit_json(found)
        return
    for entry in found:
        note = (
            "" if entry.state == "current" else f"  ({entry.state}: job {entry.job} did not finish)"
        )
        typer.echo(f"{entry.password}{note}")
