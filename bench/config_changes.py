"""Benchmark: one file change on N sandbox hosts, `provisor config` against Ansible.

    make bench                      # .venv/bin/python bench/config_changes.py, as root
    .venv/bin/python bench/config_changes.py [--sizes 100,500] [--repeat 3 | --repeat 3,1]
        [-p 64] [--tools provisor,ansible] [--no-ansible-default] [--timeout 900]
        [--profile] [--no-setup] [--no-docs]

What is measured, per N (one testbed of max(sizes) hosts; a size-N run uses the first N):

- **plan**: `provisor config plan` of a change set with one `file` against
  `ansible-playbook --check --diff` of a playbook with the same `ansible.builtin.copy`;
  each must find the change on every host and change nothing;
- **apply, whole file**: `provisor config apply` of that change set against
  `ansible-playbook` with `ansible.builtin.copy` (content, mode, owner, group);
- **apply, one line**: `provisor config apply` of a `line` resource (regexp, line)
  against `ansible.builtin.lineinfile` with the same regexp and line, in an existing
  file.

Both tools run with the same concurrency, provisor `-p F` and Ansible `--forks F`
(default F = 64); Ansible at its default of 5 forks also runs once, whole-file apply at
the smallest size (`--no-ansible-default` skips it). Before every measured run the hosts
are reset, unmeasured, to the old content (written through each host's mount namespace,
no SSH), so every plan finds a change and every apply really makes one; after every run
each host's file is read back the same way: *verified* counts the hosts whose file is
exactly what the run should have left (the new content after an apply, the old one
after a plan) and, for a plan, that the tool reported as changing.

How a run is measured (a fresh process, wall time, machine, tool and sshd CPU), the
testbed, the tools venv (`.venv-bench`, with ansible-core and py-spy from
requirements/bench.txt) and the trust of host keys are bench/fanout.py's, whose helpers
this script imports. Results: `bench/results/config-changes-<timestamp>.json` and the
section of docs/benchmarks.md between `<!-- config-changes:begin -->` and
`<!-- config-changes:end -->`.
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
    RESULTS_DIR,
    Invocation,
    Measurement,
    Row,
    Testbed,
    Workspace,
    ansible_invocation,
    background_cpu,
    ensure_tools_venv,
    hotspots,
    measure,
    prime_provisor,
    py_spy_record,
    remove_testbed,
    report_header,
    rotated,
    save_results,
    source_digest,
    start_hosts,
    summarize,
    versions,
)

from provisor import machines
from provisor.testing.blocks import claim_block

SECTION = "config-changes"
MARK_BEGIN, MARK_END = markers(SECTION)
DIRECTORY = "/etc/provisor-bench"
FILE_PATH = f"{DIRECTORY}/app.conf"
LINE_PATH = f"{DIRECTORY}/sshd_config"
REGEXP = "^#?PermitRootLogin"
NEW_LINE = "PermitRootLogin prohibit-password"
TOOL_VERSIONS = ("provisor", "provisor git", "asyncssh", "python", "OpenSSH", "ansible-core")


def _config(version: int) -> str:
    """A 2.6 KB configuration file; versions differ in one setting, as a real change does."""
    lines = [f"# app.conf: managed centrally (version {version})", "[main]"]
    lines += [f"option_{i:02d} = value-{i:02d}-{'x' * 20}" for i in range(60)]
    lines += ["[ldap]", f"server = ldap{version}.example.test", "timeout = 5", ""]
    return "\n".join(lines)


OLD_FILE, NEW_FILE = _config(1), _config(2)
# An sshd_config-like file of ~100 lines with the line to change in the middle.
_SSHD = [f"# sshd_config line {i}: a comment as the stock file has" for i in range(50)]
OLD_LINES = "\n".join([*_SSHD, "PermitRootLogin yes", *_SSHD, ""])
NEW_LINES = OLD_LINES.replace("PermitRootLogin yes\n", NEW_LINE + "\n")


# What the tools are given


def write_inputs(root: Path) -> None:
    """The change sets and playbooks (JSON is YAML, and quotes any content safely)."""
    file_resource = {
        "type": "file",
        "path": FILE_PATH,
        "content": NEW_FILE,
        "mode": "0644",
        "owner": "root",
        "group": "root",
    }
    line_resource = {"type": "line", "path": LINE_PATH, "regexp": REGEXP, "line": NEW_LINE}
    for name, resource in (("file", file_resource), ("line", line_resource)):
        change_set = {"name": f"bench-{name}", "resources": [resource]}
        (root / f"{name}.yaml").write_text(json.dumps(change_set, indent=2))
    copy = {"dest": FILE_PATH, "content": NEW_FILE, "mode": "0644", "owner": "root"}
    copy["group"] = "root"
    lineinfile = {"path": LINE_PATH, "regexp": REGEXP, "line": NEW_LINE}
    for name, module, args in (
        ("copy", "ansible.builtin.copy", copy),
        ("lineinfile", "ansible.builtin.lineinfile", lineinfile),
    ):
        play = {
            "hosts": "{{ target }}",
            "gather_facts": False,
            "tasks": [{"name": f"the {name} change", module: args}],
        }
        (root / f"{name}.yml").write_text(json.dumps([play], indent=2))


# The hosts' files, read and written through their mount namespaces (unmeasured)


def _host_path(host: machines.SandboxHost, path: str) -> Path:
    return machines.host_file(host, path)


def reset(hosts: list[machines.SandboxHost]) -> None:
    """Every host back to the old content, mode 0644, owned by root."""
    for host in hosts:
        _host_path(host, DIRECTORY).mkdir(mode=0o755, exist_ok=True)
        for path, content in ((FILE_PATH, OLD_FILE), (LINE_PATH, OLD_LINES)):
            target = _host_path(host, path)
            target.write_text(content)
            os.chown(target, 0, 0)
            target.chmod(0o644)


def hosts_with(hosts: list[machines.SandboxHost], path: str, content: str) -> set[str]:
    """Names of the hosts whose file is exactly `content`, mode 0644."""
    found = set()
    for host in hosts:
        target = _host_path(host, path)
        try:
            if target.read_text() == content and target.stat().st_mode & 0o7777 == 0o644:
                found.add(host.name)
        except OSError:
            pass
    return found


# What each tool says it would change (plans)

_RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)


def ansible_changed(stdout: str, ws: Workspace, n: int) -> set[str]:
    """Hosts (by name) that ansible-playbook's PLAY RECAP counts as changed."""
    names = {h.address: h.name for h in ws.testbed.first(n)}
    return {names[a] for a, changed in _RECAP.findall(stdout) if a in names and changed != "0"}


def provisor_changed(stdout: str, ws: Workspace, n: int) -> set[str]:
    """Hosts that `provisor config plan --output json` (a JSON record per host) finds a
    change on."""
    names = {h.address: h.name for h in ws.testbed.first(n)}
    found = set()
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        details = record.get("details") or {}
        if record.get("outcome") == "ok" and details.get("changes"):
            address = str(record.get("address"))
            found.add(names.get(address, str(record.get("host"))))
    return found


# The cases


@dataclass(frozen=True)
class Case:
    operation: str  # plan, apply file, apply line
    tool: str
    key: str  # provisor or ansible, for --tools
    build: Callable[[Workspace, int, int], Invocation]
    check: Callable[[Workspace, int, str], int]  # hosts verified after the run
    flag: str  # how the parallelism is written: "-p " or "--forks "


def _provisor(command: str, name: str, *extra: str) -> Callable[[Workspace, int, int], Invocation]:
    def build(ws: Workspace, n: int, parallel: int) -> Invocation:
        argv = [str(PROVISOR), "config", command, str(ws.root / f"{name}.yaml")]
        argv += [f"group:fanout{n}", "-p", str(parallel), *extra]
        return Invocation(argv, ws.env())

    return build


def _playbook(name: str, *extra: str) -> Callable[[Workspace, int, int], Invocation]:
    def build(ws: Workspace, n: int, parallel: int) -> Invocation:
        args = [str(ws.root / f"{name}.yml"), "-e", f"target=fanout{n}", "--forks"]
        return ansible_invocation(ws, "ansible-playbook", [*args, str(parallel), *extra])

    return build


def _applied(path: str, content: str) -> Callable[[Workspace, int, str], int]:
    def check(ws: Workspace, n: int, _stdout: str) -> int:
        return len(hosts_with(ws.testbed.first(n), path, content))

    return check


def _planned(
    said: Callable[[str, Workspace, int], set[str]],
) -> Callable[[Workspace, int, str], int]:
    def check(ws: Workspace, n: int, stdout: str) -> int:
        untouched = hosts_with(ws.testbed.first(n), FILE_PATH, OLD_FILE)
        return len(untouched & said(stdout, ws, n))

    return check


CASES = [
    Case(
        "plan",
        "provisor config plan",
        "provisor",
        _provisor("plan", "file", "--output", "json"),
        _planned(provisor_changed),
        "-p ",
    ),
    Case(
        "plan",
        "ansible-playbook --check --diff (copy)",
        "ansible",
        _playbook("copy", "--check", "--diff"),
        _planned(ansible_changed),
        "--forks ",
    ),
    Case(
        "apply file",
        "provisor config apply (file)",
        "provisor",
        _provisor("apply", "file"),
        _applied(FILE_PATH, NEW_FILE),
        "-p ",
    ),
    Case(
        "apply file",
        "ansible-playbook (copy)",
        "ansible",
        _playbook("copy"),
        _applied(FILE_PATH, NEW_FILE),
        "--forks ",
    ),
    Case(
        "apply line",
        "provisor config apply (line)",
        "provisor",
        _provisor("apply", "line"),
        _applied(LINE_PATH, NEW_LINES),
        "-p ",
    ),
    Case(
        "apply line",
        "ansible-playbook (lineinfile)",
        "ansible",
        _playbook("lineinfile"),
        _applied(LINE_PATH, NEW_LINES),
        "--forks ",
    ),
]
ANSIBLE_DEFAULT_FORKS = 5


RUNS: list[Measurement] = []
OPERATION: dict[str, str] = {c.tool: c.operation for c in CASES}


def run_case(ws: Workspace, case: Case, n: int, parallel: int, repeat: int) -> Measurement:
    """Reset the hosts, measure one run, read the hosts back."""
    reset(ws.testbed.first(n))
    m = measure(
        ws,
        case.build(ws, n, parallel),
        tool=case.tool,
        setting=f"{case.flag}{parallel}",
        n=n,
        repeat=repeat,
    )
    m = replace(m, answered=case.check(ws, n, (ws.root / "stdout.txt").read_text()))
    RUNS.append(m)
    status = "TIMEOUT" if m.timed_out else f"exit {m.exit_code}"
    print(
        f"  N={n:<4} #{repeat + 1} {case.tool:<40} {m.setting:<10} {m.wall_s:7.2f} s wall "
        f"{m.machine_cpu_s:7.2f} s cpu {m.tool_cpu_s:6.2f} s tool "
        f"{m.answered:>4}/{n} verified {status}",
        flush=True,
    )
    return m


def run_sizes(
    ws: Workspace, cases: list[Case], args: argparse.Namespace, *, ansible_default: bool
) -> None:
    """Every case at every size, in rotated orders; a case slower than --slow on its first
    run at a size is not repeated there (its gap is far beyond the noise)."""
    for n, count in zip(args.sizes, args.repeats, strict=True):
        print(f"\nN = {n}: {len(cases)} cases x {count} repeats, parallelism {args.p}", flush=True)
        slow: set[str] = set()
        for repeat in range(count):
            for case in rotated(cases, repeat * len(cases) // count):
                if case.tool in slow:
                    continue
                m = run_case(ws, case, n, args.p, repeat)
                if repeat == 0 and m.wall_s > args.slow:
                    slow.add(case.tool)
        if ansible_default and n == min(args.sizes):
            copy = next(c for c in cases if c.tool == "ansible-playbook (copy)")
            run_case(ws, copy, n, ANSIBLE_DEFAULT_FORKS, 0)


# Profiling provisor (--profile)


def profile_apply(ws: Workspace, n: int, parallel: int, stamp: str) -> dict[str, Any]:
    """py-spy over one `provisor config apply` of the whole file, hosts reset before."""
    reset(ws.testbed.first(n))
    raw = RESULTS_DIR / f"config-changes-{stamp}-profile-apply.txt"
    invocation = _provisor("apply", "file")(ws, n, parallel)
    py_spy_record(ws, raw, ["--", *invocation.argv], invocation.env)
    applied = len(hosts_with(ws.testbed.first(n), FILE_PATH, NEW_FILE))
    return {"file": raw.name, "n": n, "parallel": parallel, "verified": applied, **hotspots(raw)}


# Results


def pair(rows: list[Row], row: Row) -> Row | None:
    """The provisor row of the same N and operation, at the same parallelism if there is
    one (Ansible at its default 5 forks is set against provisor at -p F)."""
    same = [
        other
        for other in rows
        if other.n == row.n
        and other.tool.startswith("provisor")
        and OPERATION[other.tool] == OPERATION[row.tool]
    ]
    exact = [o for o in same if o.setting.split()[-1] == row.setting.split()[-1]]
    return next(iter(exact or same), None)


def _ratio(value: float, base: float | None) -> str:
    return f"**{value / base:.1f}**" if base else "n/a"


def table(rows: list[Row], n: int) -> list[str]:
    lines = [
        "| operation | tool | parallelism | runs | wall s | job s | machine CPU s | tool CPU s "
        "| sshd CPU s | verified | wall ÷ provisor | machine CPU ÷ provisor "
        "| tool+sshd CPU ÷ provisor |",
        "| --- | --- | --- " + "| ---: " * 10 + "|",
    ]
    order = {c.tool: i for i, c in enumerate(CASES)}
    for row in sorted((r for r in rows if r.n == n), key=lambda r: (order[r.tool], r.setting)):
        ref = pair(rows, row)
        own = row.tool.startswith("provisor")
        verified = f"{row.answered_min}/{n}" + (
            f" ({row.failures} of {row.runs} runs short)" if row.failures else ""
        )
        lines.append(
            f"| {OPERATION[row.tool]} | {row.tool} | {row.setting} | {row.runs} "
            f"| {row.wall_s:.2f} | {f'{row.job_s:.2f}' if row.job_s is not None else ''} "
            f"| {row.machine_cpu_s:.2f} | {row.tool_cpu_s:.2f} "
            f"| {row.hosts_cpu_s:.2f} | {verified} "
            f"| {'1' if own else _ratio(row.wall_s, ref.wall_s if ref else None)} "
            f"| {'1' if own else _ratio(row.machine_cpu_s, ref.machine_cpu_s if ref else None)} "
            f"| {'1' if own else _ratio(row.own_cpu_s, ref.own_cpu_s if ref else None)} |"
        )
    return lines


def cost_lines(rows: list[Row]) -> list[str]:
    """Where the time goes, per host: each tool's own CPU and the hosts' (sshd, the shell
    and the programs each session runs), and provisor's start-up (wall less job)."""
    out = [
        "Cost per host (medians), and provisor's start-up and exit (wall less job). The "
        "hosts' side (sshd, the key exchange, and the shell and programs each session "
        "runs) shares this machine's CPUs with the tool and whatever else runs, so where "
        "machine CPU ≈ wall * CPUs the run was bound by CPU, most of it the hosts': on a "
        "real fleet each host pays its own share in parallel.",
        "",
    ]
    for row in rows:
        if not row.answered_min:
            continue
        per_host = 1000 / row.n
        startup = (
            f"; start-up and exit {row.wall_s - row.job_s:.1f} s" if row.job_s is not None else ""
        )
        out.append(
            f"- N = {row.n}, {row.tool} {row.setting}: tool {row.tool_cpu_s * per_host:.0f} ms "
            f"CPU, hosts {row.hosts_cpu_s * per_host:.0f} ms CPU per host{startup}"
        )
    return [*out, ""]


def goal_lines(rows: list[Row]) -> list[str]:
    """The issue's goal, provisor at least 5x faster than Ansible (wall, same parallelism)."""
    out = []
    for row in rows:
        ref = pair(rows, row)
        if row.tool.startswith("provisor") or ref is None or ref.wall_s <= 0:
            continue
        speedup = row.wall_s / ref.wall_s
        verdict = "met" if speedup >= 5 else "**not met**"
        out.append(
            f"- N = {row.n}, {OPERATION[row.tool]}, {row.setting}: provisor "
            f"{speedup:.1f}x faster than {row.tool} — {verdict}"
        )
    return out


def render(results: dict[str, Any], rows: list[Row]) -> str:
    config = results["config"]
    out = [
        MARK_BEGIN,
        "## Fleet changes: one file on N hosts, `provisor config` and Ansible",
        "",
        *report_header(results, "bench/config_changes.py"),
        "Testbed and measurement as in the fan-out section (namespace sandbox hosts, "
        "OpenSSH sshd, the testbed's ed25519 key, hosts by IP address; each run a fresh "
        f"process; medians of {config['repeats_text']} in a rotated order, a case whose "
        f"first run took over {config['slow_s']:.0f} s ran once at that size). "
        f"Both tools at the same parallelism (provisor `-p {config['parallel']}`, Ansible "
        f"`--forks {config['parallel']}`), Ansible with its defaults otherwise (ssh with "
        "ControlPersist, no pipelining, fact gathering off in the play).",
        "",
        "- **plan**: `provisor config plan CHANGESET group --output json` against "
        "`ansible-playbook --check --diff` of the same `copy`;",
        f"- **apply file**: a 2.6 KB file whose version changes (content, mode 0644, "
        f"root:root) at `{FILE_PATH}`: `provisor config apply` of a `file` resource "
        "against `ansible.builtin.copy`;",
        f"- **apply line**: `{NEW_LINE}` in place of the `PermitRootLogin yes` line of a "
        f"100-line file (`{LINE_PATH}`, regexp `{REGEXP}`): a `line` resource against "
        "`ansible.builtin.lineinfile`;",
        "- before every run the hosts were reset, unmeasured, to the old content (through "
        "their mount namespaces, no SSH), so every apply changed the file on every host;",
        "- **job s**: provisor's own report of its job's time (`(job N, X s)`), from the "
        "job's start to its end: the wall time less start-up (imports, database) and exit;",
        "- **verified**: hosts whose file, read back after the run, is exactly what the "
        "run should leave (and, for a plan, the old file, with the host reported as "
        "changing); worst run;",
        "- **÷ provisor**: the row over provisor's row of the same operation and "
        "parallelism; the issue's goal is a wall ratio of at least 5.",
        "",
    ]
    for n in config["sizes"]:
        out += [f"### N = {n}", "", *table(rows, n), ""]
    out += cost_lines(rows)
    goal = goal_lines(rows)
    if goal:
        out += ["Goal (provisor at least 5x faster than Ansible, wall time):", "", *goal, ""]
    if results.get("failures"):
        out += ["Failed or short runs:", ""]
        out += [f"- {line}" for line in results["failures"]]
        out.append("")
    if results.get("profile"):
        out += render_profile(results["profile"])
    out.append(MARK_END)
    return "\n".join(out)


def render_profile(data: dict[str, Any]) -> list[str]:
    out = [
        f"### Where `provisor config apply` spends its time (py-spy, N = {data['n']}, "
        f"-p {data['parallel']})",
        "",
        "Shares of py-spy's samples of the thread holding the GIL (`--gil`; waiting is "
        "not sampled). Raw stacks: `bench/results/`.",
        "",
    ]
    if not data.get("samples"):
        return [*out, "No samples.", ""]
    pkgs = ", ".join(f"{p} {s}%" for p, s in data["packages"][:8])
    work = ", ".join(f"`{f}` {s}%" for f, s in data["inclusive"][:10])
    own = ", ".join(f"`{f}` {s}%" for f, s in data["self"][:8])
    out += [
        f"- {data['samples']} samples; imports {data['import_share']}%;",
        f"- packages (where the sampled line is): {pkgs};",
        f"- provisor and asyncssh functions, inclusive: {work};",
        f"- lines themselves (self): {own}.",
        "",
    ]
    return out


# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500", help="comma-separated host counts")
    parser.add_argument(
        "--repeat", default=None, help="one number, or one per size (default 3, 1 at N >= 500)"
    )
    parser.add_argument("-p", type=int, default=64, help="provisor -p and ansible --forks")
    parser.add_argument(
        "--slow", type=float, default=120.0, help="a case slower than this runs once per size"
    )
    parser.add_argument("--tools", default="provisor,ansible", help="provisor, ansible or both")
    parser.add_argument(
        "--no-ansible-default",
        action="store_true",
        help="skip Ansible at its default 5 forks (whole-file apply, smallest size)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per tool run")
    parser.add_argument("--tools-venv", type=Path, default=REPO / ".venv-bench")
    parser.add_argument("--profile", action="store_true", help="py-spy one provisor apply")
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
        print("bench/config_changes.py needs root (namespace sandbox hosts)", file=sys.stderr)
        return 2
    if not args.no_setup:
        ensure_tools_venv(args.tools_venv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the clean-up below
    cases = [c for c in CASES if c.key in args.tools]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    testbed = Testbed(base=BENCH_ROOT / secrets.token_hex(4))
    testbed.block, lock = claim_block(BLOCK_LOCKS)
    workdir = Path(tempfile.mkdtemp(prefix="provisor-config-changes-"))
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
        write_inputs(workdir)
        primed = prime_provisor(ws, max(args.sizes))
        print(f"first provisor run (trusts the host keys): {primed}/{max(args.sizes)} answered")
        ansible_default = "ansible" in args.tools and not args.no_ansible_default
        run_sizes(ws, cases, args, ansible_default=ansible_default)
        if args.profile:
            print("\nprofiling provisor config apply with py-spy", flush=True)
            results["profile"] = profile_apply(ws, max(args.sizes), args.p, stamp)
        results["complete"] = True
    finally:
        remove_testbed(testbed)
        lock.close()
        shutil.rmtree(workdir, ignore_errors=True)
        save_results("config-changes", SECTION, args, results, stamp, RUNS, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
