"""Benchmark: `hostname` on N sandbox hosts with provisor and the tools it replaces.

    make bench                      # .venv/bin/python bench/fanout.py, as root
    .venv/bin/python bench/fanout.py [--sizes 50,200,500] [--repeat 3 | --repeat 3,3,2]
        [--tools provisor,server,pssh,clush,pssh-lib,ansible] [--timeout 300]
        [--profile] [--no-setup] [--no-docs]

Requirements (the setup step installs what is missing; `--no-setup` skips it):

- root on Linux, for the testbed's namespace hosts, and Debian's openssh-server,
  openssh-client and util-linux (`make system-deps`; see docs/testbed.md);
- Debian packages `pssh` (the `parallel-ssh` command) and `clustershell` (`clush`),
  installed with apt-get;
- a separate virtualenv, `.venv-bench` (`--tools-venv`), holding the locked
  `requirements/bench.txt`: parallel-ssh (the Python library), ansible-core and py-spy. It is kept
  apart so that ansible-core's and parallel-ssh's dependencies never change the project's
  environment; the tools run in subprocesses anyway.

One testbed of max(sizes) namespace sandbox hosts (real OpenSSH sshd, each on its own
loopback address, port 22, user root, the testbed's client key) serves every size: a
size-N run uses the first N hosts. Every tool logs in with that key, addresses hosts by
IP address and never asks about host keys (pssh, clush and ansible: no known-hosts file;
the parallel-ssh library does not check; provisor: its own known-hosts store, which an
unmeasured first run fills, so every measured provisor run has the keys trusted).

Per tool x setting x N, each measurement is one fresh process (`subprocess`, own
session, killed as a group at --timeout) and records:

- wall time, from spawn to exit;
- machine CPU: user+nice+system+irq+softirq jiffies of all CPUs from /proc/stat, before
  the spawn and 0.3 s after the exit (so the sshd side's teardown counts); it includes
  the sshd side, identical for every tool, and whatever else the machine runs;
- tool CPU: the tool's own process tree (getrusage(RUSAGE_CHILDREN) deltas), plus the
  `provisor server` process for runs through the server;
- hosts CPU: the sshd side alone (each host's sshd, PID 1 of its namespace, with its
  reaped children), which, unlike machine CPU, nothing else on the machine disturbs;
- hosts answered: hosts whose own hostname (`fo0001`...) appears in the tool's standard
  output (exit codes are not trusted).

The cases of one repeat run in a rotated order, so noise spreads over all of them; the
tables show medians. Results: `bench/results/fanout-<timestamp>.json` (raw) and the
fanout section of docs/benchmarks.md (between `<!-- fanout:begin -->` and
`<!-- fanout:end -->`; the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import configparser
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docsection import markers, write_section
from revision import export_revision, short_commit

from provisor import machines
from provisor.machines import SandboxHost, procs
from provisor.testing.blocks import claim_block

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
PROFILES_DIR = REPO / "docs" / "profiles"  # flame graphs (SVG) of --profile
PROVISOR = Path(sys.executable).parent / "provisor"
APT_PACKAGES = ("pssh", "clustershell")
BENCH_ROOT = Path("/run/provisor-bench")  # not under an overlaid dir (docs/testbed.md)
BLOCK_LOCKS = Path("/run/provisor-test/.blocks")  # shared with the pytest testbed fixture
HOSTNAME = re.compile(r"\bfo\d{4}\b")  # sandbox hosts are fo0001, fo0002, ...
JOB_SECONDS = re.compile(r"\(job \d+, ([\d.]+)s\)")
SETTLE_SECONDS = 0.3
STORED_KEY = "fanout"  # the testbed's client key, stored in provisor (key:fanout)
START_BATCH = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK_BEGIN, MARK_END = markers("fanout")
PROFILE_TITLE = "### Where provisor's CPU goes"
PROFILE_KEPT = (
    "(Profiled in an earlier run than the tables above: `bench/fanout.py --profile` makes it anew.)"
)
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
# OpenSSH 9.2's client prefers the post-quantum hybrid sntrup761x25519-sha512 key exchange
# (~0.1 s of client CPU per connection here); asyncssh and libssh2 negotiate curve25519.
SAME_KEX = "-o KexAlgorithms=curve25519-sha256"

# The parallel-ssh library, run in the bench venv: argv = key, pool size or "default", hosts.
PSSH_LIB_SCRIPT = """
import sys
from pssh.clients import ParallelSSHClient
key, pool, path = sys.argv[1:4]
hosts = open(path).read().split()
extra = {} if pool == "default" else {"pool_size": int(pool)}
client = ParallelSSHClient(hosts, user="root", pkey=key, **extra)
output = client.run_command("hostname", stop_on_errors=False)
client.join(output)
for host in output:
    if host.exception is not None:
        print(f"{host.host}: {host.exception!r}", file=sys.stderr)
        continue
    for line in host.stdout:
        print(f"{host.host}: {line}")
"""


# asyncssh by hand, in the project's venv (the asyncssh provisor runs on): argv = key,
# hosts file, parallel. What a script written directly on asyncssh costs: the floor under
# provisor's own work (its defaults: no host key check here, asyncssh's cipher order).
ASYNCSSH_SCRIPT = """
import asyncio, sys
import asyncssh
key, path, parallel = sys.argv[1], sys.argv[2], int(sys.argv[3])
hosts = open(path).read().split()
client_keys = [asyncssh.read_private_key(key)]
async def one(host, slots):
    async with slots:
        try:
            async with asyncssh.connect(
                host, username="root", client_keys=client_keys, known_hosts=None
            ) as conn:
                done = await conn.run("hostname", check=False)
                return f"{host}: {done.stdout.strip()}"
        except (OSError, asyncssh.Error) as exc:
            print(f"{host}: {exc!r}", file=sys.stderr)
            return None
async def main():
    slots = asyncio.Semaphore(parallel)
    for line in await asyncio.gather(*(one(h, slots) for h in hosts)):
        if line:
            print(line)
asyncio.run(main())
"""


# Measuring CPU


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far: user+nice+system+irq+softirq."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all threads, dead ones too) and of the children it has
    reaped; 0 if it is gone. Sampled at clock ticks: fine for a long, busy process."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def session_cpu_seconds(pid: int) -> float:
    """The same for a short-lived single-threaded process, such as an sshd session.

    Its own time is the scheduler's exact runtime (/proc/PID/schedstat): the tick-sampled
    utime+stime of a live sshd session that has run 12 ms often read 0. The kernel
    settles a process's times exactly when it is reaped, so cutime+cstime are exact.
    """
    try:
        fields = _stat_fields(pid)
        own_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return own_ns / 1e9 + (int(fields[13]) + int(fields[14])) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSnapshot:
    machine: float
    children: float
    hosts: float
    server: float

    @classmethod
    def take(cls, testbed: Testbed, server_pid: int | None, *, before: bool) -> CpuSnapshot:
        """Read the machine counter nearest the run: last before it, first after it."""
        machine = machine_cpu_seconds() if not before else 0.0
        snapshot = cls(
            machine=machine,
            children=children_cpu_seconds(),
            hosts=testbed.hosts_cpu(),
            server=process_cpu_seconds(server_pid) if server_pid else 0.0,
        )
        if before:
            snapshot.machine = machine_cpu_seconds()
        return snapshot


def background_cpu(seconds: float = 2.0) -> float:
    """Machine CPU seconds per second while this benchmark runs nothing."""
    before = machine_cpu_seconds()
    time.sleep(seconds)
    return (machine_cpu_seconds() - before) / seconds


# Setup


BENCH_LOCK = REPO / "requirements" / "bench.txt"


def ensure_apt_packages(packages: Sequence[str]) -> None:
    def installed(package: str) -> bool:
        query = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        return "install ok installed" in query.stdout

    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_tools_venv(venv: Path) -> None:
    """Create the tools venv and install the locked bench tools into it, once per lock."""
    lock = BENCH_LOCK.read_text()
    stamp = venv / ".fanout-requirements"
    if stamp.is_file() and stamp.read_text() == lock:
        return
    print(f"installing {BENCH_LOCK.relative_to(REPO)} into {venv}", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "-r", str(BENCH_LOCK)], check=True)
    stamp.write_text(lock)


# The testbed


@dataclass
class Testbed:
    base: Path
    hosts: list[SandboxHost] = field(default_factory=list)
    block: int = 0
    _sshd: list[int] = field(default_factory=list)

    @property
    def key(self) -> Path:
        return self.hosts[0].client_key

    def first(self, n: int) -> list[SandboxHost]:
        return self.hosts[:n]

    def hosts_cpu(self) -> float:
        """CPU of every host's processes: its sshd (PID 1 of the host), the sessions it
        has reaped, and the sessions still open (a warm pool keeps them open)."""
        if not self._sshd:
            self._sshd = [pid for h in self.hosts for pid in procs.children(h.pid)[:1]]
        return sum(
            session_cpu_seconds(pid)
            for sshd in self._sshd
            for pid in [sshd, *procs.descendants(sshd)]
        )


async def start_hosts(testbed: Testbed, n: int) -> None:
    """Start n hosts, a batch at a time; every started host is in testbed.hosts at once."""
    names = [(f"fo{i + 1:04d}", f"127.{testbed.block}.{i // 250}.{i % 250 + 1}") for i in range(n)]
    for at in range(0, n, START_BATCH):
        batch = names[at : at + START_BATCH]
        results = await asyncio.gather(
            *(machines.start(name, address, base_dir=testbed.base) for name, address in batch),
            return_exceptions=True,
        )
        testbed.hosts += [r for r in results if isinstance(r, SandboxHost)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]


async def stop_hosts(hosts: list[SandboxHost]) -> None:
    await asyncio.gather(*(machines.destroy(h) for h in hosts), return_exceptions=True)


def remove_testbed(testbed: Testbed) -> None:
    """Destroy every host, then let the sandbox's cleanup catch anything left."""
    asyncio.run(stop_hosts(testbed.hosts))
    subprocess.run(
        [sys.executable, "-m", "provisor.testing", "cleanup", str(testbed.base)],
        stdout=subprocess.DEVNULL,
        check=False,
    )
    shutil.rmtree(testbed.base, ignore_errors=True)


# Files the tools read


@dataclass
class Workspace:
    """Temporary files and directories of one benchmark run."""

    root: Path
    testbed: Testbed
    venv: Path
    timeout: float
    token: str = field(default="", repr=False)  # for runs through `provisor server`

    @property
    def provisor_home(self) -> Path:
        return self.root / "provisor-home"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.ini"

    @property
    def provisor_inventory(self) -> Path:
        """The same groups for provisor, whose hosts log in with the stored key
        `STORED_KEY` (`key:NAME`): the server's jobs may not use a key file."""
        return self.root / "provisor-inventory.ini"

    def hosts_file(self, n: int) -> Path:
        return self.root / f"hosts-{n}.txt"

    def addresses(self, n: int) -> list[str]:
        return [h.address for h in self.testbed.first(n)]

    def write_files(self, sizes: Sequence[int]) -> None:
        """A pssh hosts file per size; one Ansible INI inventory with a group per size."""
        for inventory, key in (
            (self.inventory, str(self.testbed.key)),
            (self.provisor_inventory, STORED_KEY),
        ):
            lines = []
            for n in sizes:
                lines.append(f"[fanout{n}]")
                lines += [
                    f"{a} ansible_user=root ansible_ssh_private_key_file={key}"
                    for a in self.addresses(n)
                ]
            inventory.write_text("\n".join(lines) + "\n")
        for n in sizes:
            self.hosts_file(n).write_text("\n".join(self.addresses(n)) + "\n")

    def env(self, **extra: str) -> dict[str, str]:
        """The machine's environment without provisor's and Ansible's settings, plus extra."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISOR_", "ANSIBLE_"))}
        return {**clean, "PROVISOR_HOME": str(self.provisor_home), **extra}


# Running one measurement


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    after: Callable[[], None] | None = None  # runs after the exit, before CPU is read


@dataclass
class Measurement:
    tool: str
    setting: str
    n: int
    repeat: int
    wall_s: float
    machine_cpu_s: float
    tool_cpu_s: float
    hosts_cpu_s: float
    answered: int
    exit_code: int | None
    timed_out: bool
    job_s: float | None = None  # provisor's own "(job N, X s)": time after start-up
    stderr_tail: str = ""
    server_cpu_s: float | None = None  # the `provisor server` process alone (its rows)
    peak_rss_kib: int | None = None  # the tool's largest process (getrusage ru_maxrss)
    peak_fds: int | None = None  # the most descriptors the tool (or server) held open
    server_rss_kib: int | None = None  # the server's resident memory after the run


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def count_answers(stdout: str, expected: set[str]) -> int:
    return len(expected & set(HOSTNAME.findall(stdout)))


def measure(
    ws: Workspace,
    invocation: Invocation,
    *,
    tool: str,
    setting: str,
    n: int,
    repeat: int,
    server_pid: int | None = None,
) -> Measurement:
    out_path, err_path = ws.root / "stdout.txt", ws.root / "stderr.txt"
    before = CpuSnapshot.take(ws.testbed, server_pid, before=True)
    start = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            invocation.argv,
            env=invocation.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            usage = watch(process, ws.timeout, server_pid)
        except BaseException:
            kill_group(process.pid)
            process.wait()
            raise
    wall = time.perf_counter() - start
    kill_group(process.pid)  # anything the tool left in its session
    if invocation.after is not None:
        invocation.after()
    time.sleep(SETTLE_SECONDS)
    after = CpuSnapshot.take(ws.testbed, server_pid, before=False)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    job = JOB_SECONDS.search(stderr)
    expected = {h.name for h in ws.testbed.first(n)}
    return Measurement(
        tool=tool,
        setting=setting,
        n=n,
        repeat=repeat,
        wall_s=wall,
        machine_cpu_s=after.machine - before.machine,
        tool_cpu_s=(after.children - before.children) + (after.server - before.server),
        hosts_cpu_s=after.hosts - before.hosts,
        answered=count_answers(stdout, expected),
        exit_code=usage.exit_code,
        timed_out=usage.timed_out,
        job_s=float(job.group(1)) if job else None,
        stderr_tail=stderr[-600:],
        server_cpu_s=(after.server - before.server) if server_pid else None,
        peak_rss_kib=usage.peak_rss_kib,
        peak_fds=usage.peak_fds,
        server_rss_kib=resident_kib(server_pid) if server_pid else None,
    )


@dataclass
class Usage:
    exit_code: int | None
    timed_out: bool
    peak_rss_kib: int | None
    peak_fds: int


def wait_exact(
    process: subprocess.Popen[bytes],
    timeout: float,
    tick: Callable[[], None] | None = None,
    every: float = 0.05,
) -> tuple[int, resource.struct_rusage] | None:
    """Wait for `process` to end: its exit status and resources (wait4), or None if it
    ran past `timeout` (its process group is killed). The end is seen the moment it
    comes (the process's pidfd turns readable), not at the next poll: sleeping between
    polls, as `Popen.wait(timeout)` does, rounds every wall time up to its schedule (16,
    64, 114, 164 ms... with 0.5 ms doubling to 50 ms), a third of a 150 ms start-up.
    `tick` runs every `every` seconds meanwhile."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(process.pid)
    try:
        while True:
            ended, _, _ = select.select([pidfd], [], [], every)
            if ended:
                _, status, rusage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, rusage
            if tick is not None:
                tick()
            if time.monotonic() > deadline:
                kill_group(process.pid)
                process.wait()
                return None
    finally:
        os.close(pidfd)


def watch(process: subprocess.Popen[bytes], timeout: float, server_pid: int | None) -> Usage:
    """Wait for the tool, counting the descriptors it holds open (the server's, for runs
    through it: the pool's connections are there) 20 times a second; its peak memory
    comes from wait4 (ru_maxrss: the largest of the process and its reaped children)."""
    watched = server_pid or process.pid
    peak_fds = 0

    def count() -> None:
        nonlocal peak_fds
        peak_fds = max(peak_fds, open_fds(watched))

    count()
    ended = wait_exact(process, timeout, count)
    if ended is None:
        return Usage(None, True, None, peak_fds)
    return Usage(ended[0], False, ended[1].ru_maxrss, peak_fds)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # it exited between two looks
        return 0


def resident_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# The tools


@dataclass(frozen=True)
class Case:
    """One tool at one parallelism setting; `parallel` None means the tool's default."""

    tool: str
    key: str  # for --tools
    default_parallel: int
    flag: str  # how the setting is written, e.g. "-p"
    build: Callable[[Workspace, int, int | None], Invocation]
    through_server: bool = False
    only_best: bool = False  # a variant worth one setting only

    def setting(self, parallel: int | None) -> str:
        if parallel is None:
            return f"default ({self.flag}{self.default_parallel})"
        return f"best ({self.flag}{parallel})"


def provisor_run(ws: Workspace, n: int, parallel: int | None) -> Invocation:
    argv = [str(PROVISOR), "run", f"group:fanout{n}"]
    if parallel is not None:
        argv += ["-p", str(parallel)]
    return Invocation([*argv, "--", "hostname"], ws.env())


def pssh_cli(ws: Workspace, n: int, parallel: int | None, ssh_extra: str = "") -> Invocation:
    argv = ["parallel-ssh", "-h", str(ws.hosts_file(n)), "-l", "root", "-i"]
    argv += ["-x", f"-i {ws.testbed.key} {SSH_OPTIONS} {ssh_extra}".strip()]
    if parallel is not None:
        argv += ["-p", str(parallel)]
    return Invocation([*argv, "hostname"], ws.env())


def clush(ws: Workspace, n: int, parallel: int | None, ssh_extra: str = "") -> Invocation:
    argv = ["clush", "-w", ",".join(ws.addresses(n)), "-l", "root"]
    argv += ["-o", f"-i {ws.testbed.key} {SSH_OPTIONS} {ssh_extra}".strip()]
    if parallel is not None:
        argv += ["-f", str(parallel)]
    return Invocation([*argv, "hostname"], ws.env())


def pssh_library(ws: Workspace, n: int, parallel: int | None) -> Invocation:
    python = str(ws.venv / "bin" / "python")
    pool = "default" if parallel is None else str(parallel)
    argv = [python, "-c", PSSH_LIB_SCRIPT, str(ws.testbed.key), pool, str(ws.hosts_file(n))]
    return Invocation(argv, ws.env())


def asyncssh_by_hand(ws: Workspace, n: int, parallel: int | None) -> Invocation:
    script = [sys.executable, "-c", ASYNCSSH_SCRIPT, str(ws.testbed.key), str(ws.hosts_file(n))]
    return Invocation([*script, str(parallel or 64)], ws.env())


def ansible(ws: Workspace, n: int, parallel: int | None) -> Invocation:
    argv = [f"fanout{n}", "-m", "command", "-a", "hostname"]
    if parallel is not None:
        argv += ["-f", str(parallel)]
    return ansible_invocation(ws, "ansible", argv)


def ansible_invocation(ws: Workspace, program: str, args: list[str], **settings: str) -> Invocation:
    """An Ansible program (`ansible`, `ansible-playbook`) with the workspace's inventory:
    Ansible's defaults (ssh with ControlPersist, interpreter discovery), a fresh home;
    `settings`: ANSIBLE_* variables on top."""
    home = Path(tempfile.mkdtemp(prefix="ansible-", dir=ws.root))
    (home / "ansible.cfg").write_text("")  # no machine or user ansible.cfg
    env = ws.env(
        ANSIBLE_CONFIG=str(home / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(home / "cp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_SSH_EXTRA_ARGS="-o UserKnownHostsFile=/dev/null",
        ANSIBLE_PYTHON_INTERPRETER="auto_silent",
        ANSIBLE_GATHERING="explicit",
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_NOCOLOR="1",
        **settings,
    )
    argv = [str(ws.venv / "bin" / program), "-i", str(ws.inventory), *args]

    def close_masters() -> None:
        # ControlPersist masters detach from the session; they name the control dir.
        for pid in procs.referring_to(home):
            procs.kill(pid, signal.SIGTERM)
        shutil.rmtree(home, ignore_errors=True)

    return Invocation(argv, env, after=close_masters)


def clush_default_fanout() -> int:
    config = configparser.ConfigParser()
    config.read("/etc/clustershell/clush.conf")
    return config.getint("Main", "fanout", fallback=64)


def all_cases() -> list[Case]:
    fanout = clush_default_fanout()
    return [
        Case("provisor run", "provisor", 64, "-p", provisor_run),
        Case("provisor server", "server", 64, "-p", provisor_run, through_server=True),
        Case("pssh (parallel-ssh)", "pssh", 32, "-p", pssh_cli),
        Case(
            "pssh, curve25519 kex",
            "pssh-c25519",
            32,
            "-p",
            functools.partial(pssh_cli, ssh_extra=SAME_KEX),
            only_best=True,
        ),
        Case("clush", "clush", fanout, "-f", clush),
        Case(
            "clush, curve25519 kex",
            "clush-c25519",
            fanout,
            "-f",
            functools.partial(clush, ssh_extra=SAME_KEX),
            only_best=True,
        ),
        Case("parallel-ssh library", "pssh-lib", 100, "pool_size=", pssh_library),
        Case("asyncssh by hand", "asyncssh", 64, "limit ", asyncssh_by_hand),
        Case("ansible", "ansible", 5, "-f", ansible),
    ]


DEFAULT_ONLY_AT = "2000=provisor,server,asyncssh,pssh-lib"
TOOLS = (
    "provisor",
    "server",
    "asyncssh",
    "pssh",
    "pssh-c25519",
    "clush",
    "clush-c25519",
    "pssh-lib",
    "ansible",
)


# provisor server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def provisor_server(ws: Workspace) -> Iterator[tuple[str, int]]:
    """A fresh `provisor server` (so a fresh pool); yields its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (ws.root / "server.log").open("ab")
    process = subprocess.Popen(
        [str(PROVISOR), "server", "--port", str(port)],
        env=ws.env(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        wait_healthy(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait()
        log.close()


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"provisor server exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"provisor server at {url} did not answer in {timeout:.0f} s")


def server_supported() -> bool:
    help_text = subprocess.run(
        [str(PROVISOR), "run", "--help"], capture_output=True, text=True, env={**os.environ}
    ).stdout
    return "--server" in help_text


# One repeat of one case


def run_case(ws: Workspace, case: Case, n: int, parallel: int | None, repeat: int) -> list[str]:
    """Measure one case; returns the lines to print. Results go to RUNS."""
    setting = case.setting(parallel)
    if not case.through_server:
        m = measure(
            ws, case.build(ws, n, parallel), tool=case.tool, setting=setting, n=n, repeat=repeat
        )
        RUNS.append(m)
        return [describe(m)]
    lines = []
    with provisor_server(ws) as (url, pid):
        for label in ("1st run, cold pool", "2nd run, warm pool"):
            invocation = case.build(ws, n, parallel)
            invocation.argv[2:2] = ["--server", url]
            invocation.env["PROVISOR_TOKEN"] = ws.token
            m = measure(
                ws,
                invocation,
                tool=f"{case.tool} ({label})",
                setting=setting,
                n=n,
                repeat=repeat,
                server_pid=pid,
            )
            RUNS.append(m)
            lines.append(describe(m))
    return lines


RUNS: list[Measurement] = []


def describe(m: Measurement) -> str:
    status = "TIMEOUT" if m.timed_out else f"exit {m.exit_code}"
    return (
        f"  N={m.n:<4} #{m.repeat + 1} {m.tool:<38} {m.setting:<22} "
        f"{m.wall_s:7.2f} s wall {m.machine_cpu_s:7.2f} s cpu "
        f"{m.tool_cpu_s:6.2f} s tool {m.answered:>4}/{m.n} {status}"
    )


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


def prime_provisor(ws: Workspace, n: int) -> int:
    """Store the testbed's key, import the inventory, make a token for the server's runs
    (`ws.token`), and trust every host key with one unmeasured run."""
    for step in (
        ["keys", "add", STORED_KEY, str(ws.testbed.key)],
        ["hosts", "import", str(ws.provisor_inventory)],
        ["users", "add", "fanout", "--tenant", "default", "--role", "operator"],
    ):
        subprocess.run([str(PROVISOR), *step], env=ws.env(), check=True, stdout=subprocess.DEVNULL)
    ws.token = subprocess.run(
        [str(PROVISOR), "tokens", "add", "fanout", "--expires", "1d"],
        env=ws.env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    first = subprocess.run(
        [str(PROVISOR), "run", f"group:fanout{n}", "-p", str(n), "--", "hostname"],
        env=ws.env(),
        capture_output=True,
        text=True,
        timeout=ws.timeout,
    )
    return count_answers(first.stdout, {h.name for h in ws.testbed.first(n)})


def run_sizes(
    ws: Workspace,
    cases: list[Case],
    sizes: list[int],
    repeats: list[int],
    *,
    server: bool,
    slow_seconds: float,
    only_at: dict[int, set[str]],
) -> None:
    """Every case at every size, `repeats` times in rotated orders.

    A case whose first run takes longer than `slow_seconds` is not repeated at that size:
    its gap to the others is far beyond the noise, and its repeats would cost minutes.
    """
    for n, count in zip(sizes, repeats, strict=True):
        plan = [
            (c, p)
            for c in cases
            for p in ((n,) if c.only_best else (None, n))
            if (server or not c.through_server) and c.key in only_at.get(n, {c.key})
        ]
        print(f"\nN = {n}: {len(plan)} cases x {count} repeats", flush=True)
        slow: set[tuple[str, int | None]] = set()
        for repeat in range(count):
            for case, parallel in rotated(plan, repeat * len(plan) // count):
                if (case.key, parallel) in slow:
                    continue
                done = len(RUNS)
                for line in run_case(ws, case, n, parallel, repeat):
                    print(line, flush=True)
                if repeat == 0 and max(m.wall_s for m in RUNS[done:]) > slow_seconds:
                    slow.add((case.key, parallel))


# Profiling provisor (--profile)


def py_spy_record(
    ws: Workspace, output: Path, target: list[str], env: dict[str, str], fmt: str = "raw"
) -> None:
    spy = [str(ws.venv / "bin" / "py-spy"), "record", "--gil", "--rate", "250", "--format", fmt]
    subprocess.run(
        [*spy, "--output", str(output), *target],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=ws.timeout,
        check=False,
    )


def hotspots(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and per package, of py-spy raw stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = imports = 0
    text = raw.read_text() if raw.exists() else ""
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
        if any(f.startswith("_find_and_load ") for f in frames):
            imports += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []
        )

    work = Counter({f: c for f, c in inclusive.items() if _is_work(f)})
    return {
        "samples": total,
        "import_share": round(100 * imports / total, 1) if total else 0.0,
        "self": shares(own),
        "inclusive": shares(work),
        "packages": shares(packages),
    }


def _is_work(frame: str) -> bool:
    """A provisor or asyncssh function below the CLI's entry point, not an import."""
    return _package(frame) in ("provisor", "asyncssh") and not frame.startswith(
        ("<module>", "main (provisor/cli/__init__.py")
    )


def _package(frame: str) -> str:
    """'connect (asyncssh/connection.py:123)' -> 'asyncssh'."""
    where = frame.rpartition("(")[2].rstrip(")")
    path = where.rsplit(":", 1)[0]
    if path.startswith("<frozen"):
        return "importlib (frozen)"
    parts = Path(path).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return parts[0] if parts and parts[0] != "/" else path


@contextlib.contextmanager
def py_spy_attached(ws: Workspace, pid: int, output: Path) -> Iterator[None]:
    """py-spy records a running process (the server) while the block runs."""
    spy = [str(ws.venv / "bin" / "py-spy"), "record", "--gil", "--rate", "250", "--format", "raw"]
    recorder = subprocess.Popen(
        [*spy, "--output", str(output), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        recorder.wait(60)


def profile_provisor(ws: Workspace, n: int, stamp: str, before: str | None) -> dict[str, Any]:
    """py-spy over a cold `provisor run`, and over the server and its CLI client for the
    server's first (cold pool) and second (warm pool) runs; flame graphs of the cold run
    (and of `before`'s, a git revision's source run the same way) into docs/profiles/."""
    out: dict[str, Any] = {}
    argv = [str(PROVISOR), "run", f"group:fanout{n}", "-p", str(n), "--", "hostname"]

    def raw(name: str) -> Path:
        return RESULTS_DIR / f"fanout-{stamp}-profile-{name}.txt"

    PROFILES_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)  # py-spy writes into it, not creates it
    if before:
        env = primed_revision(ws, before, n)
        svg = PROFILES_DIR / f"cold-run-{n}-before.svg"
        py_spy_record(ws, svg, ["--", *argv], env, fmt="flamegraph")
        py_spy_record(ws, raw("cli-cold-before"), ["--", *argv], env)
        label = f"provisor run (cold, one process), before: {short_commit(before)}"
        out[label] = {"file": raw("cli-cold-before").name, "svg": svg.name}
    svg = PROFILES_DIR / f"cold-run-{n}{'-after' if before else ''}.svg"
    py_spy_record(ws, svg, ["--", *argv], ws.env(), fmt="flamegraph")
    py_spy_record(ws, raw("cli-cold"), ["--", *argv], ws.env())
    out["provisor run (cold, one process)"] = {"file": raw("cli-cold").name, "svg": svg.name}
    if server_supported():
        with provisor_server(ws) as (url, pid):
            remote = [*argv[:2], "--server", url, *argv[2:]]
            for pool in ("cold", "warm"):
                with py_spy_attached(ws, pid, raw(f"server-{pool}")):
                    py_spy_record(
                        ws, raw(f"client-{pool}"), ["--", *remote], ws.env(PROVISOR_TOKEN=ws.token)
                    )
                label = f"provisor server, {'1st' if pool == 'cold' else '2nd'} run ({pool} pool)"
                out[f"{label}: the server"] = {"file": raw(f"server-{pool}").name}
                out[f"{label}: the CLI client"] = {"file": raw(f"client-{pool}").name}
    for data in out.values():
        data.update(hotspots(RESULTS_DIR / data["file"]))
    return out


def primed_revision(ws: Workspace, revision: str, n: int) -> dict[str, str]:
    """The environment that runs a git revision's provisor against the testbed, with
    its own data directory holding the key, the inventory and the trusted host keys."""
    root = ws.root / "before"
    root.mkdir(exist_ok=True)
    env = ws.env(PYTHONPATH=str(export_revision(revision, root)))
    env["PROVISOR_HOME"] = str(root / "provisor-home")
    for step in (
        ["keys", "add", STORED_KEY, str(ws.testbed.key)],
        ["hosts", "import", str(ws.provisor_inventory)],
        ["run", f"group:fanout{n}", "-p", str(n), "--", "hostname"],
    ):
        subprocess.run(
            [str(PROVISOR), *step], env=env, check=True, capture_output=True, timeout=ws.timeout
        )
    return env


# Results


def source_digest() -> str:
    """A digest of provisor's source: others may edit a shared tree while this runs."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "provisor").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def versions(venv: Path) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except OSError as exc:
            return f"unavailable ({exc.strerror})"
        return (done.stdout.strip() or done.stderr.strip()).splitlines()[0]

    python = str(venv / "bin" / "python")
    meta = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return {
        "provisor": first_line([str(PROVISOR), "--version"]).removeprefix("provisor "),
        "provisor git": first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "asyncssh": first_line([sys.executable, "-c", meta, "asyncssh"]),
        "python": platform.python_version(),
        "OpenSSH": first_line(["ssh", "-V"]).split(",")[0].removeprefix("OpenSSH_"),
        "pssh (Debian)": first_line(["parallel-ssh", "--version"]),
        "clush (Debian)": first_line(["clush", "--version"]).removeprefix("clush "),
        "parallel-ssh (PyPI)": first_line([python, "-c", meta, "parallel-ssh"]),
        "ssh2-python": first_line([python, "-c", meta, "ssh2-python"]),
        "ansible-core (PyPI)": first_line([python, "-c", meta, "ansible-core"]),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    debian = ""
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    memory_kb = 0
    with contextlib.suppress(OSError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu model": model,
        "kernel": platform.release(),
        "debian": debian,
        "memory GiB": round(memory_kb / 2**20, 1),
    }


@dataclass
class Row:
    tool: str
    setting: str
    n: int
    runs: int
    wall_s: float
    machine_cpu_s: float
    tool_cpu_s: float
    hosts_cpu_s: float
    own_cpu_s: float  # tool + sshd: the run's own CPU, without the machine's noise
    answered_min: int
    failures: int
    job_s: float | None
    server_cpu_s: float | None = None  # the `provisor server` process alone (its rows)
    peak_rss_kib: float | None = None  # median over runs
    peak_fds: int | None = None  # the most over runs
    server_rss_kib: float | None = None  # median over runs

    @property
    def cpu_ms_per_host(self) -> float | None:
        return 1000 * self.machine_cpu_s / self.answered_min if self.answered_min else None

    @property
    def server_ms_per_host(self) -> float | None:
        if self.server_cpu_s is None or not self.answered_min:
            return None
        return 1000 * self.server_cpu_s / self.answered_min


def summarize(runs: list[Measurement]) -> list[Row]:
    groups: dict[tuple[int, str, str], list[Measurement]] = defaultdict(list)
    for m in runs:
        groups[(m.n, m.tool, m.setting)].append(m)
    rows = []
    for (n, tool, setting), ms in groups.items():
        jobs = [m.job_s for m in ms if m.job_s is not None]
        server = [m.server_cpu_s for m in ms if m.server_cpu_s is not None]
        rss = [m.peak_rss_kib for m in ms if m.peak_rss_kib is not None]
        fds = [m.peak_fds for m in ms if m.peak_fds is not None]
        server_rss = [m.server_rss_kib for m in ms if m.server_rss_kib is not None]
        rows.append(
            Row(
                tool=tool,
                setting=setting,
                n=n,
                runs=len(ms),
                wall_s=statistics.median(m.wall_s for m in ms),
                machine_cpu_s=statistics.median(m.machine_cpu_s for m in ms),
                tool_cpu_s=statistics.median(m.tool_cpu_s for m in ms),
                hosts_cpu_s=statistics.median(m.hosts_cpu_s for m in ms),
                own_cpu_s=statistics.median(m.tool_cpu_s + m.hosts_cpu_s for m in ms),
                answered_min=min(m.answered for m in ms),
                failures=sum(1 for m in ms if m.timed_out or m.answered < n),
                job_s=statistics.median(jobs) if jobs else None,
                server_cpu_s=statistics.median(server) if server else None,
                peak_rss_kib=statistics.median(rss) if rss else None,
                peak_fds=max(fds) if fds else None,
                server_rss_kib=statistics.median(server_rss) if server_rss else None,
            )
        )
    return rows


def reference(rows: list[Row], row: Row) -> Row | None:
    """The cold `provisor run` row with the same N and the same kind of setting."""
    kind = row.setting.split()[0]
    for other in rows:
        if other.n == row.n and other.tool == "provisor run" and other.setting.startswith(kind):
            return other
    return None


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def table(rows: list[Row], n: int) -> list[str]:
    lines = [
        "| tool | setting | runs | wall s | machine CPU s | CPU ms/host | tool CPU s | sshd CPU s "
        "| tool+sshd CPU s | server CPU ms/host | peak RSS MiB | peak fds | answered "
        "| wall ÷ provisor | machine CPU ÷ provisor | tool+sshd CPU ÷ provisor |",
        "| --- | --- " + "| ---: " * 14 + "|",
    ]
    for row in (r for r in rows if r.n == n):
        ref = reference(rows, row)
        per_host = f"{row.cpu_ms_per_host:.1f}" if row.cpu_ms_per_host is not None else "n/a"
        server = f"{row.server_ms_per_host:.2f}" if row.server_ms_per_host is not None else ""
        answered = f"{row.answered_min}/{n}" + (
            f" ({row.failures} of {row.runs} runs short)" if row.failures else ""
        )
        lines.append(
            f"| {row.tool} | {row.setting} | {row.runs} "
            f"| {row.wall_s:.2f} | {row.machine_cpu_s:.2f} "
            f"| {per_host} | {row.tool_cpu_s:.2f} | {row.hosts_cpu_s:.2f} "
            f"| {row.own_cpu_s:.2f} | {server} | {memory(row)} | {row.peak_fds or ''} "
            f"| {answered} "
            f"| {_ratio(row.wall_s, ref.wall_s if ref else None)} "
            f"| {_ratio(row.machine_cpu_s, ref.machine_cpu_s if ref else None)} "
            f"| {_ratio(row.own_cpu_s, ref.own_cpu_s if ref else None)} |"
        )
    return lines


def memory(row: Row) -> str:
    """The tool's peak resident memory in MiB; for runs through the server, the server's
    after the run (its pool and caches), then the CLI client's peak."""

    def mib(kib: float | None) -> str:
        return f"{kib / 1024:.0f}" if kib is not None else "n/a"

    if row.server_rss_kib is not None:
        return f"{mib(row.server_rss_kib)} + {mib(row.peak_rss_kib)}"
    return mib(row.peak_rss_kib)


def warm_speedup(rows: list[Row], n: int) -> list[str]:
    """How many times a warm `provisor run --server` is faster than a cold `provisor run`
    (wall time, each setting), as one line under the table."""
    parts = []
    for row in rows:
        if row.n != n or not row.tool.startswith("provisor server (2nd run"):
            continue
        ref = reference(rows, row)
        if ref is not None and row.wall_s:
            setting = row.setting.split()[0]
            parts.append(f"{ref.wall_s / row.wall_s:.1f} times faster ({setting} setting)")
    if not parts:
        return []
    return ["", f"Warm pool against a cold `provisor run`, wall time: {', '.join(parts)}."]


def report_header(results: dict[str, Any], script: str) -> list[str]:
    """Where a section's numbers come from: the script, the date, the machine, the tools
    and the source they measured (the fan-out's section and the others that reuse it)."""
    mach, tools, config = results["machine"], results["versions"], results["config"]
    return [
        f"Generated by `{script}` on {results['date']} "
        f"(raw data: `bench/results/{results['file']}`, not committed).",
        "",
        f"Machine: {mach['cpus']} CPUs ({mach['cpu model']}), {mach['memory GiB']} GiB, "
        f"Linux {mach['kernel']}, Debian {mach['debian']}; shared and noisy: while idle, "
        f"the machine burned {config['background_cpu_per_s']:.2f} CPU s per second before "
        f"the run. Tools: " + "; ".join(f"{k} {v}" for k, v in tools.items()) + ".",
        "",
        source_note(results),
        "",
    ]


def render(results: dict[str, Any], rows: list[Row]) -> str:
    config = results["config"]
    out = [
        MARK_BEGIN,
        "## Fan-out: `hostname` on N hosts",
        "",
        *report_header(results, "bench/fanout.py"),
        "Testbed: namespace sandbox hosts (OpenSSH sshd each on its own loopback address), "
        "key authentication with the testbed's ed25519 key, hosts addressed by IP. "
        f"Medians of {config['repeats_text']}, in a rotated order; a case whose first run "
        f"took over {config['slow_s']:.0f} s ran only once at that size (see `runs`). "
        f"{only_at_note(config)}"
        "Each run is a fresh process. "
        "provisor's host keys were trusted by an unmeasured first run (pssh, clush and "
        "ansible use no known-hosts file; the parallel-ssh library does not check).",
        "",
        "- **machine CPU**: busy jiffies of all CPUs (/proc/stat) from spawn to 0.3 s after "
        "exit — the tool, the sshd side and anything else the machine ran meanwhile;",
        "- **CPU ms/host**: machine CPU per answered host;",
        "- **tool CPU**: the tool's process tree (plus the `provisor server` process for runs "
        "through it);",
        "- **sshd CPU**: the hosts' processes (sshd and the sessions it runs) alone; for the "
        "server rows the pool's connections are still open at the end, so their closing "
        "(a few ms each) is not in it;",
        "- **tool+sshd CPU**: the run's own CPU on both ends, without the rest of the "
        "machine: on a busy machine, the fairer CPU comparison;",
        "- **server CPU ms/host**: for runs through `provisor server`, the server process's "
        "own CPU per answered host (the CLI client's is in tool CPU, not here);",
        "- **answered**: hosts whose own hostname is in the output (worst run);",
        "- **÷ provisor**: this row over `provisor run` with the same kind of setting "
        "(default or best); above 1 means provisor is faster or cheaper.",
        "",
        "Defaults: provisor `-p 64`, pssh `-p 32`, clush `fanout: 64` (clush.conf), "
        "parallel-ssh library `pool_size=100`, ansible `forks=5`; best: the same knob = N. "
        "Key exchange: OpenSSH 9.2's client (pssh, clush, ansible) negotiates the "
        "post-quantum hybrid `sntrup761x25519-sha512` by default, about 0.1 s of client "
        "CPU per connection here; asyncssh (provisor) and libssh2 (the parallel-ssh "
        "library) negotiate `curve25519-sha256`. The *curve25519 kex* rows give pssh and "
        "clush that same key exchange (`-o KexAlgorithms=curve25519-sha256`). "
        "The server rows are two runs through one fresh `provisor server`: the first opens "
        "the pool's connections, the second reuses them. *asyncssh by hand* is a short "
        "script on asyncssh alone (connect, run, print; asyncssh's defaults, no host key "
        "check), in provisor's own venv: the floor under a cold provisor run.",
        "",
    ]
    for n in results["config"]["sizes"]:
        out += [f"### N = {n}", "", *table(rows, n), *warm_speedup(rows, n), ""]
    out += scale_section(rows, results["config"]["sizes"], results.get("folded"))
    if results.get("failures"):
        out += ["Failed or short runs:", ""]
        out += [f"- {line}" for line in results["failures"]]
        out.append("")
    if results.get("profile"):
        out += render_profile(results["profile"], results["config"]["profile_size"])
    else:
        out += previous_profile()
    out.append(MARK_END)
    return "\n".join(out)


def previous_profile() -> list[str]:
    """The profile section of the last run that made one (`--profile`), kept as it was:
    a run without --profile replaces the tables, not the flame graphs."""
    text = DOCS.read_text() if DOCS.exists() else ""
    start, stop = text.find(PROFILE_TITLE), text.find(MARK_END)
    if start == -1 or stop < start:
        return []
    kept = text[start:stop].rstrip("\n").splitlines()
    return [*kept, "", *([PROFILE_KEPT] if PROFILE_KEPT not in kept else [])]


def scale_section(rows: list[Row], sizes: list[int], folded: dict[str, Any] | None) -> list[str]:
    """How wall time, CPU, memory and descriptors grow between the two largest sizes."""
    if len(sizes) < 2:
        return []
    low, high = sorted(sizes)[-2:]
    out = [
        f"### Scale: from {low} to {high} hosts",
        "",
        f"The growth per added host between N = {low} and N = {high} (the slope: the "
        f"difference of the two medians over {high - low} hosts), beside the average per "
        f"host at N = {low}: a slope no steeper than the average means cost grows linearly "
        "(or better) with the fleet. Memory: the tool's peak resident memory (the server's "
        "after the run, for runs through it). Descriptors: the most the tool's process (the "
        "server, for runs through it) held open at once, sampled 20 times a second: with "
        "`-p 64` they stay flat as N grows; at `-p N` each open connection holds one.",
        "",
        "| tool | setting | wall s | wall ms/host, average at "
        f"{low} | wall ms/host, slope | tool CPU ms/host, slope | memory MiB "
        "| memory KiB/host, slope | peak fds |",
        "| --- | --- " + "| ---: " * 7 + "|",
    ]
    at_low = {(r.tool, r.setting.split()[0]): r for r in rows if r.n == low}
    for row in (r for r in rows if r.n == high):
        before = at_low.get((row.tool, row.setting.split()[0]))
        if before is None:
            continue
        added = high - low
        mem_low, mem_high = resident(before), resident(row)
        mem_slope = (
            f"{(mem_high - mem_low) / added:.1f}"
            if mem_low is not None and mem_high is not None
            else "n/a"
        )
        mem = (
            f"{mem_low / 1024:.0f} → {mem_high / 1024:.0f}"
            if mem_low is not None and mem_high is not None
            else "n/a"
        )
        out.append(
            f"| {row.tool} | {row.setting} | {before.wall_s:.2f} → {row.wall_s:.2f} "
            f"| {1000 * before.wall_s / low:.1f} "
            f"| {1000 * (row.wall_s - before.wall_s) / added:.1f} "
            f"| {1000 * (row.tool_cpu_s - before.tool_cpu_s) / added:.2f} "
            f"| {mem} | {mem_slope} | {before.peak_fds} → {row.peak_fds} |"
        )
    if folded:
        out += [
            "",
            f"What a user reads at N = {high}: `{folded['command']}` prints "
            f"{folded['lines']} line(s) on standard output and exits {folded['exit_code']}:",
            "",
            "```",
            *folded["output"],
            "```",
        ]
    return [*out, ""]


def resident(row: Row) -> float | None:
    return row.server_rss_kib if row.server_rss_kib is not None else row.peak_rss_kib


def folded_sample(ws: Workspace, n: int) -> dict[str, Any]:
    """The output of one cold run whose hosts all answer alike: folded, it stays short."""
    argv = ["run", f"group:fanout{n}", "--", "uname", "-s"]
    done = subprocess.run(
        [str(PROVISOR), *argv],
        env=ws.env(),
        capture_output=True,
        text=True,
        timeout=ws.timeout,
        check=False,
    )
    lines = done.stdout.splitlines()
    return {
        "command": " ".join(["provisor", *argv]),
        "exit_code": done.returncode,
        "lines": len(lines),
        "output": lines[:12] + (["..."] if len(lines) > 12 else []),
    }


def only_at_note(config: dict[str, Any]) -> str:
    names = {c.key: c.tool for c in all_cases()}
    notes = [
        f"at N = {n} only {', '.join(names.get(t, t) for t in tools)} ran (the others take "
        "minutes a run there)"
        for n, tools in config.get("only_at", {}).items()
        if int(n) in config["sizes"]
    ]
    return (notes[0][0].upper() + "; ".join(notes)[1:] + ". ") if notes else ""


def source_note(results: dict[str, Any]) -> str:
    before, after = results.get("source_before"), results.get("source_after")
    note = f"provisor's source (src/provisor, sha256 of the .py files): `{before}`"
    if before != after:
        note += (
            f", **changed during the run** (`{after}` at the end): someone edited the tree, "
            "so provisor's rows may mix two versions"
        )
    return note + "."


def render_profile(profile: dict[str, Any], n: int) -> list[str]:
    out = [
        f"{PROFILE_TITLE} (py-spy, N = {n}, -p {n})",
        "",
        "Shares of py-spy's samples of the thread that holds the GIL (`--gil`, so threads "
        "that wait are left out, as is native code that releases the GIL; native code "
        "that keeps it, such as most of `cryptography`'s, is charged to the Python line "
        "that called it). *Imports*: samples inside module imports. *Packages*: where the "
        "sampled line is. *Work*: the provisor and asyncssh functions with the most samples "
        "in them and below them (inclusive). Raw "
        "stacks: `bench/results/`.",
        "",
    ]
    for label, data in profile.items():
        if not data.get("samples"):
            out.append(f"- **{label}**: no samples")
            continue
        pkgs = ", ".join(f"{p} {s}%" for p, s in data["packages"][:6])
        work = ", ".join(f"`{f}` {s}%" for f, s in data["inclusive"][:6])
        graph = (
            f" Flame graph: [profiles/{data['svg']}](profiles/{data['svg']})."
            if (data.get("svg"))
            else ""
        )
        out.append(
            f"- **{label}** ({data['samples']} samples): imports {data['import_share']}%; "
            f"packages: {pkgs}; work: {work}.{graph}"
        )
    out.append("")
    return out


def failures(runs: list[Measurement]) -> list[str]:
    lines = []
    for m in runs:
        if m.timed_out or m.answered < m.n:
            what = "timed out" if m.timed_out else f"exit {m.exit_code}"
            tail = " ".join(m.stderr_tail.split())[-200:]
            lines.append(
                f"N={m.n} {m.tool} {m.setting} run {m.repeat + 1}: {what}, "
                f"{m.answered}/{m.n} answered; stderr ends: `{tail}`"
            )
    return lines


def verified_failures(runs: list[Measurement]) -> list[str]:
    """The runs of a bench that checks each host's result (gather, config changes) that
    did not verify on every host, or exited non-zero."""
    lines = []
    for m in runs:
        if m.timed_out or m.answered < m.n or m.exit_code not in (0, None):
            what = "timed out" if m.timed_out else f"exit {m.exit_code}"
            tail = " ".join(m.stderr_tail.split())[-200:]
            lines.append(
                f"N={m.n} {m.tool} {m.setting} run {m.repeat + 1}: {what}, "
                f"{m.answered}/{m.n} verified; stderr ends: `{tail}`"
            )
    return lines


def record_run(
    results: dict[str, Any],
    name: str,
    args: argparse.Namespace,
    repeats_text: str,
    **config: Any,
) -> None:
    """What every bench on the fan-out's testbed keeps about its run: the file, the date,
    the machine, the source at the end and its settings (`config` on top of the shared ones)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results.update(
        file=name,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        source_after=source_digest(),
        config={
            "sizes": args.sizes,
            "repeats": args.repeats,
            "repeats_text": repeats_text,
            "timeout_s": args.timeout,
            "slow_s": args.slow,
            **config,
            "background_cpu_per_s": results.pop("background_cpu_per_s", 0.0),
        },
    )


def save_results(
    prefix: str,
    section: str,
    args: argparse.Namespace,
    results: dict[str, Any],
    stamp: str,
    runs: list[Measurement],
    render_section: Callable[[dict[str, Any], list[Row]], str],
) -> None:
    """A verified bench's runs and summary into bench/results/PREFIX-STAMP.json, and its
    section of docs/benchmarks.md when every size was measured (unless --no-docs)."""
    if not runs:
        return
    name = f"{prefix}-{stamp}.json"
    repeats_text = ", ".join(
        f"{r} runs at N = {n}" for n, r in zip(args.sizes, args.repeats, strict=True)
    )
    record_run(results, name, args, repeats_text, parallel=args.p)
    results.update(failures=verified_failures(runs), runs=[asdict(m) for m in runs])
    rows = summarize(runs)
    results["summary"] = [asdict(r) for r in rows]
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=2) + "\n")
    text = render_section(results, rows)
    print("\n" + text)
    if results["complete"] and not args.no_docs:
        write_section(section, text, DOCS)
        print(f"\nwrote bench/results/{name} and {DOCS.name}")
    else:
        print(f"\nwrote bench/results/{name} (docs left alone)")


# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500,2000", help="comma-separated host counts")
    parser.add_argument(
        "--repeat",
        default=None,
        help="repeats: one number, or one per size (default 3, and 2 at N = 500)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=60.0,
        help="a case whose run takes longer (seconds) runs only once at that size",
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"which of {','.join(TOOLS)}",
    )
    parser.add_argument(
        "--only-at",
        action="append",
        default=None,
        metavar="N=TOOLS",
        help="at size N run only these tools (default: "
        f"{DEFAULT_ONLY_AT}: the others take minutes a run there)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per tool run")
    parser.add_argument("--tools-venv", type=Path, default=REPO / ".venv-bench")
    parser.add_argument("--profile", action="store_true", help="py-spy provisor at the top N")
    parser.add_argument(
        "--profile-size", type=int, default=500, help="N of --profile (default 500)"
    )
    parser.add_argument(
        "--profile-before",
        metavar="REV",
        help="with --profile: also a flame graph of a git revision's cold run",
    )
    parser.add_argument("--no-setup", action="store_true", help="install nothing")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",")]
    default = ",".join("2" if n >= 500 else "3" for n in args.sizes)
    repeats = [int(x) for x in (args.repeat or default).split(",")]
    args.repeats = repeats * len(args.sizes) if len(repeats) == 1 else repeats
    if len(args.repeats) != len(args.sizes):
        parser.error("--repeat needs one number or one per size")
    args.tools = set(args.tools.split(","))
    if args.profile and args.profile_size not in args.sizes:
        parser.error(f"--profile-size {args.profile_size}: not one of --sizes")
    args.only_at = {}
    for item in args.only_at or [DEFAULT_ONLY_AT]:
        size, _, tools = item.partition("=")
        if not size.isdigit() or not set(tools.split(",")) <= set(TOOLS):
            parser.error(f"--only-at {item}: give N=TOOLS, TOOLS among {','.join(TOOLS)}")
        args.only_at[int(size)] = set(tools.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/fanout.py needs root (namespace sandbox hosts, apt-get)", file=sys.stderr)
        return 2
    if not args.no_setup:
        ensure_apt_packages(APT_PACKAGES)
        ensure_tools_venv(args.tools_venv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the clean-up below
    cases = [c for c in all_cases() if c.key in args.tools]
    server = "server" in args.tools and server_supported()
    if "server" in args.tools and not server:
        print("provisor run has no --server yet: skipping the warm (server) cases", flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    compileall.compile_dir(REPO / "src", quiet=1)  # as make does: no compiling in the runs
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    testbed = Testbed(base=BENCH_ROOT / secrets.token_hex(4))
    testbed.block, lock = claim_block(BLOCK_LOCKS)
    workdir = Path(tempfile.mkdtemp(prefix="provisor-fanout-"))
    ws = Workspace(workdir, testbed, args.tools_venv, args.timeout)
    results: dict[str, Any] = {"date": stamp, "complete": False}
    results["versions"] = versions(args.tools_venv)  # the provisor that is measured
    results["source_before"] = source_digest()
    try:
        results["background_cpu_per_s"] = background_cpu()
        t0 = time.perf_counter()
        asyncio.run(start_hosts(testbed, max(args.sizes)))
        print(f"{len(testbed.hosts)} sandbox hosts up in {time.perf_counter() - t0:.1f} s")
        ws.write_files(args.sizes)
        primed = prime_provisor(ws, max(args.sizes))
        print(f"first provisor run (trusts the host keys): {primed}/{max(args.sizes)} answered")
        run_sizes(
            ws,
            cases,
            args.sizes,
            args.repeats,
            server=server,
            slow_seconds=args.slow,
            only_at=args.only_at,
        )
        results["folded"] = folded_sample(ws, max(args.sizes))
        if args.profile:
            print("\nprofiling provisor with py-spy", flush=True)
            results["profile"] = profile_provisor(ws, args.profile_size, stamp, args.profile_before)
        results["complete"] = True
    finally:
        remove_testbed(testbed)
        lock.close()
        shutil.rmtree(workdir, ignore_errors=True)
        write_results(args, results, stamp)
    return 0


def write_results(args: argparse.Namespace, results: dict[str, Any], stamp: str) -> None:
    if not RUNS:
        return
    name = f"fanout-{stamp}.json"
    repeats_text = (
        f"{args.repeats[0]} runs"
        if len(set(args.repeats)) == 1
        else ", ".join(
            f"{r} runs at N = {n}" for n, r in zip(args.sizes, args.repeats, strict=True)
        )
    )
    only_at = {str(n): sorted(tools) for n, tools in args.only_at.items()}
    record_run(results, name, args, repeats_text, profile_size=args.profile_size, only_at=only_at)
    results.update(failures=failures(RUNS), runs=[asdict(m) for m in RUNS])
    rows = summarize(RUNS)
    results["summary"] = [{**asdict(r), "cpu_ms_per_host": r.cpu_ms_per_host} for r in rows]
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=2) + "\n")
    section = render(results, rows)
    print("\n" + section)
    if results["complete"] and not args.no_docs:
        write_section("fanout", section, DOCS)
        print(f"\nwrote bench/results/{name} and {DOCS.relative_to(REPO)}")
    else:
        print(f"\nwrote bench/results/{name} (docs left alone)")


if __name__ == "__main__":
    sys.exit(main())
