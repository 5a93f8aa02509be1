"""Time from a failure to its detection, and from detection to recovery, per ladder rung.

    python bench/recovery.py [--repeat 3] [--interval 1] [--failures 2] [--no-docs]

One deployment on the local provider (real machines), one node per rung, each with a
one-rung ladder: `command` (its web server killed; the rung starts it again),
`reboot`, `restart` and `replace` (each machine powered off behind provisor's back), and
`restore-from-backup` (its machine backed up with `provisor backup now`, then powered
off and its disk destroyed). The failure's
time is when the web server was killed (the machine's clock, which is this computer's),
or when the provider's stop call returned; detection is the `health.unhealthy` event,
recovery the `recovery.succeeded` event (their times as recorded). Detection takes at
least (failures - 1) x interval by design; the rest is the checks' own latency.
Results go to docs/benchmarks.md between the recovery markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docsection import markers, write_section

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = markers("recovery")
RUNGS = {  # node name: its one-rung ladder's action
    "command": "command",
    "reboot": "reboot",
    "restart": "restart",
    "replace": "replace",
    "restore": "restore-from-backup",
}
START_WEB = """\
        cat > /usr/local/bin/start-web <<'EOF2'
        #!/bin/sh
        addr=$(provisor-param get "$PROVISOR_NODE.$PROVISOR_INDEX.address")
        up() {
          python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)' \\
            "http://$addr:8080/" 2>/dev/null
        }
        up && exit 0
        mkdir -p /srv/web && cd /srv/web
        setsid nohup python3 -m http.server 8080 --bind "$addr" > /srv/web.log 2>&1 < /dev/null &
        for _ in $(seq 1 50); do up && exit 0; sleep 0.2; done
        exit 1
        EOF2
        chmod 0755 /usr/local/bin/start-web && start-web
"""


def blueprint(interval: float, failures: int) -> str:
    checks = (
        f"{{interval: {interval:g}, timeout: {interval:g}, failures: {failures}, successes: 1, "
        "probes: [provider, ssh]}"
    )
    nodes = {
        "command": (
            f"{{interval: {interval:g}, timeout: {interval:g}, failures: {failures}, "
            "successes: 1, probes: [{kind: http, port: 8080}]}",
            "[{action: command, command: start-web}]",
        ),
        "reboot": (checks, "[reboot]"),
        "restart": (checks, "[restart]"),
        "replace": (checks, "[replace]"),
        "restore": (checks, "[restore-from-backup]"),
    }
    text = 'name: rb\nversion: "1"\ningress: [{protocol: tcp, ports: 8080}]\nnodes:\n'
    for node, (check, ladder) in nodes.items():
        text += f"  {node}:\n    image: debian-12\n    checks: {check}\n    recovery: {ladder}\n"
        text += "    scripts:\n      - |\n" + START_WEB
    return text


class Cli:
    def __init__(self, home: Path, network: str) -> None:
        self.home = home
        self.env = {**os.environ, "PROVISOR_HOME": str(home), "PROVISOR_LOCAL_NETWORK": network}
        self.env.pop("PROVISOR_DATABASE_URL", None)

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "provisor", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise SystemExit(f"provisor {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self("events", "-k", "health.", "-k", "recovery.", "-n", "5000", "--output", "json")
        )
        return found


def _when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).replace(tzinfo=UTC).timestamp()


def stop(cli: Cli, name: str, destroy_disk: bool = False) -> None:
    """Power the machine off behind provisor's back; with `destroy_disk`, remove its
    disk (what it wrote on the image) and volumes too, so only a backup has them."""
    from provisor.providers import _local_disk
    from provisor.providers.local import LocalProvider

    status = json.loads(cli("status", "rb", "--output", "json"))
    machine = next(m for m in status["machines"] if m["name"] == name)
    provider = LocalProvider(cli.home / "local-provider", network=cli.env["PROVISOR_LOCAL_NETWORK"])
    asyncio.run(provider.stop(machine["provider_id"]))
    if destroy_disk:
        directory = provider.machine_directory(machine["provider_id"])
        for part in (_local_disk.UPPER, _local_disk.VOLUMES):
            _local_disk.remove_tree(directory / part)


def back_up(cli: Cli, name: str) -> tuple[float, int]:
    """Seconds `provisor backup now` took for one machine (it waits for a good copy), and
    the size of the disk archive stored."""
    started = time.monotonic()
    taken = json.loads(cli("backup", "now", "rb", name, "--timeout", "10m", "--output", "json"))
    if [b["state"] for b in taken] != ["good"]:
        raise SystemExit(f"backup of {name}: {taken}")
    size = sum(o["size"] for o in taken[0]["objects"] if o["name"] == "disk.tar.gz")
    return time.monotonic() - started, size


def measure(cli: Cli, rung: str, timeout: float = 600.0) -> tuple[float, float]:
    """(failure to detection, detection to recovery) of one failure of `rung`'s node."""
    machine = f"{rung}.1"
    seen = max((e["id"] for e in cli.events()), default=0)
    if rung == "command":  # when the server died, by the machine's clock (this one's)
        said = cli(
            "run",
            f"deployment:rb&tag:node={rung}",
            "--output",
            "json",
            "--",
            "pkill -f http.serve[r]; date +%s.%N",
            check=False,
        )
        failed_at = float(json.loads(said.splitlines()[0])["stdout"].split()[-1])
    else:
        stop(cli, f"rb-{rung}-1", destroy_disk=rung == "restore")
        failed_at = time.time()  # powered off by now (its SSH may have stopped a little before)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            e for e in cli.events() if e["id"] > seen and e["details"].get("machine") == machine
        ]
        kinds = {e["kind"]: e for e in found}
        if "recovery.failed" in kinds:
            raise SystemExit(f"{rung}: the ladder failed: {kinds['recovery.failed']}")
        if "recovery.succeeded" in kinds and "health.unhealthy" in kinds:
            detected = _when(kinds["health.unhealthy"])
            return detected - failed_at, _when(kinds["recovery.succeeded"]) - detected
        time.sleep(0.5)
    raise SystemExit(f"{rung}: not recovered within {timeout:g}s")


def healthy(cli: Cli) -> bool:
    view = json.loads(cli("health", "rb", "--output", "json"))
    return bool(view["machines"]) and {m["state"] for m in view["machines"]} == {"healthy"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--failures", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {rung: [] for rung in RUNGS}
    backups: list[tuple[float, int]] = []  # each `backup now`: seconds, disk archive bytes
    with tempfile.TemporaryDirectory() as scratch:
        cli = Cli(Path(scratch) / "home", "127.231.0.0/16")
        path = Path(scratch) / "rb.yaml"
        path.write_text(blueprint(args.interval, args.failures))
        cli("up", str(path), "--wait")
        try:
            for _ in range(args.repeat):
                for rung in RUNGS:
                    deadline = time.monotonic() + 300
                    while not healthy(cli) and time.monotonic() < deadline:
                        time.sleep(0.5)
                    if rung == "restore":
                        backups.append(back_up(cli, f"rb-{rung}-1"))
                        print("backup now {:.2f}s {} bytes".format(*backups[-1]), flush=True)
                    times[rung].append(measure(cli, rung))
                    print(rung, *(f"{t:.2f}s" for t in times[rung][-1]), flush=True)
        finally:
            cli("down", "rb", "--yes", check=False)
            cli("worker", "stop", check=False)
    recovered = {rung: statistics.median(r for _, r in found) for rung, found in times.items()}
    rows = [
        f"| `{RUNGS[rung]}` | {statistics.median(d for d, _ in found):.1f} s "
        f"| {recovered[rung]:.1f} s | {len(found)} |"
        for rung, found in times.items()
    ]
    section = "\n".join(
        [
            BEGIN,
            "## Recovery ladder (`bench/recovery.py`)",
            "",
            f"Checks every {args.interval:g}s, unhealthy after {args.failures} failed rounds, "
            "healthy after 1 good one; one node per rung on the local provider "
            f"({platform.machine()}, {os.cpu_count()} CPUs). Medians of {args.repeat} runs. "
            "Detection takes at least (failures - 1) x interval, plus a round's own time; "
            "recovery is the action and one good round. The `restore-from-backup` machine is "
            "backed up with `provisor backup now` (median "
            f"{statistics.median(s for s, _ in backups):.1f} s) before it is powered off and "
            "its disk destroyed.",
            "",
            "| rung | failure to detection | detection to recovery | runs |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"`restore-from-backup` recovers in {recovered['restore']:.1f} s, "
            f"{'less' if recovered['restore'] < recovered['replace'] else 'more'} than "
            f"`replace`'s {recovered['replace']:.1f} s: it reads back, decrypts and checks "
            f"a {max(b for _, b in backups) / 1000:.0f} kB disk archive (what the machine wrote "
            "over its image; a fuller disk takes longer) and launches from it without running "
            "the node's scripts, where `replace` launches from the image, runs them again "
            "and loses what the machine had written.",
            END,
        ]
    )
    print(section)
    if not args.no_docs:
        write_section("recovery", section)


if __name__ == "__main__":
    main()
