"""Benchmark: facts from N sandbox hosts, `provisor hosts gather` against Ansible's `setup`.

    make bench                      # .venv/bin/python bench/gather.py, as root
    .venv/bin/python bench/gather.py [--sizes 50,500] [--repeat 3 | --repeat 3,1]
        [-p 64] [--tools provisor,ansible] [--timeout 900] [--no-setup] [--no-docs]

What is measured, per N (one testbed of max(sizes) hosts; a size-N run uses the first N):
`provisor hosts gather group:fanoutN -p F --output json` (the facts are parsed and kept
in the inventory: the run includes writing them) against `ansible fanoutN -m setup
--forks F` (what an operator runs to see a fleet's facts; Ansible keeps nothing), both
at the same concurrency F (default 64). *verified* counts the hosts whose facts came
back: for provisor, the hosts of its JSON report with an `os` and a `cpu.count` (and
the inventory then holds them: `facts.cpu.count >= 1` selects them all, checked once
per size, unmeasured); for Ansible, the hosts whose `setup` answered SUCCESS with
`ansible_processor_vcpus`.

How a run is measured (a fresh process, wall time, machine, tool and sshd CPU), the
testbed, the tools venv (`.venv-bench`, with ansible-core from requirements/bench.txt)
and the trust of host keys are bench/fanout.py's, whose helpers this script imports.
Results: `bench/results/gather-<timestamp>.json` and the section of docs/benchmarks.md
between `<!-- gather:begin -->` and `<!-- gather:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docsection import markers, write_section
from fanout import (
    BENCH_ROOT,
    BLOCK_LOCKS,
    DOCS,
    PROVISOR,
    REPO,
    Invocation,
    Measurement,
    Row,
    Testbed,
    Workspace,
    ansible_invocation,
    background_cpu,
    ensure_tools_venv,
    measure,
    prime_provisor,
    remove_testbed,
    report_header,
    rotated,
    save_results,
    source_digest,
    start_hosts,
    summarize,
    versions,
)

from provisor.testing.blocks import claim_block

SECTION = "gather"
MARK_BEGIN, MARK_END = markers(SECTION)
TOOL_VERSIONS = ("provisor", "provisor git", "asyncssh", "python", "OpenSSH", "ansible-core")
DEFAULT_SIZES = [50, 500]
PROVISOR_TOOL = "provisor hosts gather"
ANSIBLE_TOOL = "ansible -m setup"
_ANSIBLE_ANSWER = re.compile(r"^(\S+) \| SUCCESS => (\{.*?^\})", re.MULTILINE | re.DOTALL)


def _report(stdout: str) -> dict[str, Any]:
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def provisor_verified(stdout: str, ws: Workspace, n: int) -> int:
    """Hosts (by address: the inventory names them so) of the JSON report that came back
    with an OS and a CPU count."""
    addresses = {h.address for h in ws.testbed.first(n)}
    return sum(
        1
        for name, facts in _report(stdout).get("gathered", {}).items()
        if name in addresses and facts.get("os") and (facts.get("cpu") or {}).get("count")
    )


def provisor_job_seconds(stdout: str) -> float | None:
    """The job's own time, from its start to its end, as the report says."""
    job = _report(stdout).get("job") or {}
    try:
        started = datetime.fromisoformat(job["created_at"])
        finished = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - started).total_seconds()


def ansible_verified(stdout: str, ws: Workspace, n: int) -> int:
    """Hosts (by address) whose `setup` answered SUCCESS with a CPU count."""
    addresses = {h.address for h in ws.testbed.first(n)}
    found = set()
    for address, body in _ANSIBLE_ANSWER.findall(stdout):
        try:
            facts = json.loads(body).get("ansible_facts", {})
        except ValueError:
            continue
        if address in addresses and facts.get("ansible_processor_vcpus"):
            found.add(address)
    return len(found)


@dataclass(frozen=True)
class Case:
    tool: str
    key: str  # provisor or ansible, for --tools
    build: Callable[[Workspace, int, int], Invocation]
    check: Callable[[str, Workspace, int], int]
    flag: str  # how the parallelism is written


def _provisor(ws: Workspace, n: int, parallel: int) -> Invocation:
    argv = [str(PROVISOR), "hosts", "gather", f"group:fanout{n}", "-p", str(parallel)]
    return Invocation([*argv, "--output", "json"], ws.env())


def _ansible(ws: Workspace, n: int, parallel: int) -> Invocation:
    return ansible_invocation(ws, "ansible", [f"fanout{n}", "-m", "setup", "-f", str(parallel)])


CASES = [
    Case(PROVISOR_TOOL, "provisor", _provisor, provisor_verified, "-p "),
    Case(ANSIBLE_TOOL, "ansible", _ansible, ansible_verified, "--forks "),
]
RUNS: list[Measurement] = []


def run_case(ws: Workspace, case: Case, n: int, parallel: int, repeat: int) -> Measurement:
    m = measure(
        ws,
        case.build(ws, n, parallel),
        tool=case.tool,
        setting=f"{case.flag}{parallel}",
        n=n,
        repeat=repeat,
    )
    stdout = (ws.root / "stdout.txt").read_text()
    m = replace(m, answered=case.check(stdout, ws, n))
    if case.key == "provisor":
        m = replace(m, job_s=provisor_job_seconds(stdout))
    RUNS.append(m)
    status = "TIMEOUT" if m.timed_out else f"exit {m.exit_code}"
    print(
        f"  N={n:<4} #{repeat + 1} {case.tool:<22} {m.setting:<10} {m.wall_s:7.2f} s wall "
        f"{m.machine_cpu_s:7.2f} s cpu {m.tool_cpu_s:6.2f} s tool "
        f"{m.answered:>4}/{n} verified {status}",
        flush=True,
    )
    return m


def selected_by_rule(ws: Workspace, n: int) -> int:
    """Hosts of fanoutN a smart group over a gathered fact selects (unmeasured)."""
    env = ws.env()
    subprocess.run(
        [str(PROVISOR), "groups", "rm", "--yes", f"bench-cpus{n}"],
        env=env,
        capture_output=True,
        check=False,
    )
    rule = "facts.cpu.count >= 1 and facts.os"
    subprocess.run(
        [str(PROVISOR), "groups", "add", f"bench-cpus{n}", "--rule", rule],
        env=env,
        capture_output=True,
        check=True,
    )
    target = f"group:bench-cpus{n}&group:fanout{n}"
    listed = subprocess.run(
        [str(PROVISOR), "hosts", "list", target, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return len(json.loads(listed.stdout)) if listed.returncode == 0 else 0


def run_sizes(ws: Workspace, cases: list[Case], args: argparse.Namespace) -> dict[int, int]:
    """Every case at every size, in rotated orders; a case slower than --slow on its first
    run at a size is not repeated there. Returns, per size, the hosts a rule over the
    gathered facts then selects."""
    selected = {}
    for n, count in zip(args.sizes, args.repeats, strict=True):
        print(f"\nN = {n}: {len(cases)} cases x {count} repeats, parallelism {args.p}", flush=True)
        slow: set[str] = set()
        for repeat in range(count):
            for case in rotated(cases, repeat):
                if case.tool in slow:
                    continue
                m = run_case(ws, case, n, args.p, repeat)
                if repeat == 0 and m.wall_s > args.slow:
                    slow.add(case.tool)
        if any(c.key == "provisor" for c in cases):
            selected[n] = selected_by_rule(ws, n)
            print(f"  facts.cpu.count >= 1 selects {selected[n]}/{n} hosts", flush=True)
    return selected


def _ratio(value: float, base: float | None) -> str:
    return f"**{value / base:.1f}**" if base else "n/a"


def table(rows: list[Row], n: int) -> list[str]:
    lines = [
        "| tool | parallelism | runs | wall s | job s | machine CPU s | tool CPU s | sshd CPU s "
        "| verified | wall ÷ provisor | machine CPU ÷ provisor | tool+sshd CPU ÷ provisor |",
        "| --- | --- " + "| ---: " * 10 + "|",
    ]
    here = [r for r in rows if r.n == n]
    ref = next((r for r in here if r.tool == PROVISOR_TOOL), None)
    for row in sorted(here, key=lambda r: (r.tool != PROVISOR_TOOL, r.setting)):
        own = row.tool == PROVISOR_TOOL
        verified = f"{row.answered_min}/{n}" + (
            f" ({row.failures} of {row.runs} runs short)" if row.failures else ""
        )
        lines.append(
            f"| {row.tool} | {row.setting} | {row.runs} | {row.wall_s:.2f} "
            f"| {f'{row.job_s:.2f}' if row.job_s is not None else ''} "
            f"| {row.machine_cpu_s:.2f} | {row.tool_cpu_s:.2f} | {row.hosts_cpu_s:.2f} "
            f"| {verified} "
            f"| {'1' if own else _ratio(row.wall_s, ref.wall_s if ref else None)} "
            f"| {'1' if own else _ratio(row.machine_cpu_s, ref.machine_cpu_s if ref else None)} "
            f"| {'1' if own else _ratio(row.own_cpu_s, ref.own_cpu_s if ref else None)} |"
        )
    return lines


def render(results: dict[str, Any], rows: list[Row]) -> str:
    config = results["config"]
    out = [
        MARK_BEGIN,
        "## Facts: `provisor hosts gather` and Ansible's `setup` on N hosts",
        "",
        *report_header(results, "bench/gather.py"),
        "Testbed and measurement as in the fan-out section (namespace sandbox hosts, "
        "OpenSSH sshd, the testbed's ed25519 key, hosts by IP address; each run a fresh "
        f"process; medians of {config['repeats_text']} in a rotated order, a case whose "
        f"first run took over {config['slow_s']:.0f} s ran once at that size). Both tools "
        f"at the same parallelism (provisor `-p {config['parallel']}`, Ansible `--forks "
        f"{config['parallel']}`), Ansible with its defaults otherwise (ssh with "
        "ControlPersist, no pipelining, Python interpreter discovery).",
        "",
        "- **provisor**: `provisor hosts gather group:fanoutN --output json`: one read-only "
        "shell script per host, its answer parsed and kept in the inventory (the run "
        "includes writing every host's facts);",
        "- **Ansible**: `ansible fanoutN -m setup`: its Python fact modules on every host, "
        "printed (kept nowhere);",
        "- **job s**: provisor's own report of its job's time, from the job's start to its "
        "last host's result (the wall time less start-up, the facts' write and exit);",
        "- **verified**: hosts whose facts came back (provisor: with `os` and `cpu.count` in "
        "the report; Ansible: SUCCESS with `ansible_processor_vcpus`); worst run;",
        "- **÷ provisor**: the row over provisor's row of the same size; above 1, provisor "
        "is faster or cheaper.",
        "",
    ]
    if config["sizes"] != DEFAULT_SIZES:
        sizes = ", ".join(str(n) for n in config["sizes"])
        wanted = " and ".join(str(n) for n in DEFAULT_SIZES)
        out += [f"This run: N = {sizes} (`--sizes`); `make bench` measures N = {wanted}.", ""]
    for n in config["sizes"]:
        out += [f"### N = {n}", "", *table(rows, n), ""]
        selected = results.get("selected", {}).get(str(n))
        if selected is not None:
            out += [
                f"After the runs, the smart-group rule `facts.cpu.count >= 1 and facts.os` "
                f"selected {selected} of the {n} hosts.",
                "",
            ]
    if results.get("failures"):
        out += ["Failed or short runs:", ""]
        out += [f"- {line}" for line in results["failures"]]
        out.append("")
    out.append(MARK_END)
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated host counts",
    )
    parser.add_argument(
        "--repeat", default=None, help="one number, or one per size (default 3, 1 at N >= 500)"
    )
    parser.add_argument("-p", type=int, default=64, help="provisor -p and ansible --forks")
    parser.add_argument(
        "--slow", type=float, default=120.0, help="a case slower than this runs once per size"
    )
    parser.add_argument("--tools", default="provisor,ansible", help="provisor, ansible or both")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per tool run")
    parser.add_argument("--tools-venv", type=Path, default=REPO / ".venv-bench")
    parser.add_argument("--no-setup", action="store_true", help="install nothing")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument(
        "--from-results", type=Path, help="render a results JSON again (and its docs section)"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",")]
    default = ",".join("1" if n >= 500 else "3" for n in args.sizes)
    repeats = [int(x) for x in (args.repeat or default).split(",")]
    args.repeats = repeats * len(args.sizes) if len(repeats) == 1 else repeats
    if len(args.repeats) != len(args.sizes):
        parser.error("--repeat needs one number or one per size")
    args.tools = set(args.tools.split(","))
    return args


def rerender(path: Path, *, docs: bool) -> None:
    """The docs section of an earlier run, from its results JSON."""
    results = json.loads(path.read_text())
    rows = summarize([Measurement(**m) for m in results["runs"]])
    section = render(results, rows)
    print(section)
    if docs and results["complete"]:
        write_section(SECTION, section, DOCS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_results:
        rerender(args.from_results, docs=not args.no_docs)
        return 0
    if os.geteuid() != 0:
        print("bench/gather.py needs root (namespace sandbox hosts)", file=sys.stderr)
        return 2
    if not args.no_setup and "ansible" in args.tools:
        ensure_tools_venv(args.tools_venv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the clean-up below
    cases = [c for c in CASES if c.key in args.tools]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    testbed = Testbed(base=BENCH_ROOT / secrets.token_hex(4))
    testbed.block, lock = claim_block(BLOCK_LOCKS)
    workdir = Path(tempfile.mkdtemp(prefix="provisor-gather-"))
    ws = Workspace(workdir, testbed, args.tools_venv, args.timeout)
    every = versions(args.tools_venv)
    results: dict[str, Any] = {"date": stamp, "complete": False}
    results["versions"] = {k: v for k, v in every.items() if k in TOOL_VERSIONS}
    results["source_before"] = source_digest()
    try:
        results["background_cpu_per_s"] = background_cpu()
        t0 = time.perf_counter()
        asyncio.run(start_hosts(testbed, max(args.sizes)))
        print(f"{len(testbed.hosts)} sandbox hosts up in {time.perf_counter() - t0:.1f} s")
        ws.write_files(args.sizes)
        primed = prime_provisor(ws, max(args.sizes))
        print(f"first provisor run (trusts the host keys): {primed}/{max(args.sizes)} answered")
        results["selected"] = {str(n): k for n, k in run_sizes(ws, cases, args).items()}
        results["complete"] = True
    finally:
        remove_testbed(testbed)
        lock.close()
        shutil.rmtree(workdir, ignore_errors=True)
        save_results("gather", SECTION, args, results, stamp, RUNS, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
