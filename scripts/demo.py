"""`make demo`: a first look at provisor on this computer, in about a minute.

Starts three sandbox hosts (real SSH servers on loopback addresses), brings
them into the inventory, groups them, reaches each over SSH, shows the audit
log, and removes everything again. Uses a throw-away PROVISOR_HOME so your
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
    base = sandbox.default_base_dir() / "demo"
    say("Starting 3 sandbox hosts (real SSH servers on loopback addresses)")
    hosts = asyncio.run(start_hosts(base))
    try:
        for h in hosts:
            print(f"  {h.name:10} {h.address}:{h.port}  isolation={h.isolation}")
        key = hosts[0].client_key
        say("Bringing them into the inventory")
        inventory = home / "hosts.txt"
        inventory.write_text(
            "# a pssh-style hosts file, as many operators already keep one\n"
            + "".join(f"{h.user}@{h.address}:{h.port}\n" for h in hosts)
        )
        provisor("hosts", "import", str(inventory))
        for h in hosts:
            role = "db" if "db" in h.name else "web"
            provisor("hosts", "set", h.address, "--credentials", f"key:{key}", "-t", f"role={role}")
        provisor("hosts", "list")
        say("A static group and a smart group (a rule over tags and facts)")
        provisor("groups", "add", "site", "--description", "everything of the demo")
        provisor("groups", "add", "web", "--parent", "site", "--rule", 'tags.role == "web"')
        provisor("groups", "members", "web")
        say("Reaching every host over SSH with the key provisor recorded")
        for h in hosts:
            result = subprocess.run(
                [
                    "ssh",
                    "-i",
                    str(key),
                    "-p",
                    str(h.port),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    f"{h.user}@{h.address}",
                    "hostname; uname -sr",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            answer = " | ".join(result.stdout.split("\n")[:2]) or result.stderr.strip()
            print(f"  {h.address:13} -> {answer}")
        say("The audit log: every change is an event")
        provisor("events", "--limit", "12")
    finally:
        say("Cleaning up: stopping the sandbox hosts")
        asyncio.run(stop_hosts(hosts))
    print(
        "\nDone. Next: `provisor --help`, `provisor server` for the REST API "
        "(http://127.0.0.1:8080/api/v1/docs), and docs/ for the concepts."
    )


if __name__ == "__main__":
    main()
