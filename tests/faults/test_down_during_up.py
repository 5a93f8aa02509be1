"""`down` while `up` is on its way leaves nothing at the provider.

The background worker is held at a step of the deployment (provisor.testing.crash's
pause: the worker's event loop stops right there), `down` runs, the worker is let go;
once the worker has nothing left to do, the provider has no machine left running,
on the `local` provider and on EC2 (moto). Where the worker is held inside a step
(after a launch call, before it is recorded), `down` waits for the step to end first.
A worker killed after a launch call, before anything recorded it, leaves a machine
only the provider knows: `down` finds it by the deployment instance's tag.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2_fixtures import MotoEc2
from provisor.providers.local import LocalProvider
from provisor.testing import crash
from provisor.testing.ec2plane import DataPlane
from provisor_cli import Provisor
from test_deploy_ec2 import GuardedProvisor, ec2_cloud

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

BLUEPRINT = """\
name: pair
version: '1'
nodes:
  box:
    image: debian-12
    count: 2
    scripts: ['true']
"""
# Every step boundary of `up`; the ones inside a step hold the deployment's lock.
STEPS = [
    "planned",
    "launching:pair-box-2",
    "launch-called:pair-box-2",
    "launched",
    "reachable",
    "configured:pair-box-1",
    "configured-1",
    "outputs",
]
INSIDE_A_STEP = ("launching:", "launch-called:", "configured:", "ec2-run-instances:")


def _wait_for(what: str, check: object, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {timeout:g}s"
        time.sleep(0.2)


def _worker_ended(provisor: Provisor) -> bool:
    status = json.loads(provisor("worker", "status", "--output", "json").stdout)
    return status["running"] is False


WAITING = "waiting for pair's worker to end its step"


def _down_during(
    provisor: Provisor, step: str, pause: Path, env: dict[str, str], *options: str
) -> str:
    """`up` held at `step`, `down` meanwhile, then the worker let go; `down`'s stderr."""
    provisor("up", str(pause.parent / "pair.yaml"), *options, env=env)
    _wait_for(f"worker at {step}", (pause / "reached").exists)
    down = provisor.popen("down", "pair")
    said: list[str] = []
    waiting = threading.Event()  # down said it waits for the step, or ended

    def read_stderr() -> None:
        assert down.stderr is not None
        for line in down.stderr:
            said.append(line)
            if WAITING in line:
                waiting.set()
        waiting.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert waiting.wait(timeout=180), f"down neither waited nor ended: {''.join(said)}"
    if step.startswith(INSIDE_A_STEP):
        assert down.poll() is None, f"down ended during a step: {''.join(said)}"
    (pause / "release").touch()
    assert down.stdout is not None
    stdout = down.stdout.read()
    down.wait(timeout=300)
    reader.join(timeout=60)
    stderr = "".join(said)
    assert down.returncode == 0, stderr
    assert "deployment pair removed" in stdout
    if step.startswith(INSIDE_A_STEP):
        assert WAITING in stderr
    # Let go, the workflow finds the deployment gone and stops: nothing launched late.
    _wait_for("the worker's end", lambda: _worker_ended(provisor))
    assert json.loads(provisor("deployments", "list", "--output", "json").stdout) == []
    return stderr


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    pause = tmp_path / "pause"
    pause.mkdir()
    (tmp_path / "pair.yaml").write_text(BLUEPRINT)
    return pause


def _local_machines(provisor: Provisor) -> dict[str, str]:
    """Every machine the local provider has, by name: its state."""
    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    return {m.name: m.state.value for m in asyncio.run(provider.describe())}


@pytest.mark.parametrize("step", STEPS)
def test_down_at_each_step_leaves_no_local_machine(
    provisor: Provisor, pair: Path, step: str
) -> None:
    _down_during(provisor, step, pair, crash.pause_environment(step, pair))
    machines = _local_machines(provisor)
    assert set(machines.values()) <= {"terminated"}, machines
    if step != "planned":  # launched before `down`: found, and terminated
        assert set(machines) == {"pair-box-1", "pair-box-2"}
    provisor("up", str(pair.parent / "pair.yaml"), "--wait")  # the name is free again


def test_down_finds_a_launch_nobody_recorded_local(provisor: Provisor, pair: Path) -> None:
    """The worker (a foreground one, so that no supervisor starts it again) is killed
    right after a launch call: only the provider knows that machine."""
    worker = subprocess.Popen(
        [*provisor.command("worker")],
        env={**provisor.env, **crash.environment("launch-called:pair-box-2")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for("the worker", lambda: not _worker_ended(provisor))
    provisor("up", str(pair.parent / "pair.yaml"))  # a worker runs: none is started
    assert worker.wait(timeout=180) == -9
    launched = _local_machines(provisor)
    assert "pair-box-2" in launched and launched["pair-box-2"] != "terminated"
    recorded = provisor.status("pair")["machines"]
    assert all(m["provider_id"] is None for m in recorded)  # type: ignore[index, union-attr]
    result = provisor("down", "pair")
    assert "machines terminated" in result.stdout
    machines = _local_machines(provisor)
    assert set(machines.values()) == {"terminated"} and "pair-box-2" in machines


# On EC2 (moto): the same, the machines being EC2 instances.

EC2_STEPS = [
    "planned",
    "launching:pair-box-2",
    "ec2-run-instances:pair-box-2",
    "launch-called:pair-box-1",
    "launched",
    "configured-1",
]


@pytest.fixture
def cloud(moto: MotoEc2, tmp_path: Path) -> Iterator[tuple[GuardedProvisor, DataPlane, Path]]:
    with ec2_cloud(moto, tmp_path) as made:
        yield made


def _instances(moto: MotoEc2) -> dict[str, str]:
    ec2 = moto.client(direct=True)
    found = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    return {i["InstanceId"]: i["State"]["Name"] for i in found}


def _ec2_leftovers(moto: MotoEc2) -> list[object]:
    """Security groups and key pairs provisor made that are still there."""
    ec2 = moto.client(direct=True)
    tagged = [{"Name": "tag-key", "Values": ["provisor:deployment"]}]
    return [
        *ec2.describe_security_groups(Filters=tagged)["SecurityGroups"],
        *ec2.describe_key_pairs(Filters=tagged)["KeyPairs"],
    ]


@pytest.mark.parametrize("step", EC2_STEPS)
def test_down_at_each_step_leaves_no_ec2_instance(
    cloud: tuple[GuardedProvisor, DataPlane, Path], moto: MotoEc2, pair: Path, step: str
) -> None:
    cli, _, _ = cloud
    # One sitecustomize logs connections and pauses: the guard's path, the pause's variables.
    env = {**crash.pause_environment(step, pair), "PYTHONPATH": cli.env["PYTHONPATH"]}
    _down_during(cli, step, pair, env, "--provider", "moto")
    instances = _instances(moto)
    assert set(instances.values()) <= {"terminated"}, instances
    if step != "planned":
        assert instances  # launched before `down`: found, and terminated
    assert _ec2_leftovers(moto) == []


def test_down_finds_an_instance_nobody_recorded_ec2(
    cloud: tuple[GuardedProvisor, DataPlane, Path], moto: MotoEc2, pair: Path
) -> None:
    cli, _, _ = cloud
    env = {**crash.environment("ec2-run-instances:pair-box-1"), "PYTHONPATH": cli.env["PYTHONPATH"]}
    worker = subprocess.Popen(
        [*cli.command("worker")],
        env={**cli.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for("the worker", lambda: not _worker_ended(cli))
    cli("up", str(pair.parent / "pair.yaml"), "--provider", "moto")
    assert worker.wait(timeout=180) == -9
    assert any(state != "terminated" for state in _instances(moto).values())
    cli("down", "pair")
    instances = _instances(moto)
    assert instances and set(instances.values()) == {"terminated"}, instances
    assert _ec2_leftovers(moto) == []
