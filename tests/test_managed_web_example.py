"""examples/blueprints/managed-web.yaml as an operator runs it: deployed, its checks made
faster for the test through `provisor health --set`, its web server killed, and the
first rung of its ladder starting it again; its lease and nightly backup in place."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from provisor_cli import Provisor
from test_blueprints import EXAMPLES
from test_health_recovery import chain, health, last_id, wait_for

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def _web(provisor: Provisor, command: str) -> None:
    provisor("run", "deployment:managed-web", "--", command)


def test_the_managed_web_example_recovers_its_web_server(provisor: Provisor) -> None:
    provisor("up", str(EXAMPLES / "managed-web.yaml"), "--wait")
    url = str(provisor.status("managed-web")["outputs"]["url"])  # type: ignore[index]
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read().decode().startswith("served by ")
    status: dict[str, Any] = provisor.status("managed-web")
    assert status["lease_end"] == "stop" and status["lease_seconds_left"] > 29 * 86400
    provisor(
        *("health", "managed-web", "--set", "interval=1s", "--set", "timeout=1s"),
        *("--set", "failures=2", "--set", "successes=1"),
    )
    wait_for(
        "web.1 healthy",
        lambda: health(provisor, "managed-web").get("web.1", {}).get("state") == "healthy",
    )

    mark = last_id(provisor)
    _web(provisor, "pkill -f http.serve[r]; true")
    wait_for("web.1 recovered", lambda: "recovery.succeeded" in chain(provisor, "web.1", mark))
    assert chain(provisor, "web.1", mark) == [
        "health.degraded",
        "health.unhealthy",
        "recovery.started",
        "health.recovered",
        "recovery.step:command:recovered",
        "recovery.succeeded",
    ]
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
