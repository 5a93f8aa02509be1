"""`provisor run --server URL TARGET -- COMMAND` without the CLI framework: the warm path.

Through a server, a job costs the server about a millisecond a host; what is left is the
client's own start-up, and typer, rich and pydantic are most of it. So `main` offers the
command line to `run` here first. It takes the plain forms of the options `run` sends to
a server (`-p 64`, `--parallel 64`, `--parallel=64`) and runs the job as the full command
would, with the same request and the same output (`fleet_jobs`). Anything else (help, an
option or form it does not know, a value the full command would refuse, no server) is
answered `None`, and the full command takes the line as before, with its own messages.
tests/test_thin_run.py holds the two to the same options.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# `run`'s options that go to a server, by every name: those that take a value, then the flags.
OPTIONS: dict[str, str] = {
    "-p": "parallel",
    "--parallel": "parallel",
    "-t": "timeout",
    "--timeout": "timeout",
    "--connect-timeout": "connect_timeout",
    "--max-output": "max_output",
    "-l": "user",
    "--user": "user",
    "--stdin": "stdin",
    "--output": "output",
    "--server": "server",
}
FLAGS: dict[str, str] = {"--sudo": "sudo"}


@dataclass
class Line:
    """What a command line of `run` asks for, read as the full command reads it."""

    tenant: str | None
    target: str
    command: list[str]
    options: dict[str, str]  # by the full command's parameter names; flags map to ""
    parallel: int = 64
    connect_timeout: float = 10.0


def run(argv: list[str]) -> int | None:
    """The exit status of the job `argv` asks for, or None when it is not for this path."""
    line = parse(argv)
    if line is None:
        return None
    server = line.options.get("server", os.environ.get("PROVISOR_SERVER"))
    if not server:  # none, or `--server ''`, which the full command refuses in its words
        return None
    from provisor.cli.fleet_jobs import job_spec, run_through_server, seconds_option, size_option
    from provisor.cli.input_files import read_input_file

    options = line.options
    stdin = options.get("stdin")
    spec = job_spec(
        "run",
        line.target,
        line.parallel,
        line.connect_timeout,
        options.get("user"),
        None,
        command=" ".join(line.command),
        stdin=read_input_file(Path(stdin), field="stdin") if stdin is not None else None,
        timeout=seconds_option(options.get("timeout"), "timeout"),
        max_output=size_option(options.get("max_output"), "max_output"),
        sudo="sudo" in options,
    )
    return run_through_server(spec, options.get("output"), server, line.tenant)


def parse(argv: list[str]) -> Line | None:
    """`[--tenant T] run ...` read as typer would read it, or None for anything else."""
    tenant = os.environ.get("PROVISOR_TENANT") or None
    if argv[:1] == ["--tenant"] and len(argv) > 2:
        tenant, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--tenant="):
        tenant, argv = argv[0].removeprefix("--tenant="), argv[1:]
    if argv[:1] != ["run"]:
        return None
    options: dict[str, str] = {}
    words: list[str] = []
    rest = iter(argv[1:])
    for word in rest:
        if word == "--":
            words.extend(rest)
            break
        if word == "-":
            return None
        if not word.startswith("-"):
            words.append(word)
            continue
        name, equals, value = word.partition("=")
        if name in FLAGS and not equals:
            options[FLAGS[name]] = ""
            continue
        if name not in OPTIONS or (equals and not name.startswith("--")):
            return None  # unknown, or a form like `-p=5` the full command reads its own way
        if not equals:
            following = next(rest, None)
            if following is None:
                return None
            value = following
        options[OPTIONS[name]] = value
    parallel = _integer(options.get("parallel", "64"))
    connect_timeout = _number(options.get("connect_timeout", "10"))
    if len(words) < 2 or parallel is None or connect_timeout is None:
        return None  # no command, or a value typer refuses: its message, not ours
    if not 0.1 <= connect_timeout <= 3600:
        return None
    return Line(tenant, words[0], words[1:], options, parallel, connect_timeout)


def _integer(text: str) -> int | None:
    stripped = text.strip()
    digits = stripped.removeprefix("-").removeprefix("+")
    return int(stripped) if digits.isascii() and digits.isdigit() else None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
