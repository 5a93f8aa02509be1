"""Benchmark: start N sandbox hosts at once; time until all answer SSH; memory per idle host.

    sudo .venv/bin/python bench/testbed_startup.py [--hosts 50] [--isolation namespaces]

Wall time is measured from the first `start` call until every host has answered
`hostname` over SSH (asyncssh client, host keys pinned). Memory is the sum over every
process of every host (the top process and all its descendants: unshare and sshd in
namespace mode, the asyncssh server in process mode) of PSS and RSS from
/proc/<pid>/smaps_rollup, divided by the number of hosts, after the hosts idle a second.
PSS splits shared pages between the processes that map them, so it is what a host
really costs; RSS counts shared libraries in full for each process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import sys
import time
from pathlib import Path

import asyncssh

from provisor import machines
from provisor.machines import SandboxHost, procs


def _free_block() -> int:
    busy = {s.address.packed[1] for s in procs.listeners() if s.address.version == 4}
    return random.choice([x for x in range(64, 251) if x not in busy])


async def _hostname(host: SandboxHost) -> str:
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as conn:
        result = await conn.run("hostname", check=True)
        return str(result.stdout).strip()


def _memory(hosts: list[SandboxHost]) -> tuple[int, int, int]:
    """(total PSS kB, total RSS kB, process count) of every process of the hosts."""
    pss = rss = count = 0
    for host in hosts:
        for pid in [host.pid, *procs.descendants(host.pid)]:
            totals = procs.smaps_rollup(pid)
            if totals:
                pss += totals.get("Pss", 0)
                rss += totals.get("Rss", 0)
                count += 1
    return pss, rss, count


async def run(n: int, isolation: machines.Isolation) -> dict[str, float]:
    root = Path("/run/provisor-bench") if os.geteuid() == 0 else Path("/var/tmp/provisor-bench")
    base = root / secrets.token_hex(4)
    block = _free_block()
    names = [(f"bench{i + 1:03d}", f"127.{block}.{i // 250}.{i % 250 + 1}") for i in range(n)]
    hosts: list[SandboxHost] = []
    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(machines.start(nm, a, base_dir=base, isolation=isolation) for nm, a in names),
            return_exceptions=True,
        )
        hosts = [r for r in results if isinstance(r, SandboxHost)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        t_banner = time.perf_counter() - t0
        answers = await asyncio.gather(*(_hostname(h) for h in hosts))
        t_ssh = time.perf_counter() - t0
        assert answers == [h.name for h in hosts], "a host answered with the wrong hostname"
        await asyncio.sleep(1.0)  # let the per-connection sshd processes exit
        pss, rss, procs = _memory(hosts)
        return {
            "hosts": n,
            "banner_s": t_banner,
            "ssh_s": t_ssh,
            "pss_kb": pss / n,
            "rss_kb": rss / n,
            "procs": procs / n,
        }
    finally:
        await asyncio.gather(*(machines.destroy(h) for h in hosts), return_exceptions=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument(
        "--isolation",
        choices=["namespaces", "process", "both"],
        default="namespaces" if os.geteuid() == 0 else "process",
    )
    args = parser.parse_args()
    modes: list[machines.Isolation] = (
        ["namespaces", "process"] if args.isolation == "both" else [args.isolation]
    )
    rows = [(mode, asyncio.run(run(args.hosts, mode))) for mode in modes]
    print(f"\n### Testbed start-up, {args.hosts} hosts at once ({os.cpu_count()} CPUs)\n")
    print(
        "| isolation | all answer banner | all answer `hostname` | PSS / idle host "
        "| RSS / idle host | processes / host |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in rows:
        print(
            f"| {mode} | {r['banner_s']:.2f} s | {r['ssh_s']:.2f} s "
            f"| {r['pss_kb'] / 1024:.2f} MiB | {r['rss_kb'] / 1024:.2f} MiB | {r['procs']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
