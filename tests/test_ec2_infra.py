"""The EC2 test infrastructure itself: moto_server, the fault proxy and the data plane.

Plain boto3 clients without retries, so every fault shows as it is sent."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from botocore.exceptions import ClientError

from ec2_fixtures import MotoEc2
from machines_needed import clean_up_machines, requires_root
from provisor.machines import procs
from provisor.providers.base import MachineState
from provisor.providers.local import LocalProvider
from provisor.testing.ec2plane import DataPlane

ROOT_TEST_DIR = Path("/run/provisor-test")  # outside the directories machines overlay


def run_one(ec2: Any, image: str, **extra: Any) -> str:
    answer = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", **extra
    )
    return str(answer["Instances"][0]["InstanceId"])


def state_of(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:.0f} s")
        time.sleep(0.1)


# --- moto ------------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", [1, 2])
def test_moto_answers_and_starts_empty_for_each_test(moto: MotoEc2, round_: int) -> None:
    ec2 = moto.client(direct=True)
    assert ec2.describe_instances()["Reservations"] == []  # round 2: round 1's is gone
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    ec2.create_key_pair(KeyName="k")
    run_one(ec2, moto.images["debian-12"])
    assert len(ec2.describe_instances()["Reservations"]) == 1


def test_images_are_registered_and_validation_is_on(moto: MotoEc2) -> None:
    ec2 = moto.client(direct=True)
    for name, image_id in moto.images.items():
        found = ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}])["Images"]
        assert [i["ImageId"] for i in found] == [image_id]
    assert moto.server.register_images(["debian-12"], moto.region) == {
        "debian-12": moto.images["debian-12"]
    }
    image = moto.images["debian-12"]
    assert error_code(lambda: run_one(ec2, "ami-0123456789abcdef0")) == "InvalidAMIID.NotFound"
    assert (
        error_code(
            lambda: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="x9.huge")
        )
        == "InvalidInstanceType.NotFound"
    )
    assert error_code(lambda: run_one(ec2, image, KeyName="nope")) == "InvalidKeyPair.NotFound"
    for instance_type in ("t3.micro", "t3.small", "t3.medium", "m5.large"):
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type)


# --- the fault proxy ---------------------------------------------------------------------------


def test_proxy_forwards_and_counts_actions(moto: MotoEc2) -> None:
    ec2 = moto.client()
    instance_id = run_one(ec2, moto.images["ubuntu-24.04"])
    assert state_of(ec2, instance_id) == "running"
    direct = moto.client(direct=True)
    assert state_of(direct, instance_id) == "running"  # it reached moto
    ec2.describe_images(Owners=["self"])
    assert moto.proxy.counts == {"RunInstances": 1, "DescribeInstances": 1, "DescribeImages": 1}
    assert error_code(lambda: state_of(ec2, "i-0123456789abcdef0")) == "InvalidInstanceID.NotFound"
    assert moto.proxy.counts["DescribeInstances"] == 2  # moto's own errors pass through
    moto.proxy.clear()
    assert moto.proxy.counts == {}


def test_throttle_then_pass_and_faults_are_taken_in_order(moto: MotoEc2) -> None:
    ec2 = moto.client()
    moto.proxy.throttle(2, action="DescribeInstances")
    moto.proxy.server_errors(1, status=503)
    # The throttle is for DescribeInstances only; the 503 for the first request of any.
    assert error_code(lambda: ec2.describe_images(Owners=["self"])) == "Unavailable"
    ec2.describe_key_pairs()
    for _ in range(2):
        assert error_code(ec2.describe_instances) == "RequestLimitExceeded"
    assert ec2.describe_instances()["Reservations"] == []
    assert moto.proxy.counts["DescribeInstances"] == 3
    moto.proxy.server_errors(1, status=500)
    with pytest.raises(ClientError) as raised:
        ec2.describe_instances()
    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    moto.proxy.throttle(5)
    moto.proxy.clear()
    ec2.describe_instances()


def test_html_error_is_not_xml(moto: MotoEc2) -> None:
    moto.proxy.html_error(1, status=502)
    request = urllib.request.Request(
        moto.proxy_url, data=b"Action=DescribeInstances&Version=2016-11-15", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 502
    assert raised.value.headers["Content-Type"] == "text/html"
    assert raised.value.read().startswith(b"<html><body><h1>502 Bad Gateway</h1>")
    moto.proxy.html_error(1, action="DescribeInstances")
    ec2 = moto.client()
    assert error_code(ec2.describe_instances) == "500"  # botocore's generic 5xx HTML error
    ec2.describe_instances()


def test_slow_boot_shows_pending_then_running(moto: MotoEc2) -> None:
    ec2 = moto.client()
    before = run_one(ec2, moto.images["debian-12"])
    moto.proxy.slow_boot(3.0)
    booting = run_one(ec2, moto.images["debian-12"])
    reservations = ec2.describe_instances()["Reservations"]
    states = {i["InstanceId"]: i["State"] for r in reservations for i in r["Instances"]}
    assert states == {
        before: {"Code": 16, "Name": "running"},
        booting: {"Code": 0, "Name": "pending"},
    }
    assert state_of(moto.client(direct=True), booting) == "running"  # moto itself
    wait_until(lambda: state_of(ec2, booting) == "running", f"{booting} running")


def test_not_found_after_create(moto: MotoEc2) -> None:
    ec2 = moto.client()
    moto.proxy.not_found_after_create(3.0)
    instance_id = run_one(ec2, moto.images["debian-12"])
    assert error_code(lambda: state_of(ec2, instance_id)) == "InvalidInstanceID.NotFound"
    listed = ec2.describe_instances()["Reservations"]  # not naming it: it is listed
    assert [i["InstanceId"] for r in listed for i in r["Instances"]] == [instance_id]
    ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")  # other action

    def found() -> bool:
        try:
            return state_of(ec2, instance_id) == "running"
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
            return False

    wait_until(found, f"{instance_id} found")


# --- the data plane --------------------------------------------------------------------------


@pytest.fixture
def local_provider(tmp_path: Path) -> Iterator[LocalProvider]:
    """A local provider on a random free 127.X.0.0/16 block, machines outside /tmp."""
    busy = {s.address.packed[1] for s in procs.listeners() if s.address.version == 4}
    block = random.choice([x for x in range(101, 200) if x not in busy])
    hosts_dir = ROOT_TEST_DIR / f"ec2-{secrets.token_hex(4)}"
    hosts_dir.mkdir(parents=True)
    (hosts_dir / ".session-pid").write_text(f"{os.getpid()}\n")  # for `sandbox cleanup`
    try:
        yield LocalProvider(  # cloud machines reach the controller: not contained
            tmp_path / "local-provider",
            network=f"127.{block}.0.0/16",
            hosts_dir=hosts_dir,
            contain=False,
        )
    finally:
        left = [p.name for p in hosts_dir.iterdir() if p.name.startswith("m-")]
        left += [f"process {p}" for p in procs.referring_to(hosts_dir)]
        if left:
            clean_up_machines(hosts_dir)
        shutil.rmtree(hosts_dir, ignore_errors=True)
        assert not left, f"the data plane left machines behind: {left}"


async def ssh_run(address: str, key: asyncssh.SSHKey, command: str, *, tries: int = 1) -> str:
    """`command`'s output as root on `address`; connection refusals retried `tries` times."""
    for attempt in range(1, tries + 1):
        try:
            async with asyncssh.connect(
                address, username="root", client_keys=[key], known_hosts=None
            ) as connection:
                result = await connection.run(command, check=True, timeout=30)
                return str(result.stdout)
        except ConnectionRefusedError:
            if attempt == tries:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


@pytest.mark.testbed
@requires_root
def test_data_plane_mirrors_instances_onto_local_machines(
    moto: MotoEc2, local_provider: LocalProvider, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public_key = key.export_public_key().decode().strip()
    map_file = tmp_path / "ec2-map.json"
    ec2 = moto.client(direct=True)
    plane = DataPlane(moto.url, moto.region, local_provider, public_key, map_file)
    with plane:
        untagged = run_one(ec2, moto.images["debian-12"])
        instance_id = run_one(
            ec2,
            moto.images["debian-12"],
            UserData="#!/bin/sh\necho hi > /root/ud\n",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "provisor:machine", "Value": "m1"},
                        {"Key": "Name", "Value": "m1host"},
                    ],
                }
            ],
        )
        address = plane.wait_mapped(instance_id)
        assert json.loads(map_file.read_text()) == {instance_id: address}
        assert untagged not in plane.mapping()

        async def user_data_ran() -> str:
            for _ in range(300):
                out = await ssh_run(address, key, "hostname; cat /root/ud 2>/dev/null || true")
                if out.endswith("hi\n"):
                    return out
                await asyncio.sleep(0.1)
            console = await local_provider.console_log(machine_id)
            pytest.fail(f"user data did not run; console:\n{console}")

        found = asyncio.run(local_provider.find(instance_id))
        assert found is not None and found.address == address and found.name == "m1"
        machine_id = found.id
        assert asyncio.run(user_data_ran()) == "m1host\nhi\n"

        def local_state() -> MachineState:
            return asyncio.run(local_provider.describe([machine_id]))[0].state

        ec2.stop_instances(InstanceIds=[instance_id])
        wait_until(lambda: local_state() == MachineState.stopped, "stopped locally")
        ec2.start_instances(InstanceIds=[instance_id])
        wait_until(lambda: local_state() == MachineState.running, "running locally")
        # Running once its sshd process is; it answers SSH a moment later, as EC2's do.
        assert asyncio.run(ssh_run(address, key, "cat /root/ud", tries=100)) == "hi\n"

        ec2.terminate_instances(InstanceIds=[instance_id])
        plane.wait_unmapped(instance_id)
        assert json.loads(map_file.read_text()) == {}
        assert local_state() == MachineState.terminated
        assert plane.mapped_addresses == {address}
    assert plane.errors == []
