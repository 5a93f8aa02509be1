"""Launch N machines through the `ec2` provider against moto_server, and what a script does.

    python bench/ec2_launch.py [--machines 30] [--repeat 3] [--no-docs]

Side by side in one run, on a freshly reset moto_server each time:
- provisor: `Ec2Provider.launch` for every machine at once (key pair and security
  group once, RunInstances with client token and tags per machine after a lookup by
  tag, wait until running with an address);
- boto3, one call: `run_instances(MinCount=N)` and polling until all run (what
  `aws ec2 run-instances --count N` plus a wait does);
- boto3, a loop: one `run_instances` per machine, then the same polling.
CPU is the client process's own (all threads) and moto_server's, from /proc.
Results go to docs/benchmarks.md between the ec2 markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docsection import markers, write_section

from provisor.providers import MachineSpec
from provisor.providers.ec2 import Ec2Provider, Ec2Settings
from provisor.testing.moto import MotoServer, ec2_client

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = markers("ec2")
REGION = "us-east-1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsa7rJ4hG8J7lDq3cQ7SxZkh7mL3n0wJYfWb0q9b6cN bench"


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def provisor_launch(url: str, image: str, machines: int) -> Callable[[], None]:
    cloud = Ec2Provider(
        "bench",
        Ec2Settings.parse({"region": REGION, "endpoint": url, "access_key_id": "testing"}),
        secret_access_key="testing",  # moto's fake credentials, as ec2_client uses
        controller="bench",
        controller_address="127.0.0.1",  # SSH open to it alone
    )
    specs = [
        MachineSpec(
            token=f"provisor/1/bench-node-{i}",
            name=f"bench-node-{i}",
            hostname=f"node{i}",
            image=image,
            ssh_public_key=KEY,
            tags={"provisor:deployment": "1", "provisor:machine": f"bench-node-{i}"},
        )
        for i in range(1, machines + 1)
    ]

    async def launch_all() -> None:
        infos = await asyncio.gather(*(cloud.launch(s) for s in specs))
        assert len({i.id for i in infos}) == machines

    def run() -> None:
        asyncio.run(launch_all())
        cloud.close()

    return run


def _wait_running(client: Any, ids: list[str]) -> None:
    pause = 0.2
    while True:
        reply = client.describe_instances(InstanceIds=ids)
        states = [i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]]
        if len(states) == len(ids) and all(s == "running" for s in states):
            return
        time.sleep(pause)
        pause = min(pause * 1.5, 3.0)


def boto3_one_call(url: str, image: str, machines: int) -> Callable[[], None]:
    client = ec2_client(url, REGION, attempts=3)

    def run() -> None:
        reply = client.run_instances(
            ImageId=image, InstanceType="t3.nano", MinCount=machines, MaxCount=machines
        )
        _wait_running(client, [i["InstanceId"] for i in reply["Instances"]])

    return run


def boto3_loop(url: str, image: str, machines: int) -> Callable[[], None]:
    client = ec2_client(url, REGION, attempts=3)

    def run() -> None:
        ids = [
            client.run_instances(ImageId=image, InstanceType="t3.nano", MinCount=1, MaxCount=1)[
                "Instances"
            ][0]["InstanceId"]
            for _ in range(machines)
        ]
        _wait_running(client, ids)

    return run


# Each case is prepared (clients made, API models loaded: once per process in real
# use) before the clock starts.
CASES: dict[str, Callable[[str, str, int], Callable[[], None]]] = {
    "provisor ec2 provider (concurrent launches)": provisor_launch,
    "boto3, one run_instances for all": boto3_one_call,
    "boto3, run_instances per machine": boto3_loop,
}


def measure(
    server: MotoServer, case: Callable[[str, str, int], None], machines: int
) -> dict[str, float]:
    server.reset()
    image = server.register_images(["debian-12"], REGION)["debian-12"]
    moto_pid = server.pid
    assert moto_pid is not None
    run = case(server.url, image, machines)
    moto_before, cpu, wall = process_cpu(moto_pid), time.process_time(), time.monotonic()
    run()
    return {
        "wall_s": time.monotonic() - wall,
        "client_cpu_ms": (time.process_time() - cpu) * 1000 / machines,
        "moto_cpu_ms": (process_cpu(moto_pid) - moto_before) * 1000 / machines,
    }


def report(results: dict[str, list[dict[str, float]]], machines: int, repeat: int) -> str:
    def median(case: str, key: str) -> float:
        return statistics.median(r[key] for r in results[case])

    first = next(iter(results))
    rows = []
    for case in results:
        rows.append(
            f"| {case} | {median(case, 'wall_s'):.2f} | {median(case, 'client_cpu_ms'):.1f} | "
            f"{median(case, 'moto_cpu_ms'):.1f} | "
            f"{median(case, 'wall_s') / median(first, 'wall_s'):.2f} | "
            f"{median(case, 'client_cpu_ms') / median(first, 'client_cpu_ms'):.2f} |"
        )
    loop = "boto3, run_instances per machine"
    overhead = median(first, "client_cpu_ms") - median(loop, "client_cpu_ms")
    return "\n".join(
        [
            BEGIN,
            f"## EC2 provider: {machines} machines against moto_server",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"median of {repeat} run(s); `make bench` (bench/ec2_launch.py). Load average at "
            f"the end: {os.getloadavg()[0]:.0f}. moto_server on 127.0.0.1, reset before each "
            "run; no fault proxy.",
            "",
            "| how | wall s | client CPU ms/machine | moto CPU ms/machine | wall ÷ provisor "
            "| client CPU ÷ provisor |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"provisor's own overhead over a plain boto3 loop: {overhead:.1f} ms of client CPU "
            "per machine: the lookup by tag before each launch (exactly-once), the key pair and "
            "security group, tags, waiting per machine rather than for all at once, and the "
            "thread hand-offs. A real cloud takes tens of seconds to boot a machine; none of "
            "that is in these numbers.",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machines", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    log = Path(tempfile.mkdtemp(prefix="provisor-bench-ec2-")) / "moto.log"
    with MotoServer(log) as server:
        for _ in range(args.repeat):
            for case, run in CASES.items():  # interleaved: noise hits every case alike
                result = measure(server, run, args.machines)
                print(case, result, flush=True)
                results[case].append(result)
    section = report(results, args.machines, args.repeat)
    print(section)
    if not args.no_docs:
        write_section("ec2", section)


if __name__ == "__main__":
    main()
