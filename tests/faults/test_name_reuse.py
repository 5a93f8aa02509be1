"""A name is free again after `down`: up -> down -> up -> down -> up of one name, each
reaching `ready`, each deployment a new instance (its workflow, machine tokens, provider
tags and events never those of the one before)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

BLUEPRINT = """\
name: again
version: '1'
nodes:
  box:
    image: debian-12
    publishes: [ready]
    scripts: ['provisor-param set ready yes']
"""


def _identity(provisor: Provisor) -> tuple[str, str, list[str]]:
    """The deployment's instance, workflow id and machine tokens, as recorded."""
    with sqlite3.connect(provisor.home / "provisor.db") as db:
        instance, workflow = db.execute(
            "SELECT instance, workflow_id FROM deployments WHERE name = 'again'"
        ).fetchone()
        tokens = [t for (t,) in db.execute("SELECT token FROM machines ORDER BY name")]
    return instance, workflow, tokens


def test_one_name_deployed_three_times(provisor: Provisor, tmp_path: Path) -> None:
    blueprint = tmp_path / "again.yaml"
    blueprint.write_text(BLUEPRINT)
    seen: list[tuple[str, str, str]] = []
    for round_ in range(3):
        result = provisor("up", str(blueprint), "--wait", "--output", "json")
        status = json.loads(result.stdout)
        assert status["state"] == "ready", (round_, status)
        assert status["outputs"] == {} and status["machines"][0]["state"] == "ready"
        instance, workflow, tokens = _identity(provisor)
        assert workflow == f"deploy-{instance}" and tokens == [f"provisor/{instance}/again-box-1"]
        # The provider knows its machine by the instance: none of an earlier one's.
        live = [m for m in provisor.machines_of(instance) if m["state"] == "running"]
        assert [m["name"] for m in live] == ["again-box-1"]
        params = json.loads(provisor("params", "again", "--output", "json").stdout)
        assert {"key": "box.1.ready", "value": "yes", "set_by": "again-box-1"} in params["values"]
        seen.append((instance, workflow, tokens[0]))
        if round_ < 2:
            provisor("down", "again")
            assert {m["state"] for m in provisor.machines_of(instance)} == {"terminated"}
    assert len({s[0] for s in seen}) == len({s[1] for s in seen}) == len({s[2] for s in seen}) == 3
    # Each deployment's events carry its own instance.
    events = json.loads(provisor("events", "-k", "deployment.", "--output", "json").stdout)
    requested = [e["details"]["instance"] for e in events if e["kind"] == "deployment.requested"]
    ready = [e["details"]["instance"] for e in events if e["kind"] == "deployment.ready"]
    removed = [e["details"]["instance"] for e in events if e["kind"] == "deployment.terminated"]
    instances = [s[0] for s in seen]
    assert requested == ready == instances and removed == instances[:2]
