"""`make demo`: provisor's main job on this computer, in a couple of minutes.

Deploys examples/blueprints/webapp.yaml (a load balancer, two app servers and a
key-value store, four real SSH-reachable machines on loopback addresses) on the
embedded default (SQLite in your data directory, the `local` provider), shows
its outputs, fetches the URL it serves, runs a fleet command on its machines,
and leaves it running for you to explore; it ends by saying how to remove it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "examples" / "blueprints" / "webapp.yaml"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def provisor(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    print(f"$ provisor {shlex.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "provisor", *args], check=check, text=True)


def quiet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisor", *args], capture_output=True, text=True, check=False
    )


def main() -> None:
    os.environ.setdefault("COLUMNS", "120")  # tables stay readable when piped
    if quiet("status", "webapp").returncode == 0:
        say("A webapp deployment from an earlier demo exists: removing it first")
        provisor("down", "webapp")
    say("Checking the blueprint: every error would be shown with its line and column")
    provisor("blueprints", "validate", str(BLUEPRINT))
    say("Deploying it: launch 4 machines, configure them in order, deliver the outputs")
    deployed = provisor("up", str(BLUEPRINT), "--wait", check=False)
    if deployed.returncode != 0:
        provisor("status", "webapp", check=False)
        raise SystemExit("the deployment failed; the reports are under the data directory")
    status = json.loads(quiet("status", "webapp", "--output", "json").stdout)
    url = status["outputs"]["url"]
    if not url.startswith("http://127."):
        raise SystemExit(f"unexpected url {url!r}: the local provider serves on loopback")
    say(f"The load balancer answers at {url} (round robin over the two app servers)")
    for _ in range(3):
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - checked above
            print(f"  GET {url} -> {reply.read().decode().strip()}")
    say("Its machines are inventory hosts: run a command on all of them in parallel")
    provisor("run", "deployment:webapp", "--", "hostname; uptime")
    say("Runtime parameters the machines published to each other")
    provisor("params", "webapp")
    print(
        "\nThe deployment keeps running. Look around with `provisor status webapp`,\n"
        "`provisor run deployment:webapp -- ps -ef`, `provisor events`, `provisor --help`.\n"
        "Remove it with:  .venv/bin/provisor down webapp"
    )


if __name__ == "__main__":
    main()
