"""The recovery ladder's `restore-from-backup` end to end on the local provider (real
sshd machines, real processes, a real disk destroyed), through the CLI: a web server
behind the load balancer of examples/blueprints/webapp.yaml loses its disk, is rebuilt
from its last good backup, and the load balancer's URL answers from both web servers
again; the events show the whole chain."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisor.providers import _local_disk
from provisor.providers.local import LocalProvider
from provisor_cli import Provisor
from test_backups import EXAMPLES, machine_names, on
from test_health_recovery import WEB_SERVER, chain, last_id, wait_for

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# Two web servers (test_health_recovery's, serving their hostname) with checks, and a
# ladder whose first rung is the restore; its second starts the web server, as nothing
# on a local machine starts it at boot. `start-web` is a file of the web server's disk:
# that it runs at all after the disk was destroyed says the restore brought the disk back.
WEB = f"""\
count: 2
image: debian-12
networks: [{{name: backend, ip: static}}]
publishes: [ready]
checks:
  interval: 1s
  timeout: 1s
  failures: 2
  successes: 1
  probes:
    - provider
    - {{kind: http, port: 8080, path: /health, status: 200, body: "^ok"}}
recovery:
  - restore-from-backup
  - {{action: command, command: start-web}}
scripts:
  - |
{WEB_SERVER}
        hostname > /srv/web/index.html
        provisor-param set ready true
"""


def blueprint(tmp_path: Path) -> Path:
    """webapp.yaml's load balancer (its port parameter and output) in front of the
    web servers."""
    webapp = yaml.safe_load((EXAMPLES / "webapp.yaml").read_text())
    lb = webapp["nodes"]["lb"]
    lb["waits_for"] = ["web.ready", "web.address"]
    lb["scripts"] = [
        script.replace('"app.$i.address"', '"web.$i.address"').replace(
            "PROVISOR_COUNT_APP", "PROVISOR_COUNT_WEB"
        )
        for script in lb["scripts"]
    ]
    text = {
        "name": "rb",
        "version": "1",
        "ingress": [{"protocol": "tcp", "ports": 8080}],
        "parameters": {"app_port": webapp["parameters"]["app_port"]},
        "nodes": {"web": yaml.safe_load(WEB), "lb": lb},
        "outputs": {"url": webapp["outputs"]["url"]},
    }
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    return path


def answers(url: str, tries: int = 6) -> list[str]:
    """What the load balancer answers to `tries` requests (round robin): each the body
    of a 200, or the status or error otherwise."""
    found = []
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                found.append(reply.read().decode().strip() if reply.status == 200 else "?")
        except urllib.error.HTTPError as exc:
            found.append(f"HTTP {exc.code}")
        except OSError as exc:
            found.append(f"error {exc}")
    return found


def destroy_disk(provisor: Provisor, machine_id: str) -> None:
    """The machine powered off behind provisor's back and its disk (the copy-on-write
    upper dirs, everything it wrote) removed, as a dead disk would leave it."""
    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    asyncio.run(provider.stop(machine_id))
    disk = provider.machine_directory(machine_id) / _local_disk.UPPER
    assert disk.is_dir(), disk
    shutil.rmtree(disk)


def machine_row(provisor: Provisor, name: str) -> dict[str, Any]:
    """The machine `name` of the deployment as `provisor status` shows it."""
    machines = provisor.status("rb")["machines"]
    assert isinstance(machines, list)
    found: dict[str, Any] = next(m for m in machines if m["name"] == name)
    return found


def health_of(provisor: Provisor, machine: str) -> dict[str, Any]:
    view = json.loads(provisor("health", "rb", "--output", "json").stdout)
    return next(m for m in view["machines"] if m["machine"] == machine)


def test_a_destroyed_disk_is_restored_from_the_last_good_backup(
    provisor: Provisor, tmp_path: Path
) -> None:
    provisor("up", str(blueprint(tmp_path)), "--wait")
    status = provisor.status("rb")
    outputs = status["outputs"]
    assert isinstance(outputs, dict)
    url = str(outputs["url"])
    assert sorted(set(answers(url))) == ["web1", "web2"]  # round robin over both
    wait_for("web.1 healthy", lambda: health_of(provisor, "web.1")["state"] == "healthy")
    names = machine_names(provisor, "rb")
    name = names["web.1"]
    before, lb = machine_row(provisor, name), machine_row(provisor, names["lb.1"])

    on(provisor, name, "echo before-the-crash > /root/marker")
    taken = json.loads(provisor("backup", "now", "rb", name, "--output", "json").stdout)
    assert [b["state"] for b in taken] == ["good"], taken
    on(provisor, name, "echo after-the-backup > /root/marker")  # lost with the disk

    mark = last_id(provisor)
    destroy_disk(provisor, before["provider_id"])

    def since_the_crash() -> list[str]:
        # The restore's events name the machine as the backup's do (rb-web-1).
        kinds = ("health.", "recovery.", "restore.")
        return chain(provisor, "web.1", mark, kinds=kinds, also=(name,))

    def restored() -> bool:
        found = since_the_crash()
        assert "recovery.failed" not in found, found
        return "recovery.succeeded" in found

    wait_for("web.1 restored from its backup and healthy", restored, timeout=400)
    assert since_the_crash() == [
        "health.degraded",
        "health.unhealthy",
        "recovery.started",
        "restore.started",
        "restore.completed",
        # Restored, but nothing starts the web server at boot: the next rung does.
        "recovery.step:restore-from-backup:not recovered",
        "health.recovered",
        "recovery.step:command:recovered",
        "recovery.succeeded",
    ]
    completed = [
        e
        for e in json.loads(
            provisor("events", "--kind", "restore.completed", "--output", "json").stdout
        )
        if e["id"] > mark
    ]
    assert [e["details"]["backup"] for e in completed] == [taken[0]["id"]]
    assert completed[0]["details"]["how"] == "replacement"
    # The node's checks ran on the restored machine before the old one was retired: the
    # web server was not started yet, so they said what failed.
    assert completed[0]["details"]["checks"] not in (None, "ok"), completed[0]["details"]

    # The disk as it was backed up, on a new machine with the old one's identity.
    assert on(provisor, name, "cat /root/marker").strip() == "before-the-crash"
    assert on(provisor, name, "hostname").strip() == "web1"
    after = machine_row(provisor, name)
    assert after["provider_id"] != before["provider_id"] and after["state"] == "ready"
    assert after["address"] == before["address"]  # where the provider can: local can
    live = {m["id"]: m["state"] for m in provisor.machines_of(provisor.instance("rb"))}
    assert live[before["provider_id"]] == "terminated"
    assert health_of(provisor, "web.1")["state"] == "healthy"

    # The load balancer, untouched, answers from both web servers again.
    assert machine_row(provisor, names["lb.1"])["provider_id"] == lb["provider_id"]
    wait_for(
        "the load balancer answers from both web servers",
        lambda: sorted(set(answers(url))) == ["web1", "web2"],
        timeout=60,
    )
    assert set(answers(url)) == {"web1", "web2"}, answers(url)
