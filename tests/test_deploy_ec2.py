"""`webapp.yaml` deployed through the `ec2` provider against moto_server.

moto runs no machines: `DataPlane` gives every instance a real OpenSSH test host
and writes where it answers to the provider's address map. moto reports addresses
of its own (public IPs in 54.214.0.0/16, elastic addresses in 127.0.0.0/8):
provisor must never connect to one of them, which an audit hook in the CLI's
process checks (tests/guardsite/sitecustomize.py, in the CLI and in the background
worker it starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from db_rows import add_deployment, instance_of
from ec2_fixtures import MotoEc2
from provisor import machines
from provisor._asyncssh import asyncssh
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.fleet.results import HostResult
from provisor.fleet.transport import Endpoint, SSHPool
from provisor.orchestrator import machine_ops
from provisor.orchestrator.params import ParameterBoard, ParameterServer, machine_token
from provisor.orchestrator.secrets import (
    controller_public_key,
    parameter_certificate,
    parameter_tls,
)
from provisor.polling import poll_until
from provisor.providers import MachineInfo
from provisor.providers.local import LocalProvider
from provisor.store import Store
from provisor.testing import crash
from provisor.testing.blocks import claim_test_block
from provisor.testing.ec2plane import DataPlane
from test_orchestrator import EXAMPLES, Provisor, webapp_serves

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

GUARD_SITE = Path(__file__).with_name("guardsite")


class GuardedProvisor(Provisor):
    """The CLI, and every process it starts, logging its connections."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        path = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = f"{GUARD_SITE}{os.pathsep}{path}" if path else str(GUARD_SITE)

    def crash_environment(self, step: str, once: Path) -> dict[str, str]:
        """crash.environment, with the connection log still on (one sitecustomize does both)."""
        return {**crash.environment(step, once=once), "PYTHONPATH": self.env["PYTHONPATH"]}


OnLaunched = Callable[[str, MachineInfo], Awaitable[None]]


@contextmanager
def ec2_cloud(
    moto: MotoEc2, tmp_path: Path, on_launched: OnLaunched | None = None
) -> Iterator[tuple[GuardedProvisor, DataPlane, Path]]:
    """The CLI with provider `moto`, and a data plane giving its instances machines."""
    cli = GuardedProvisor(tmp_path / "home")
    log = tmp_path / "connections.log"
    log.touch()
    cli.env["PROVISOR_TEST_CONNECT_LOG"] = str(log)
    block, block_lock = claim_test_block(range(101, 200))
    plane_network = f"127.{block}.0.0/16"
    plane = DataPlane(
        moto.url,
        moto.region,
        # Cloud machines reach the controller over the network: not contained.
        LocalProvider(tmp_path / "plane", network=plane_network, contain=False),
        controller_public_key(cli.home),
        tmp_path / "addresses.json",
        on_launched=on_launched,
    )
    cli(
        "providers",
        "add",
        "moto",
        "--type",
        "ec2",
        "--endpoint",
        moto.proxy_url,
        "--region",
        moto.region,
        "--address-map",
        str(plane.map_file),
        "--access-key-id",
        "testing",
        env={"PROVISOR_SECRET_ACCESS_KEY": "testing"},
    )
    with block_lock, plane:
        yield cli, plane, log
        listed = cli("deployments", "list", "--output", "json", check=False)
        if listed.returncode == 0:
            for deployment in json.loads(listed.stdout):
                cli("down", deployment["name"], check=False)


@pytest.fixture
def cloud(moto: MotoEc2, tmp_path: Path) -> Iterator[tuple[GuardedProvisor, DataPlane, Path]]:
    with ec2_cloud(moto, tmp_path) as made:
        yield made


def _plane_keys(plane: DataPlane) -> dict[str, str]:
    """Instance id -> the host key its machine's sshd presents now."""
    found = asyncio.run(plane.provider.describe())
    return {m.tags["ec2:instance-id"]: m.host_key or "" for m in found if m.state == "running"}


def _connections(log: Path) -> set[str]:
    return {line.split()[0] for line in log.read_text().splitlines()}


def test_webapp_deploys_on_ec2_and_connects_only_where_told(
    cloud: tuple[GuardedProvisor, DataPlane, Path], moto: MotoEc2
) -> None:
    cli, plane, log = cloud
    status = webapp_serves(cli, "--provider", "moto")
    assert status["provider"] == "moto"
    machines = status["machines"]
    assert isinstance(machines, list)
    mapping = plane.mapping()
    assert {m["address"] for m in machines} == set(mapping.values())

    ec2 = moto.client(direct=True)
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(instances) == 4 and set(mapping) == {i["InstanceId"] for i in instances}
    moto_addresses = {i.get("PublicIpAddress") for i in instances} | {
        a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]
    }
    moto_addresses.discard(None)
    assert moto_addresses, "moto reported no addresses of its own: the check proves nothing"
    connected = _connections(log)
    assert set(mapping.values()) <= connected  # the log sees SSH connections
    allowed = {"127.0.0.1"} | plane.mapped_addresses  # the API proxy, parameters, machines
    assert connected - allowed == set(), f"connections nobody mapped: {connected - allowed}"
    # Each machine reported its host keys at first boot; the one pinned before provisor's
    # first connection is the key its sshd presents, recorded for its instance.
    keys = _plane_keys(plane)
    assert cli.host_keys() == sorted(
        (f"machine:moto/{i}", host, keys[i]) for i, host in _host_ids(cli).items()
    )
    params = json.loads(cli("params", "webapp", "--output", "json").stdout)
    reported = {p["key"]: p["set_by"] for p in params["values"] if "host_keys" in p["key"]}
    assert reported == {
        "app.1.host_keys": "webapp-app-1",
        "app.2.host_keys": "webapp-app-2",
        "db.1.host_keys": "webapp-db-1",
        "lb.1.host_keys": "webapp-lb-1",
    }

    cli("down", "webapp")
    assert cli.host_keys() == []
    after = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert {i["State"]["Name"] for i in after} == {"terminated"}
    assert ec2.describe_addresses()["Addresses"] == []
    tagged = [{"Name": "tag-key", "Values": ["provisor:deployment"]}]
    assert ec2.describe_volumes(Filters=tagged)["Volumes"] == []
    assert ec2.describe_security_groups(Filters=tagged)["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=tagged)["KeyPairs"] == []
    assert _connections(log) - allowed == set()


def _host_ids(cli: GuardedProvisor) -> dict[str, int]:
    """Instance id -> the id of its machine's inventory host."""
    with sqlite3.connect(cli.home / "provisor.db") as db:
        rows = db.execute(
            "SELECT m.provider_id, h.id FROM machines AS m JOIN hosts AS h ON h.name = m.name"
        ).fetchall()
    return {instance: host for instance, host in rows}


def test_a_machine_presenting_another_key_than_it_reported_is_refused(
    moto: MotoEc2, tmp_path: Path
) -> None:
    """webapp-db-1 reports its keys at first boot, then its sshd gets another key before
    provisor first connects: the deployment fails at reachability, naming the machine and
    both keys, and the key pinned stays the reported one (nothing trusted on first use)."""
    presented: dict[str, str] = {}

    async def rekey_db(instance_id: str, info: MachineInfo) -> None:
        if info.name != "webapp-db-1":
            return
        plane_provider = plane.provider

        async def reported() -> bool:  # the report is all of its user data
            return await plane_provider.user_data_status(info.id) is not None

        assert await poll_until(reported, timeout=120)
        host = machines.load(info.id, plane_provider.machine_directory(info.id).parent)
        assert host is not None
        presented[instance_id] = (await machines.rekey(host)).host_public_key

    with ec2_cloud(moto, tmp_path, on_launched=rekey_db) as (cli, plane, _):
        result = cli(
            "up", str(EXAMPLES / "webapp.yaml"), "--provider", "moto", "--wait", check=False
        )
        assert result.returncode != 0
        status = cli.status("webapp")
        assert status["state"] == "failed"
        error = str(status["error"])
        assert error.startswith("reachable on webapp-db-1: SSH refused: host key of webapp-db-1")
        assert "is not the one trusted for it" in error
        ((instance_id, key),) = presented.items()
        offered = asyncssh.import_public_key(key).get_fingerprint()
        assert f"offered {offered}" in error
        pinned = dict((s, k) for s, _, k in cli.host_keys())[f"machine:moto/{instance_id}"]
        params = json.loads(cli("params", "webapp", "--output", "json").stdout)
        reported = {p["key"]: p["value"] for p in params["values"]}["db.1.host_keys"]
        assert pinned in reported.splitlines() and pinned != key


@pytest.mark.parametrize("machine", ["webapp-db-1", "webapp-lb-1"])
def test_controller_killed_after_run_instances_resumes_with_one_instance(
    cloud: tuple[GuardedProvisor, DataPlane, Path], moto: MotoEc2, machine: str, tmp_path: Path
) -> None:
    """SIGKILL right after RunInstances answered, before the launch is checkpointed."""
    cli, _, _ = cloud
    killed = tmp_path / "killed"
    cli(
        "up",
        str(EXAMPLES / "webapp.yaml"),
        "--provider",
        "moto",
        "--wait",
        env=cli.crash_environment(f"ec2-run-instances:{machine}", killed),
    )
    assert killed.exists()  # killed after the call, before anything recorded it
    assert "was killed by SIGKILL" in (cli.home / "worker.log").read_text()
    ec2 = moto.client(direct=True)
    by_tag = [{"Name": "tag:provisor:machine", "Values": [machine]}]
    made = [
        i for r in ec2.describe_instances(Filters=by_tag)["Reservations"] for i in r["Instances"]
    ]
    assert len(made) == 1  # its supervisor started the worker again: no second instance
    status = cli.status("webapp")
    assert status["state"] == "ready", status
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    live = [i for i in instances if i["State"]["Name"] != "terminated"]
    names = sorted(
        next(t["Value"] for t in i["Tags"] if t["Key"] == "provisor:machine") for i in live
    )
    assert names == ["webapp-app-1", "webapp-app-2", "webapp-db-1", "webapp-lb-1"]
    assert [i["InstanceId"] for i in live if i["InstanceId"] == made[0]["InstanceId"]]


def test_prepare_waits_for_cloud_init_and_installs_the_agent(testbed: Any, tmp_path: Path) -> None:
    """On a cloud image a #cloud-config leaves no provisor mark: cloud-init's own counts.
    Then the agent is in place: it answers the values it was given by itself, and calls
    the controller over HTTPS, trusting the controller's certificate and no other."""
    (host,) = testbed(1)
    endpoint = Endpoint(host.name, host.address, host.port, host.user, str(host.client_key))
    store = Store(f"sqlite:///{tmp_path / 'provisor.db'}")
    deployment_id = add_deployment(store, "lab", machines=[("box", 1)])
    secret = b"s" * 32

    async def scenario() -> str:
        ssh = SSHPool()
        pool = ssh.scoped(DatabaseHostKeys(store, tenant_id=1))  # add_deployment's tenant
        board = ParameterBoard(store)
        server = ParameterServer(board, secret, parameter_tls(tmp_path))
        url = await server.start()

        async def prepare(timeout: float) -> None:
            setup = machine_ops.Setup(
                url=url,
                certificate=parameter_certificate(tmp_path),
                token=machine_token(secret, instance_of(store, deployment_id), "lab-box-1"),
                env={},
                known={"box.1.address": host.address},
                scripts=["true"],
                user_data=True,
            )
            await machine_ops.prepare(pool, endpoint, setup, timeout=timeout)

        async def on_machine(command: str) -> HostResult:
            return await machine_ops.run(pool, endpoint, command, timeout=60.0)

        try:
            with pytest.raises(machine_ops.MachineStepError, match="still running after 2s"):
                await prepare(2.0)
            finish = f"mkdir -p /var/lib/cloud/instance && touch {machine_ops.CLOUD_INIT_DONE}"
            assert (await on_machine(finish)).ok
            await prepare(30.0)
            marker = await on_machine(f"cat {machine_ops.USER_DATA_DONE}")
            assert url.startswith("https://")
            calls = "provisor-param set ready yes && provisor-param get box.1.ready"
            assert (await on_machine(calls)).text().strip() == "yes"
            assert await board.wait(deployment_id, "box.1.ready", 0, waiter="test") == "yes"
            # Another certificate in its place (a controller impostor): refused. The
            # value provisor gave it is still answered on the machine alone.
            other = shlex.quote(parameter_certificate(tmp_path / "other"))
            forged = f"printf %s {other} > /etc/provisor/param.crt"
            assert (await on_machine(forged)).ok
            refused = await on_machine("provisor-param get box.1.ready")
            assert refused.exit_code == 3
            assert "CERTIFICATE_VERIFY_FAILED" in refused.text("stderr")
            answered = await on_machine("provisor-param get box.1.address")
            assert answered.text().strip() == host.address
            return marker.text().strip()
        finally:
            await server.stop()
            await ssh.close()

    assert asyncio.run(scenario()) == "0"
    store.close()
