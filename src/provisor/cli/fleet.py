"""`provisor run|copy|fetch|kill` and `provisor jobs`: the fleet engine from the shell."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from provisor.cli import confirm
from provisor.cli._context import Server, context, current_tenant
from provisor.cli.fleet_jobs import (
    job_spec,
    output_mode,
    run_through_server,
    seconds_option,
    size_option,
)
from provisor.cli.fleet_options import (
    AskPass,
    ConnectTimeout,
    Identity,
    MaxOutput,
    OutputMode,
    Parallel,
    StallTimeout,
    User,
)
from provisor.cli.fleet_output import Reporter
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    fields,
    full_time,
    read_input_file,
    short_time,
    table,
)
from provisor.core.errors import InvalidInput

# The jobs service (and with it asyncssh) and the HTTP client are imported by the
# commands that use them, so that `provisor hosts list` starts quickly.

jobs_app = typer.Typer(help="Past fleet jobs and their per-host results.", no_args_is_help=True)


def _uploaded(server: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A copy through a server sends each file's content first, and copies it by id: the
    server never reads a path of ours (nor of its own)."""
    from provisor.cli.remote import ServerClient, server_token
    from provisor.services import uploads

    api = ServerClient(server, server_token(server), current_tenant())
    ids = []
    for source in map(Path, spec["sources"]):
        if not source.is_file():
            raise InvalidInput(
                f"{source}: through a server, copy sends files (make an archive of a "
                "directory first)",
                field="paths",
            )
        if source.stat().st_size > uploads.MAX_UPLOAD:
            raise InvalidInput(
                f"{source}: through a server, a file is at most {uploads.MAX_UPLOAD:,} bytes",
                field="paths",
            )
        ids.append(api.upload(read_input_file(source, field="paths"), source.name))
    return {**spec, "sources": [], "uploads": ids}


def _run(
    spec: dict[str, Any],
    output: str | None,
    *,
    ask_pass: bool = False,
    out_dir: Path | None = None,
    err_dir: Path | None = None,
    server: str | None = None,
) -> None:
    output_mode(output, 0)  # a bad --output is refused before anything runs
    if server is not None:
        if ask_pass or out_dir or err_dir or spec["kind"] == "fetch":
            raise InvalidInput(
                "this command cannot run through a server (-A, -o and -e and fetch are local)",
                field="server",
            )
        if spec["kind"] == "copy":
            spec = _uploaded(server, spec)
        raise typer.Exit(run_through_server(spec, output, server, current_tenant()))
    from provisor.services import jobs
    from provisor.services.jobspec import parse_job_spec

    checked = parse_job_spec(spec)
    password = getpass.getpass("Password: ") if ask_pass else None
    reporters: list[Reporter] = []

    def on_start(host_count: int) -> None:
        reporters.append(Reporter(output_mode(output, host_count), host_count))

    job = asyncio.run(
        jobs.run_job(
            context(),
            checked,
            password=password,
            out_dir=out_dir,
            err_dir=err_dir,
            on_start=lambda job: on_start(job.host_count),
            on_result=lambda r: reporters[0].result(r),
        )
    )
    raise typer.Exit(reporters[0].finish(job.id))


def run(
    target: Annotated[str, typer.Argument(help="hosts: web[01-20], group:web, tag:env=prod, ...")],
    command: Annotated[list[str], typer.Argument(help="the command, after --")],
    parallel: Parallel = 64,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            "-t",
            help="how long the command may run per host before it is killed, e.g. 90, 30s, 15m, 2h",
            show_default="command_timeout setting, 1h",
        ),
    ] = None,
    connect_timeout: ConnectTimeout = 10.0,
    max_output: MaxOutput = None,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    sudo: Annotated[bool, typer.Option("--sudo", help="run the command through sudo")] = False,
    stdin: Annotated[
        Path | None, typer.Option("--stdin", help="file fed to the command's standard input")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--outdir", "-o", help="one stdout file per host here")
    ] = None,
    err_dir: Annotated[
        Path | None, typer.Option("--errdir", "-e", help="one stderr file per host here")
    ] = None,
    output: OutputMode = None,
    server: Server = None,
) -> None:
    """Run a command on every host of TARGET (pssh)."""
    data = read_input_file(stdin, field="stdin") if stdin is not None else None
    spec = job_spec(
        "run",
        target,
        parallel,
        connect_timeout,
        user,
        identity,
        command=" ".join(command),
        stdin=data,
        timeout=seconds_option(timeout, "timeout"),
        max_output=size_option(max_output, "max_output"),
        sudo=sudo,
    )
    _run(spec, output, ask_pass=ask_pass, out_dir=out_dir, err_dir=err_dir, server=server)


def copy(
    target: Annotated[str, typer.Argument(help="hosts to copy to")],
    paths: Annotated[list[Path], typer.Argument(help="SRC... DEST (DEST is on the hosts)")],
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    stall_timeout: StallTimeout = None,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    output: OutputMode = None,
    server: Server = None,
) -> None:
    """Copy local files and directories to every host, keeping modes (pscp)."""
    if len(paths) < 2:
        raise InvalidInput("give at least one source and a destination", field="paths")
    *sources, destination = paths
    for source in sources:
        if not source.exists():
            raise InvalidInput(f"no such local file or directory: {source}", field="paths")
    sent = [str(s.resolve()) for s in sources]
    spec = job_spec(
        "copy",
        target,
        parallel,
        connect_timeout,
        user,
        identity,
        sources=sent,
        destination=str(destination),
        stall_timeout=seconds_option(stall_timeout, "stall_timeout"),
    )
    _run(spec, output, ask_pass=ask_pass, server=server)


def fetch(
    target: Annotated[str, typer.Argument(help="hosts to fetch from")],
    remote: Annotated[str, typer.Argument(help="file or directory on the hosts")],
    local_dir: Annotated[Path, typer.Argument(help="local directory; a subdirectory per host")],
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    stall_timeout: StallTimeout = None,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    output: OutputMode = None,
) -> None:
    """Fetch a file or directory from every host into LOCAL_DIR/<host>/ (pslurp)."""
    spec = job_spec(
        "fetch",
        target,
        parallel,
        connect_timeout,
        user,
        identity,
        sources=[remote],
        destination=str(local_dir),
        stall_timeout=seconds_option(stall_timeout, "stall_timeout"),
    )
    _run(spec, output, ask_pass=ask_pass)


def kill(
    target: Annotated[str, typer.Argument(help="hosts to act on")],
    pattern: Annotated[str, typer.Argument(help="matched against full command lines (pkill -f)")],
    signal: Annotated[str, typer.Option("--signal", "-s", help="TERM, KILL, HUP, ...")] = "TERM",
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    max_output: MaxOutput = None,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    output: OutputMode = None,
    yes: confirm.Yes = False,
    dry_run: confirm.DryRun = False,
    server: Server = None,
) -> None:
    """Signal matching processes on every host and count them per host (pnuke).

    More than one host is asked about on a terminal; without one, pass --yes. Through a
    server, where the hosts are not known beforehand, it is always asked."""
    if not pattern:
        raise InvalidInput("the pattern must not be empty", field="pattern")
    what = f"kill processes matching {pattern!r} on"
    if server is not None:  # the server resolves the target: the hosts are not known here
        hosts, unknown = [f"every host of {target} on {server}"], True
    else:
        from provisor.services import targets

        hosts, unknown = [e.name for e in targets.resolve_target(context(), target)], False
    if not confirm.go_ahead(what, "hosts", hosts, yes=yes, dry_run=dry_run, ask_for_one=unknown):
        if dry_run:
            return
        raise confirm.declined("kill")
    spec = job_spec(
        "kill",
        target,
        parallel,
        connect_timeout,
        user,
        identity,
        pattern=pattern,
        signal=signal,
        max_output=size_option(max_output, "max_output"),
    )
    _run(spec, output, ask_pass=ask_pass, server=server)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
    wide: WideOption = False,
) -> None:
    """List recent jobs.

    The table fits the terminal (long targets and commands shortened); --wide adds
    the kind and who ran it, and shows everything."""
    from provisor.services import jobs

    found = jobs.list_jobs(context(), limit=limit)
    if output is Format.json:
        emit_json(found)
        return
    table(
        [
            Col("id"),
            Col("created"),
            Col("kind", wide=True),
            Col("by", wide=True),
            Col("state"),
            Col("hosts"),
            Col("summary", cut=True),
            Col("target", cut=True),
            Col("command", cut=True),
        ],
        [
            (
                j.id,
                full_time(j.created_at) if wide else short_time(j.created_at),
                j.kind,
                j.actor,
                j.state,
                j.host_count,
                j.summary,
                j.target,
                j.command,
            )
            for j in found
        ],
        wide=wide,
    )


def _state_text(job: Any) -> str:
    if job.state != "interrupted":
        return str(job.state)
    seen = job.heartbeat_at or job.created_at
    return (
        "interrupted: the process running it stopped (last sign of life "
        f"{seen:%Y-%m-%d %H:%M:%S} UTC); hosts without a result are unknown"
    )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="job id")],
    output: Annotated[Format, typer.Option("--output")] = Format.table,
) -> None:
    """Show a job and each host's result."""
    from provisor.services import jobs

    job = jobs.get_job(context(), job_id)
    if output is Format.json:
        emit_json(job)
        return
    fields(
        [
            ("job", job.id),
            ("kind", job.kind),
            ("target", job.target),
            ("command", job.command),
            ("by", job.actor),
            ("state", _state_text(job)),
            ("summary", job.summary),
            ("output files", job.output_dir),
        ]
    )
    table(
        ["host", "outcome", "exit", "seconds", "output / error"],
        [
            (
                r.host,
                r.outcome,
                r.exit_code,
                f"{(r.connect_seconds or 0) + (r.run_seconds or 0):.2f}",
                (r.error or r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.error)
                or "",
            )
            for r in job.results or []
        ],
    )
    console.print(f"{job.host_count} host(s)")
