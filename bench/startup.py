"""Benchmark: how fast the `provisor` command starts, per command, now and before a change.

    make bench                      # .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py [--repeat 20] [--before REV] [--importtime-runs 5]
        [--no-docs]

Each measurement is one whole process, from spawn to exit: the wall time a user waits
at the prompt, and the CPU time of the process (wait4), which a busy machine
disturbs less. The commands:

- `python -c pass`: the interpreter alone, the floor under every command;
- `provisor --version`;
- `provisor --help`: the root's help, the list of commands;
- `provisor hosts list`: an empty inventory, in a data directory whose store an
  unmeasured first call created and migrated;
- `provisor run 127.0.0.1:PORT -- true`: one host whose port refuses the connection (a
  loopback port this script holds bound and never listens on): everything up to the
  first connection, and the job's record, with no SSH work;
- after `--help`, `hosts list` and `run`: the third-party libraries that command needs,
  imported alone by a bare interpreter: the floor under it while it uses them.

provisor runs from the venv's `provisor` script with PYTHONPATH set to the source tree
measured: this checkout's src/ and, with `--before REV`, the src/ of that git revision,
exported with `git archive` and byte-compiled as `make` compiles the checkout's. Each
tree has its own data directory; in every repeat the cases of both trees run in a
rotated order, so the machine's noise falls on both alike. The tables show medians.

Then `python -X importtime` of `provisor hosts list` (--importtime-runs runs per tree,
medians): the ten imports with the most cumulative time, and the ten top-level packages
with the most time of their own (self time summed over their modules): what is left.

Results: bench/results/startup-<timestamp>.json (raw) and docs/benchmarks.md between
`<!-- startup:begin -->` and `<!-- startup:end -->`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docsection import markers, write_section
from fanout import (
    DOCS,
    PROVISOR,
    REPO,
    RESULTS_DIR,
    background_cpu,
    machine,
    rotated,
    wait_exact,
)
from revision import export_revision

SECTION = "startup"
MARK_BEGIN, MARK_END = markers(SECTION)
NOW = "now"
# What the libraries a command needs cost alone, imported by a bare interpreter: the
# floor under that command as long as it uses them.
LIBRARIES = {
    "help libraries": "typer",
    "hosts list libraries": "typer, pydantic, rich.table, sqlalchemy.orm, pydantic_settings",
    "run libraries": "typer, pydantic, rich.table, sqlalchemy.orm, pydantic_settings, asyncssh",
}
CASES = (
    "python -c pass",
    "provisor --version",
    "provisor --help",
    "help libraries",
    "hosts list",
    "hosts list libraries",
    "run",
    "run libraries",
)
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


@dataclass(frozen=True)
class Tree:
    """A source tree of provisor to measure, with its own data directory."""

    label: str  # NOW, or the git revision
    src: Path
    home: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISOR_")}
        return {**env, "PYTHONPATH": str(self.src), "PROVISOR_HOME": str(self.home)}


@dataclass
class Run:
    tree: str
    case: str
    repeat: int
    wall_ms: float
    cpu_ms: float
    exit_code: int


def argv(case: str, port: int) -> list[str]:
    if case in LIBRARIES:
        return [sys.executable, "-c", f"import {LIBRARIES[case]}"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "provisor --version": [str(PROVISOR), "--version"],
        "provisor --help": [str(PROVISOR), "--help"],
        "hosts list": [str(PROVISOR), "hosts", "list"],
        "run": [str(PROVISOR), "run", f"127.0.0.1:{port}", "--", "true"],
    }[case]


def measure(tree: Tree, case: str, port: int, repeat: int) -> Run:
    start = time.perf_counter()
    process = subprocess.Popen(
        argv(case, port),
        env=tree.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ended = wait_exact(process, 120)
    wall = 1000 * (time.perf_counter() - start)
    if ended is None:
        raise SystemExit(f"{tree.label}: {case} ran for more than 120 s")
    status, usage = ended
    return Run(tree.label, case, repeat, wall, 1000 * (usage.ru_utime + usage.ru_stime), status)


def prime(tree: Tree, port: int) -> dict[str, int]:
    """One unmeasured call of each case (the store is created, bytecode written), each
    checked to do what it is measured doing; their exit codes, which every run repeats."""
    codes = {}
    for case in CASES:
        done = subprocess.run(
            argv(case, port), env=tree.env(), capture_output=True, text=True, timeout=300
        )
        out = done.stdout + done.stderr
        expected = {
            "provisor --version": done.returncode == 0 and out.startswith("provisor "),
            "provisor --help": done.returncode == 0 and "hosts" in out,
            "hosts list": done.returncode == 0 and "0 host(s)" in out,
            "run": done.returncode != 0 and "connection refused" in out,
        }.get(case, done.returncode == 0)
        if not expected:
            raise SystemExit(f"{tree.label}: {' '.join(argv(case, port))} did not work:\n{out}")
        codes[case] = done.returncode
    return codes


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection: bound here, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# python -X importtime


def importtime(tree: Tree) -> dict[str, tuple[int, float, float]]:
    """Per module of one `provisor hosts list`: (nesting level, self ms, cumulative ms)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(PROVISOR), "hosts", "list"],
        env=tree.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = {}
    for line in done.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            own, cumulative, indent, name = match.groups()
            found[name] = (len(indent) // 2, int(own) / 1000, int(cumulative) / 1000)
    return found


def import_summary(samples: list[dict[str, tuple[int, float, float]]]) -> dict[str, Any]:
    """Medians over runs: the slowest imports (cumulative), the packages' own time."""
    cumulative: dict[str, list[float]] = defaultdict(list)
    levels: dict[str, int] = {}
    packages: dict[str, list[float]] = defaultdict(list)
    totals = []
    for sample in samples:
        own_by_package: dict[str, float] = defaultdict(float)
        for name, (level, own, cum) in sample.items():
            cumulative[name].append(cum)
            levels[name] = level
            own_by_package[name.split(".")[0]] += own
        for package, ms in own_by_package.items():
            packages[package].append(ms)
        totals.append(sum(own for _, own, _ in sample.values()))
    runs = len(samples)
    # a module missing from a run (imported by a tree only sometimes) counts 0 there
    median = {n: statistics.median(v + [0.0] * (runs - len(v))) for n, v in cumulative.items()}
    own = {p: statistics.median(v + [0.0] * (runs - len(v))) for p, v in packages.items()}
    top = sorted(median, key=median.__getitem__, reverse=True)[:10]
    heaviest = sorted(own, key=own.__getitem__, reverse=True)[:10]
    return {
        "runs": runs,
        "total_ms": statistics.median(totals),
        "modules": len(median),
        "slowest": [(name, levels[name], round(median[name], 1)) for name in top],
        "packages": [(package, round(own[package], 1)) for package in heaviest],
    }


# Results


def summarize(runs: list[Run]) -> dict[str, dict[str, dict[str, float]]]:
    """tree -> case -> medians of wall and CPU ms, the fastest wall, the number of runs."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.tree, run.case)].append(run)
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (tree, case), rs in groups.items():
        table[tree][case] = {
            "runs": len(rs),
            "wall_ms": statistics.median(r.wall_ms for r in rs),
            "fastest_ms": min(r.wall_ms for r in rs),
            "cpu_ms": statistics.median(r.cpu_ms for r in rs),
        }
    return table


def label(case: str) -> str:
    if case in LIBRARIES:
        return f"· its libraries alone: `import {LIBRARIES[case]}`"
    return {
        "python -c pass": "`python -c pass` (the floor)",
        "provisor --version": "`provisor --version`",
        "provisor --help": "`provisor --help`",
        "hosts list": "`provisor hosts list` (empty store)",
        "run": "`provisor run 127.0.0.1:PORT -- true` (connection refused)",
    }[case]


def times_table(results: dict[str, Any]) -> list[str]:
    summary, before = results["summary"], results["config"]["before"]
    trees = [before, NOW] if before else [NOW]
    named = {before: f"before ({before})", NOW: "now"} if before else {NOW: "now"}
    head = "| command | runs |"
    for tree in trees:
        head += f" {named[tree]}: wall ms | fastest | CPU ms |"
    if before:
        head += " wall now ÷ before | CPU now ÷ before |"
    columns = head.count("|") - 1
    lines = [head, "| --- " + "| ---: " * (columns - 1) + "|"]
    for case in CASES:
        row = f"| {label(case)} | {summary[NOW][case]['runs']} |"
        for tree in trees:
            cell = summary[tree][case]
            row += f" {cell['wall_ms']:.0f} | {cell['fastest_ms']:.0f} | {cell['cpu_ms']:.0f} |"
        if before:
            old, new = summary[before][case], summary[NOW][case]
            row += f" {new['wall_ms'] / old['wall_ms']:.2f} | {new['cpu_ms'] / old['cpu_ms']:.2f} |"
        lines.append(row)
    return lines


def imports_tables(results: dict[str, Any]) -> list[str]:
    imports, before = results["imports"], results["config"]["before"]
    trees = [before, NOW] if before else [NOW]
    named = {before: f"before ({before})", NOW: "now"}
    out = []
    totals = "; ".join(
        f"{named[t]}: {imports[t]['modules']} modules, {imports[t]['total_ms']:.0f} ms of imports"
        for t in trees
    )
    out += [f"Imports of one `provisor hosts list` ({totals}):", ""]
    header = "| rank |" + "".join(f" {named[t]}: import | ms |" for t in trees)
    rule = "| ---: |" + " --- | ---: |" * len(trees)
    out += ["Slowest imports, cumulative (a module's time includes what it imports):", ""]
    out += [header, rule]
    for rank in range(10):
        row = f"| {rank + 1} |"
        for tree in trees:
            slowest = imports[tree]["slowest"]
            if rank < len(slowest):
                name, level, ms = slowest[rank]
                row += f" {'· ' * level}`{name}` | {ms:.1f} |"
            else:
                row += " | |"
        out.append(row)
    out += ["", "Own time by top-level package (self time summed over its modules):", ""]
    out += [header.replace(": import", ": package"), rule]
    for rank in range(10):
        row = f"| {rank + 1} |"
        for tree in trees:
            packages = imports[tree]["packages"]
            if rank < len(packages):
                package, ms = packages[rank]
                row += f" `{package}` | {ms:.1f} |"
            else:
                row += " | |"
        out.append(row)
    return out


def render(results: dict[str, Any]) -> str:
    config, mach = results["config"], results["machine"]
    before = config["before"]
    compared = (
        f"this checkout (`{results['git']}`) against git revision `{before}` "
        f"(`{results['before_commit']}`)"
        if before
        else f"this checkout (`{results['git']}`)"
    )
    out = [
        MARK_BEGIN,
        "## CLI start-up: how long a command takes before it does anything",
        "",
        f"Generated by `bench/startup.py` on {results['date']} (raw data: "
        f"`bench/results/{results['file']}`, not committed).",
        "",
        f"Machine: {mach['cpus']} CPUs ({mach['cpu model']}), {mach['memory GiB']} GiB, "
        f"Linux {mach['kernel']}, Python {results['python']}; shared and noisy: while idle, "
        f"the machine burned {config['background_cpu_per_s']:.2f} CPU s per second before "
        f"the run. Measured: {compared}.",
        "",
        f"Medians of {config['repeat']} runs per command and tree, each a fresh process from "
        "spawn to exit, the trees and commands in a rotated order. *fastest*: the quickest "
        "run, the one the machine's other work disturbed least; *CPU*: the process's own "
        "user + system time (wait4), which that work disturbs less than the wall time. "
        "provisor runs from the venv's `provisor` script, its source "
        "byte-compiled; `hosts list` reads an empty store that an unmeasured first call "
        "created (the migration is not measured); `run` tries one loopback port that "
        "refuses the connection, so it measures everything up to the first connection and "
        "the job's record, with no SSH work. *its libraries alone*: a bare interpreter "
        "importing the third-party libraries the command above needs, nothing of "
        "provisor's: the floor under that command as long as it uses them.",
        "",
        *times_table(results),
        "",
        *imports_tables(results),
        "",
        "What each command still loads, and why: `--version` only provisor's own package "
        "and `provisor.cli` (main answers it before importing anything else); `--help` "
        "typer alone, none of the commands: the root's help is plain text (rich's help "
        "rendering, which a command's own help keeps, brings rich's markdown, "
        "pretty-printing and traceback modules, and with them markdown-it, pygments and "
        "attrs: 150 ms against 60); `hosts list` SQLAlchemy (the store, its ORM and the "
        "mapper configuration of the tables it reads), pydantic (typer converts options "
        "with it; the views are models), pydantic-settings (the settings) and rich (the "
        "table); `run` adds asyncssh and cryptography, which its connections need. None of "
        "them loads DBOS, FastAPI, uvicorn, boto3 or alembic (tests/test_cli_startup.py).",
        MARK_END,
    ]
    return "\n".join(out)


# Main


def parse_args(argv_: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs per command and tree")
    parser.add_argument(
        "--before", default=None, help="also measure this git revision's src/ (e.g. main)"
    )
    parser.add_argument(
        "--importtime-runs", type=int, default=5, help="-X importtime runs per tree"
    )
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    return parser.parse_args(argv_)


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip()


def main(argv_: list[str] | None = None) -> int:
    args = parse_args(argv_)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with (
        tempfile.TemporaryDirectory(prefix="provisor-startup-") as scratch,
        refusing_port() as port,
    ):
        root = Path(scratch)
        trees = [Tree(NOW, REPO / "src", root / "home-now")]
        compileall.compile_dir(REPO / "src", quiet=1)  # as make does; a no-op when done
        if args.before:
            (root / "before").mkdir()
            src = export_revision(args.before, root / "before")
            trees.insert(0, Tree(args.before, src, root / "home-before"))
        background = background_cpu()
        codes = {tree.label: prime(tree, port) for tree in trees}
        pairs = [(tree, case) for tree in trees for case in CASES]
        runs: list[Run] = []
        for repeat in range(args.repeat):
            for tree, case in rotated(pairs, repeat):
                run = measure(tree, case, port, repeat)
                if run.exit_code != codes[tree.label][case]:
                    raise SystemExit(f"{tree.label} {case}: exit {run.exit_code}, not as primed")
                runs.append(run)
            print(f"repeat {repeat + 1}/{args.repeat} done", flush=True)
        samples: dict[str, list[dict[str, tuple[int, float, float]]]] = defaultdict(list)
        for _ in range(args.importtime_runs):  # the trees in turn, as the runs above
            for tree in trees:
                samples[tree.label].append(importtime(tree))
        imports = {tree: import_summary(found) for tree, found in samples.items()}
    name = f"startup-{stamp}.json"
    results: dict[str, Any] = {
        "file": name,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "python": platform.python_version(),
        "git": git("describe", "--always", "--dirty"),
        "before_commit": git("rev-parse", "--short", args.before) if args.before else None,
        "config": {
            "repeat": args.repeat,
            "before": args.before,
            "importtime_runs": args.importtime_runs,
            "background_cpu_per_s": background,
        },
        "summary": summarize(runs),
        "imports": imports,
        "runs": [asdict(r) for r in runs],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=2) + "\n")
    section = render(results)
    print("\n" + section)
    if not args.no_docs:
        write_section(SECTION, section, DOCS)
        print(f"\nwrote bench/results/{name} and {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
