"""The warm path's own reading of `provisor run --server ...` (provisor.cli.thin_run) against
the full command's: every line it takes, it reads as typer does, and it knows every
option of `run` (taking it or leaving the line to the full command), so the two cannot
drift apart. That the job it runs prints what the full command prints, against a real
server and hosts: tests/test_warm_jobs.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command

from provisor.cli import thin_run
from provisor.cli.fleet import run

# Options of `run` that only a local job has (or that need the full command): a line
# with one of them is the full command's.
LOCAL_ONLY = {"-i", "--identity", "-A", "--ask-pass", "-o", "--outdir", "-e", "--errdir"}


def _command() -> Any:
    app = typer.Typer(add_completion=False)
    app.command()(run)
    return get_command(app)


def test_the_thin_path_knows_every_option_of_run() -> None:
    params = [p for p in _command().params if p.param_type_name == "option"]
    takes_value = {name for p in params if not p.is_flag for name in p.opts}
    flags = {name for p in params if p.is_flag for name in p.opts}
    assert set(thin_run.OPTIONS) == takes_value - LOCAL_ONLY
    assert set(thin_run.FLAGS) == flags - LOCAL_ONLY - {"--help"}


def _typer_reads(args: list[str]) -> dict[str, Any]:
    ctx = _command().make_context("run", list(args))
    return dict(ctx.params)


def _thin_reads(args: list[str]) -> dict[str, Any] | None:
    line = thin_run.parse(["run", *args])
    if line is None:
        return None
    options = line.options
    stdin = options.get("stdin")
    return {
        "target": line.target,
        "command": line.command,
        "parallel": line.parallel,
        "timeout": options.get("timeout"),
        "connect_timeout": line.connect_timeout,
        "max_output": options.get("max_output"),
        "user": options.get("user"),
        "sudo": "sudo" in options,
        "stdin": Path(stdin) if stdin is not None else None,
        "output": options.get("output"),
        "server": options.get("server"),
    }


TAKEN = [
    ["web1", "--", "uptime"],
    ["--server", "http://s", "web[01-20]", "--", "cat", "/etc/os-release"],
    ["--server=http://s", "-p", "200", "-t", "30", "g", "--", "sleep", "1"],
    ["g", "--parallel=5", "--timeout", "2h", "--connect-timeout", "0.5", "--", "x"],
    ["g", "uptime", "--sudo", "--output", "fold"],  # options among the words, as click reads
    ["g", "ls", "-l", "alice", "/"],  # `-l` is run's --user, before `--` as after it
    ["--max-output", "64K", "--stdin", "in.txt", "--user", "bob", "g", "--", "-t", "-p"],
    ["-p", "-5", "g", "--", "true"],  # a value is the next word, whatever it looks like
    ["-p", " 7", "g", "--", "true"],
    ["-t", "1", "-t", "2", "g", "--", "true"],  # the last one counts
    ["g", "--", "--", "--sudo"],
]


@pytest.mark.parametrize("args", TAKEN)
def test_what_the_thin_path_takes_it_reads_as_typer_does(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROVISOR_SERVER", raising=False)
    thin = _thin_reads(args)
    assert thin is not None
    full = _typer_reads(args)
    full = {k: v for k, v in full.items() if k not in ("identity", "ask_pass")}
    full = {k: v for k, v in full.items() if k not in ("out_dir", "err_dir")}
    assert thin == {**full, "command": list(full["command"])}


LEFT = [
    [],
    ["web1"],  # no command: the full command says what is missing
    ["--help"],
    ["web1", "--help"],
    ["-p5", "g", "--", "true"],  # a cluster of a short option and its value
    ["-p=5", "g", "--", "true"],
    ["--parallel", "many", "g", "--", "true"],  # refused by typer, in its words
    ["--parallel", "5_0", "g", "--", "true"],
    ["--connect-timeout", "0", "g", "--", "true"],  # out of typer's range
    ["--connect-timeout", "nan", "g", "--", "true"],
    ["-i", "key", "g", "--", "true"],  # local-only options
    ["-A", "g", "--", "true"],
    ["-o", "out", "g", "--", "true"],
    ["--bogus", "g", "--", "true"],
    ["--sudo=yes", "g", "--", "true"],
    ["-", "g", "--", "true"],
    ["g", "true", "-p"],  # an option without its value
]


@pytest.mark.parametrize("args", LEFT)
def test_what_the_thin_path_leaves_goes_to_the_full_command(args: list[str]) -> None:
    assert thin_run.parse(["run", *args]) is None


@pytest.mark.parametrize(
    ("argv", "environment", "tenant"),
    [
        (["--tenant", "acme", "run", "g", "--", "x"], {}, "acme"),
        (["--tenant=acme", "run", "g", "--", "x"], {"PROVISOR_TENANT": "other"}, "acme"),
        (["run", "g", "--", "x"], {"PROVISOR_TENANT": "other"}, "other"),
        (["run", "g", "--", "x"], {"PROVISOR_TENANT": ""}, None),
        (["--tenant", "run", "run", "g", "--", "x"], {}, "run"),
    ],
)
def test_the_tenant_as_the_root_option_gives_it(
    argv: list[str],
    environment: dict[str, str],
    tenant: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROVISOR_TENANT", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    line = thin_run.parse(argv)
    assert line is not None and line.tenant == tenant


@pytest.mark.parametrize(
    "argv",
    [
        ["hosts", "list"],
        ["--tenant"],
        ["--version", "run", "g", "--", "x"],
        ["runs", "g", "--", "x"],
        ["run", "g", "--", "x"],  # no server given, none in the environment
        ["run", "--server", "", "g", "--", "x"],  # an empty one: not the environment's
    ],
)
def test_other_commands_and_lines_without_a_server_are_not_taken(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROVISOR_SERVER", raising=False)
    assert thin_run.run(argv) is None
    if "--server" in argv:  # nor with one in the environment
        monkeypatch.setenv("PROVISOR_SERVER", "http://127.0.0.1:9")
        assert thin_run.run(argv) is None
