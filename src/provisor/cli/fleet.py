"""`provisor run|copy|fetch|kill` and `provisor jobs`: the fleet engine from the shell."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisor.cli._context import context, current_tenant
from provisor.cli.fleet_output import Reporter
from provisor.cli.output import Format, console, emit_json, fields, read_input_file, table
from provisor.core.errors import InvalidInput

if TYPE_CHECKING:
    from provisor.fleet.operations import Operation
    from provisor.fleet.options import FleetOptions

# The fleet engine (asyncssh) and the HTTP client are imported by the commands
# that use them, so that `provisor hosts list` starts quickly.

jobs_app = typer.Typer(help="Past fleet jobs and their per-host results.", no_args_is_help=True)

Parallel = Annotated[int, typer.Option("--parallel", "-p", help="hosts worked on at once")]
ConnectTimeout = Annotated[
    float, typer.Option("--connect-timeout", help="seconds to get an SSH session")
]
User = Annotated[
    str | None, typer.Option("--user", "-l", help="login user for hosts that name none")
]
Identity = Annotated[
    Path | None, typer.Option("--identity", "-i", help="private key file for hosts without one")
]
AskPass = Annotated[
    bool, typer.Option("--ask-pass", "-A", help="ask once for a password used on every host")
]
OutputMode = Annotated[
    str | None,
    typer.Option("--output", help="stream, fold or json (default: fold above 10 hosts)"),
]


def _options(
    parallel: int,
    connect_timeout: float,
    user: str | None,
    identity: Path | None,
    ask_pass: bool,
    out_dir: Path | None = None,
    err_dir: Path | None = None,
) -> FleetOptions:
    if identity is not None and not identity.is_file():
        raise InvalidInput(f"no private key file at {identity}", field="identity")
    from provisor.fleet.options import FleetOptions

    password = getpass.getpass("Password: ") if ask_pass else None
    options = FleetOptions(
        parallel=parallel,
        connect_timeout=connect_timeout,
        user=user,
        identity=str(identity) if identity else None,
        password=password,
        out_dir=out_dir,
        err_dir=err_dir,
    )
    options.check()
    return options


def _mode(requested: str | None, hosts: int) -> str:
    if requested is None:
        return "fold" if hosts > 10 else "stream"
    if requested not in ("stream", "fold", "json"):
        raise InvalidInput(
            f"unknown output {requested!r}: use stream, fold or json", field="output"
        )
    return requested


Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="PROVISOR_SERVER",
        help="run through this provisor server (its connections stay warm)",
    ),
]


def _run(
    target: str,
    operation: Callable[[], Operation],
    options: FleetOptions,
    output: str | None,
    *,
    server: str | None = None,
    request: dict[str, Any] | None = None,
) -> None:
    if server is not None:
        if request is None or options.password is not None or options.out_dir or options.err_dir:
            raise InvalidInput(
                "this command cannot run through a server (-A, -o and -e and fetch are local)",
                field="server",
            )
        _run_remote(server, target, request, options, output)
        return
    from provisor.services import fleet as fleet_service

    ctx = context()
    endpoints = fleet_service.resolve_target(ctx, target, options)
    reporter = Reporter(_mode(output, len(endpoints)), len(endpoints))
    job = asyncio.run(
        fleet_service.run_job(
            ctx, target, operation(), options, endpoints=endpoints, on_result=reporter.result
        )
    )
    raise typer.Exit(reporter.finish(job.id))


def _run_remote(
    server: str,
    target: str,
    request: dict[str, Any],
    options: FleetOptions,
    output: str | None,
) -> None:
    body = {
        **request,
        "target": target,
        "parallel": options.parallel,
        "connect_timeout": options.connect_timeout,
        "user": options.user,
        "identity": options.identity,
    }
    reporters: list[Reporter] = []

    def on_start(job: dict[str, object]) -> None:
        count = job.get("host_count")
        total = count if isinstance(count, int) else 0
        reporters.append(Reporter(_mode(output, total), total))

    from provisor.cli.remote import run_remote

    finished = run_remote(
        server,
        body,
        tenant=current_tenant(),
        on_start=on_start,
        on_result=lambda r: reporters[0].result(r),
    )
    raise typer.Exit(reporters[0].finish(int(str(finished["id"]))))


def run(
    target: Annotated[str, typer.Argument(help="hosts: web[01-20], group:web, tag:env=prod, ...")],
    command: Annotated[list[str], typer.Argument(help="the command, after --")],
    parallel: Parallel = 64,
    timeout: Annotated[
        float | None, typer.Option("--timeout", "-t", help="seconds per host for the command")
    ] = None,
    connect_timeout: ConnectTimeout = 10.0,
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
    if timeout is not None and timeout <= 0:
        raise InvalidInput("timeout must be positive", field="timeout")
    data = read_input_file(stdin, field="stdin") if stdin is not None else None
    options = _options(parallel, connect_timeout, user, identity, ask_pass, out_dir, err_dir)

    def operation() -> Operation:
        # asyncssh loads here, not when the job runs on a server
        from provisor.fleet.operations import Run

        return Run(
            " ".join(command),
            stdin=data,
            timeout=timeout,
            sudo=sudo,
            sudo_password=options.password if sudo else None,
        )

    request = {
        "kind": "run",
        "command": " ".join(command),
        "stdin": data.decode() if data else None,
        "timeout": timeout,
        "sudo": sudo,
    }
    _run(target, operation, options, output, server=server, request=request)


def copy(
    target: Annotated[str, typer.Argument(help="hosts to copy to")],
    paths: Annotated[list[Path], typer.Argument(help="SRC... DEST (DEST is on the hosts)")],
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
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
    options = _options(parallel, connect_timeout, user, identity, ask_pass)
    resolved = tuple(str(s.resolve()) for s in sources)

    def operation() -> Operation:
        from provisor.fleet.operations import Copy

        return Copy(resolved, str(destination))

    request = {"kind": "copy", "sources": list(resolved), "destination": str(destination)}
    _run(target, operation, options, output, server=server, request=request)


def fetch(
    target: Annotated[str, typer.Argument(help="hosts to fetch from")],
    remote: Annotated[str, typer.Argument(help="file or directory on the hosts")],
    local_dir: Annotated[Path, typer.Argument(help="local directory; a subdirectory per host")],
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    output: OutputMode = None,
) -> None:
    """Fetch a file or directory from every host into LOCAL_DIR/<host>/ (pslurp)."""
    options = _options(parallel, connect_timeout, user, identity, ask_pass)

    def operation() -> Operation:
        from provisor.fleet.operations import Fetch

        return Fetch(remote, str(local_dir))

    _run(target, operation, options, output)


def kill(
    target: Annotated[str, typer.Argument(help="hosts to act on")],
    pattern: Annotated[str, typer.Argument(help="matched against full command lines (pkill -f)")],
    signal: Annotated[str, typer.Option("--signal", "-s", help="TERM, KILL, HUP, ...")] = "TERM",
    parallel: Parallel = 64,
    connect_timeout: ConnectTimeout = 10.0,
    user: User = None,
    identity: Identity = None,
    ask_pass: AskPass = False,
    output: OutputMode = None,
    server: Server = None,
) -> None:
    """Signal matching processes on every host and count them per host (pnuke)."""
    name = signal.upper().removeprefix("SIG")
    if not (name.isalnum() and (name.isdigit() or name.isalpha())):
        raise InvalidInput(f"invalid signal {signal!r}", field="signal")
    if not pattern:
        raise InvalidInput("the pattern must not be empty", field="pattern")
    options = _options(parallel, connect_timeout, user, identity, ask_pass)

    def operation() -> Operation:
        from provisor.fleet.operations import Kill

        return Kill(pattern, name)

    request = {"kind": "kill", "pattern": pattern, "signal": name}
    _run(target, operation, options, output, server=server, request=request)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    output: Annotated[Format, typer.Option("--output")] = Format.table,
) -> None:
    """List recent jobs."""
    from provisor.services import fleet as fleet_service

    jobs = fleet_service.list_jobs(context(), limit=limit)
    if output is Format.json:
        emit_json(jobs)
        return
    table(
        ["id", "kind", "target", "command", "hosts", "summary", "created"],
        [
            (
                j.id,
                j.kind,
                j.target,
                j.command,
                j.host_count,
                j.summary,
                j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for j in jobs
        ],
    )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="job id")],
    output: Annotated[Format, typer.Option("--output")] = Format.table,
) -> None:
    """Show a job and each host's result."""
    from provisor.services import fleet as fleet_service

    job = fleet_service.get_job(context(), job_id)
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
            ("state", job.state),
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
