"""Health checks and the recovery ladder end to end on the local provider (real sshd
machines, real processes), through the CLI: a killed web server restarted by the
`command` rung, a stopped machine brought back by `restart`, `reboot` and `replace`,
a provider outage that pauses the checks (one infrastructure alert, no recovery storm),
and a worker SIGKILLed in the middle of a recovery that resumes it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisor.testing import crash
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

WEB_SERVER = """\
        set -eu
        cat > /usr/local/bin/start-web <<'EOF2'
        #!/bin/sh
        # Starts the web server unless it answers already; waits until it does.
        addr=$(provisor-param get "web.$PROVISOR_INDEX.address")
        up() {
          python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \\
            "http://$addr:8080/health" 2>/dev/null
        }
        up && exit 0
        mkdir -p /srv/web && cd /srv/web && echo ok > health
        setsid nohup python3 -m http.server 8080 --bind "$addr" > /srv/web.log 2>&1 < /dev/null &
        for _ in $(seq 1 50); do up && exit 0; sleep 0.2; done
        exit 1
        EOF2
        chmod 0755 /usr/local/bin/start-web
        start-web
"""

BLUEPRINT = f"""\
name: hc
version: "1"
ingress:
  - {{protocol: tcp, ports: 8080}}
nodes:
  web:
    image: debian-12
    checks:
      interval: 1s
      timeout: 1s
      failures: 2
      successes: 1
      probes:
        - provider
        - {{kind: http, port: 8080, path: /health, status: 200, body: "^ok"}}
    recovery:
      - {{action: command, command: start-web, attempts: 2, backoff: 1s}}
      - restart
      - {{action: command, command: start-web}}
    scripts:
      - |
{WEB_SERVER}
  box:
    image: debian-12
    checks: {{interval: 1s, timeout: 1s, failures: 2, successes: 1, probes: [provider, ssh]}}
    recovery: [reboot]
  spare:
    image: debian-12
    checks: {{interval: 1s, timeout: 1s, failures: 2, successes: 1, probes: [provider, ssh]}}
    recovery: [restore-from-backup, replace]
    scripts: ["echo fresh > /root/made-by-script"]
  doomed:
    image: debian-12
    checks:
      interval: 1s
      timeout: 1s
      failures: 2
      successes: 1
      probes: [{{kind: command, command: "test ! -e /root/broken"}}]
    recovery: [{{action: command, command: "true", attempts: 2, backoff: 1s}}]
"""


def _write(tmp_path: Path, text: str = BLUEPRINT) -> Path:
    path = tmp_path / "hc.yaml"
    path.write_text(text)
    return path


KINDS = ("health.", "recovery.", "infrastructure.")


def events(provisor: Provisor, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    found = provisor(
        "events",
        *(option for kind in kinds for option in ("--kind", kind)),
        *("--limit", "1000", "--output", "json"),
    )
    listed: list[dict[str, Any]] = json.loads(found.stdout)
    return listed


def chain(
    provisor: Provisor,
    machine: str,
    after: int = 0,
    *,
    kinds: tuple[str, ...] = KINDS,
    also: tuple[str, ...] = (),
) -> list[str]:
    """The kinds of the events of `machine` (e.g. web.1; or as named in `also`, e.g.
    the backup events' hc-web-1), in order, after event id `after`; the health and
    recovery ones unless `kinds` says otherwise; recovery.step as
    recovery.step:ACTION:OUTCOME."""
    found = []
    for event in events(provisor, kinds):
        details = event["details"]
        if event["id"] <= after or details.get("machine") not in (machine, *also):
            continue
        kind = event["kind"]
        if kind == "recovery.step":
            kind += f":{details['action']}:{details['outcome'].split(':')[0]}"
        found.append(kind)
    return found


def last_id(provisor: Provisor) -> int:
    found = events(provisor)
    return max((e["id"] for e in found), default=0)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(1.0)


def health(provisor: Provisor, deployment: str = "hc") -> dict[str, dict[str, Any]]:
    view = json.loads(provisor("health", deployment, "--output", "json").stdout)
    return {m["machine"]: m for m in view["machines"]}


def all_healthy(provisor: Provisor) -> bool:
    machines = health(provisor)
    return len(machines) == 4 and {m["state"] for m in machines.values()} == {"healthy"}


def on(provisor: Provisor, node: str, command: str) -> str:
    result = provisor(
        "run", f"deployment:hc&tag:node={node}", "--output", "json", "--", command, check=False
    )
    return str(json.loads(result.stdout.splitlines()[0])["stdout"])


def provider_id(provisor: Provisor, name: str) -> str:
    machines = provisor.status("hc")["machines"]
    assert isinstance(machines, list)
    return str(next(m["provider_id"] for m in machines if m["name"] == name))


def stop(provisor: Provisor, name: str) -> None:
    """Power the machine off behind provisor's back, as a crash would."""
    import asyncio

    from provisor.providers.local import LocalProvider

    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    asyncio.run(provider.stop(provider_id(provisor, name)))


def test_the_ladder_brings_machines_back_and_the_events_show_the_chain(
    provisor: Provisor, tmp_path: Path
) -> None:
    provisor("up", str(_write(tmp_path)), "--wait")
    wait_for("every machine healthy", lambda: all_healthy(provisor))
    status = provisor("status", "hc").stdout
    assert "health" in status and "healthy" in status

    # The web server is killed: detected, and the `command` rung starts it again.
    mark = last_id(provisor)
    on(provisor, "web", "pkill -f http.serve[r]; true")
    wait_for("web.1 recovered", lambda: "recovery.succeeded" in chain(provisor, "web.1", mark))
    assert chain(provisor, "web.1", mark) == [
        "health.degraded",
        "health.unhealthy",
        "recovery.started",
        "health.recovered",
        "recovery.step:command:recovered",
        "recovery.succeeded",
    ]
    web = health(provisor)["web.1"]
    assert web["state"] == "healthy" and web["incident"] == 1
    assert [(t["from_state"], t["to_state"]) for t in web["history"]][-4:] == [
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "recovering"),
        ("recovering", "healthy"),
    ]
    found = events(provisor)
    opened = next(e for e in found if e["kind"] == "health.unhealthy")
    assert opened["details"]["severity"] == "critical"
    assert opened["details"]["incident_state"] == "open"
    assert opened["details"]["incident"] == f"health:{provisor.instance('hc')}:web.1"
    resolved = next(e for e in found if e["kind"] == "health.recovered")
    assert resolved["details"]["incident"] == opened["details"]["incident"]
    assert resolved["details"]["incident_state"] == "resolved"

    # The web machine is powered off: the command cannot reach it (twice, backing off),
    # `restart` boots it (its web server not yet running), the next command starts it.
    mark = last_id(provisor)
    stop(provisor, "hc-web-1")
    wait_for("web.1 back", lambda: "recovery.succeeded" in chain(provisor, "web.1", mark))
    assert chain(provisor, "web.1", mark) == [
        "health.degraded",
        "health.unhealthy",
        "recovery.started",
        "recovery.step:command:failed",
        "recovery.step:command:failed",
        "recovery.step:restart:not recovered",
        "health.recovered",
        "recovery.step:command:recovered",
        "recovery.succeeded",
    ]

    # The box is powered off: `reboot` boots it.
    mark = last_id(provisor)
    stop(provisor, "hc-box-1")
    wait_for("box.1 back", lambda: "recovery.succeeded" in chain(provisor, "box.1", mark))
    assert chain(provisor, "box.1", mark)[-3:] == [
        "health.recovered",
        "recovery.step:reboot:recovered",
        "recovery.succeeded",
    ]

    # The spare is powered off and was never backed up: restore-from-backup fails,
    # saying so, and `replace` launches a fresh machine from the blueprint, scripts and all.
    old = provider_id(provisor, "hc-spare-1")
    mark = last_id(provisor)
    stop(provisor, "hc-spare-1")
    wait_for("spare.1 back", lambda: "recovery.succeeded" in chain(provisor, "spare.1", mark))
    steps = [e for e in events(provisor) if e["id"] > mark and e["kind"] == "recovery.step"]
    restore = next(e for e in steps if e["details"]["action"] == "restore-from-backup")
    assert "has no good backup to restore from" in restore["details"]["outcome"]
    assert chain(provisor, "spare.1", mark)[-2:] == [
        "recovery.step:replace:recovered",
        "recovery.succeeded",
    ]
    assert provider_id(provisor, "hc-spare-1") != old
    assert on(provisor, "spare", "cat /root/made-by-script").strip() == "fresh"
    live = [m for m in provisor.machines_of(provisor.instance("hc")) if m["id"] == old]
    assert [m["state"] for m in live] == ["terminated"]
    assert all_healthy(provisor)

    # A ladder that does not help: failed, and the escalation; mended by hand, healthy.
    mark = last_id(provisor)
    on(provisor, "doomed", "touch /root/broken")
    wait_for("doomed.1 failed", lambda: "recovery.failed" in chain(provisor, "doomed.1", mark))
    assert chain(provisor, "doomed.1", mark) == [
        "health.degraded",
        "health.unhealthy",
        "recovery.started",
        "recovery.step:command:not recovered",
        "recovery.step:command:not recovered",
        "recovery.failed",
    ]
    escalated = [e for e in events(provisor) if e["kind"] == "recovery.failed"][-1]
    assert escalated["details"]["severity"] == "critical"
    assert escalated["details"]["escalated"] is True
    assert escalated["details"]["incident_state"] == "open"
    assert health(provisor)["doomed.1"]["state"] == "failed"
    on(provisor, "doomed", "rm /root/broken")
    wait_for("doomed.1 mended", lambda: health(provisor)["doomed.1"]["state"] == "healthy")
    assert chain(provisor, "doomed.1", mark)[-1] == "health.recovered"
    assert all_healthy(provisor)

    # A provider outage: one infrastructure alert, and no machine check meanwhile.
    registry = provisor.home / "local-provider" / "registry.json"
    aside = registry.with_name("registry.json.aside")
    mark = last_id(provisor)
    registry.rename(aside)
    registry.mkdir()  # the provider cannot read its registry: its API is "down"
    try:

        def outage() -> list[dict[str, Any]]:
            found = events(provisor)
            return [e for e in found if e["id"] > mark and e["kind"] == "infrastructure.down"]

        down = wait_for("infrastructure.down", outage)
        assert down[0]["details"]["severity"] == "critical"
        assert down[0]["details"]["incident_state"] == "open"
        on(provisor, "web", "pkill -f http.serve[r]; true")  # SSH does not need the provider
        time.sleep(8)  # many check intervals
        during = [e for e in events(provisor) if e["id"] > mark]
        assert [e["kind"] for e in during] == ["infrastructure.down"]  # one, and nothing else
        paused = json.loads(provisor("health", "hc", "--output", "json").stdout)
        assert [i["key"] for i in paused["infrastructure"]] == ["provider:local"]
    finally:
        registry.rmdir()
        aside.rename(registry)
    wait_for(
        "the web server recovered after the outage",
        lambda: "recovery.succeeded" in chain(provisor, "web.1", mark),
    )
    kinds = [e["kind"] for e in events(provisor) if e["id"] > mark]
    assert kinds.count("infrastructure.down") == kinds.count("infrastructure.up") == 1
    assert kinds.index("infrastructure.up") < kinds.index("health.degraded")


def test_a_worker_killed_during_a_recovery_resumes_it(provisor: Provisor, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    only_web = BLUEPRINT.split("  box:")[0]
    provisor(
        "up",
        str(_write(tmp_path, only_web)),
        "--wait",
        env=crash.environment("recovery-action:hc-web-1", once=killed),
    )
    wait_for("web.1 healthy", lambda: health(provisor)["web.1"]["state"] == "healthy")
    on(provisor, "web", "pkill -f http.serve[r]; true")
    wait_for("the worker killed during the action", killed.exists)
    wait_for("web.1 recovered", lambda: "recovery.succeeded" in chain(provisor, "web.1"))
    log = (provisor.home / "worker.log").read_text()
    assert "was killed by SIGKILL; starting it again" in log, log
    kinds = chain(provisor, "web.1")
    # Resumed, not started again: one recovery of the one incident.
    assert kinds.count("recovery.started") == kinds.count("recovery.succeeded") == 1
    assert kinds.count("health.unhealthy") == 1
    assert kinds[-1] == "recovery.succeeded"
    assert health(provisor)["web.1"]["state"] == "healthy"


def test_infrastructure_key_is_stable(tmp_path: Path) -> None:
    """(No machine needed.) The same outage is one row however often it is seen."""
    from provisor.orchestrator.health_records import infrastructure_changed
    from provisor.store import Store

    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        assert not infrastructure_changed(store, "provider:local", "default", False, "", "p")
        assert infrastructure_changed(store, "provider:local", "default", True, "gone", "p")
        assert not infrastructure_changed(store, "provider:local", "default", True, "gone", "p")
        assert infrastructure_changed(store, "provider:local", "default", False, "", "p")
        assert infrastructure_changed(store, "provider:local", "default", True, "again", "p")
    finally:
        store.close()
