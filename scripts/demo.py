"""`make demo`: a first look at provisor on this computer, in about a minute.

Starts three sandbox hosts (real SSH servers on loopback addresses), brings
them into the inventory, groups them, runs commands on them in parallel, shows
the audit log, and removes everything again. Uses a throw-away PROVISOR_HOME so your
own inventory is untouched.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from provisor import sandbox

HOSTS = [("demo-web1", "127.0.77.11"), ("demo-web2", "127.0.77.12"), ("demo-db1", "127.0.77.21")]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def provisor(*args: str) -> None:
    print(f"$ provisor {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "provisor", *args], check=True)


async def start_hosts(base: Path) -> list[sandbox.SandboxHost]:
    return list(await asyncio.gather(*(sandbox.start(n, a, base_dir=base) for n, a in HOSTS)))


async def stop_hosts(hosts: list[sandbox.SandboxHost]) -> None:
    await asyncio.gather(*(sandbox.stop(h, destroy=True) for h in hosts))


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="provisor-demo-"))
    os.environ["PROVISOR_HOME"] = str(home)
    os.environ.pop("PROVISOR_DATABASE_URL", None)
    os.environ.setdefault("COLUMNS", "120")  # tables stay readable when piped
    base = sandbox.default_base_dir() / "demo"
    say("Starting 3 sandbox hosts (real SSH servers on loopback addresses)")
    hosts = asyncio.run(start_hosts(base))
    try:
        for h in hosts:
            print(f"  {h.name:10} {h.address}:{h.port}  isolation={h.isolation}")
        say("Bringing them into the inventory from an Ansible inventory file")
        inventory = home / "inventory.ini"
        inventory.write_text(
            "[web]\n"
            + "".join(_line(h) + " role=web\n" for h in hosts if "web" in h.name)
            + "\n[db]\n"
            + "".join(_line(h) + " role=db\n" for h in hosts if "db" in h.name)
            + "\n[site:children]\nweb\ndb\n"
        )
        print(inventory.read_text())
        provisor("hosts", "import", str(inventory))
        provisor("hosts", "list")
        say("A smart group: a rule over tags and facts, evaluated when used")
        provisor("groups", "add", "webservers", "--rule", 'tags.role == "web"')
        provisor("groups", "list")
        say("One command on every host of a group, in parallel over SSH")
        provisor("run", "group:site", "--", "hostname; uname -sr")
        say("Identical answers are folded under one node set")
        provisor("run", "group:site", "--output", "fold", "--", "cat /etc/debian_version")
        say("Every host ends in one outcome; failures are reported per host")
        provisor_may_fail(
            "run",
            "demo-web[1-2],demo-db1",
            "-t",
            "2",
            "--",
            "case $(hostname) in *db*) sleep 10;; *) exit 3;; esac",
        )
        provisor("jobs", "list")
        say("The audit log: every change and every job is an event")
        provisor("events", "--limit", "8")
    finally:
        say("Cleaning up: stopping the sandbox hosts")
        asyncio.run(stop_hosts(hosts))
    print(
        "\nDone. Next: `provisor --help`, `provisor server` for the REST API "
        "(http://127.0.0.1:8080/api/v1/docs), and docs/ for the concepts."
    )


def _line(h: sandbox.SandboxHost) -> str:
    return (
        f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
        f"ansible_ssh_private_key_file={h.client_key}"
    )


def provisor_may_fail(*args: str) -> None:
    print(f"$ provisor {shlex.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "provisor", *args], check=False)
    print(f"(exit status {result.returncode})")


if __name__ == "__main__":
    main()
