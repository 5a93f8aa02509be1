"""The `ec2` provider against a real moto_server, through the project's fault proxy."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from ec2_fixtures import MotoEc2
from provisor.providers import IngressRule, MachineSpec, MachineState, ProviderError, VolumeSpec
from provisor.providers.ec2 import USER_DATA_DONE, Ec2Provider, Ec2Settings, wrap_user_data
from provisor.testing import crash

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsa7rJ4hG8J7lDq3cQ7SxZkh7mL3n0wJYfWb0q9b6cN test"
DEPLOYMENT = {"provisor:deployment": "7", "provisor:tenant": "1"}
CONTROLLER = "192.0.2.10"  # where the machines know the controller (PROVISOR_PARAMETER_ADDRESS)


def provider(moto: MotoEc2, **settings: Any) -> Ec2Provider:
    """A provider through the fault proxy, with the credentials a user would store."""
    values = {
        "region": moto.region,
        "endpoint": moto.proxy_url,
        "access_key_id": "testing",
        **settings,
    }
    return Ec2Provider(
        "moto",
        Ec2Settings.parse(values),
        secret_access_key="testing",
        controller="test",
        controller_address=CONTROLLER,
        launch_timeout=60.0,
    )


def spec(name: str, **changes: Any) -> MachineSpec:
    base = MachineSpec(
        token=f"provisor/7/{name}",
        name=name,
        hostname=name.replace("nest-", ""),
        image="debian-12",
        ssh_public_key=KEY,
        tags={**DEPLOYMENT, "provisor:machine": name},
    )
    return dataclasses.replace(base, **changes)


def own(ec2: Any, call: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """What moto has of the deployment (tag provisor:deployment=7)."""
    filters = [{"Name": "tag:provisor:deployment", "Values": ["7"]}]
    reply = getattr(ec2, call)(Filters=filters, **params)
    if key == "Instances":
        return [i for r in reply["Reservations"] for i in r["Instances"]]
    found: list[dict[str, Any]] = reply[key]
    return found


async def test_freenest_runbook_leaves_nothing_behind(moto: MotoEc2) -> None:
    """Key pair, group and rules, machine with user data, volume, address; snapshot,
    image, launch from the image, reboot, stop, start, terminate; then nothing is left."""
    cloud = provider(moto)
    ec2 = moto.client(direct=True)
    web = spec(
        "nest-web",
        user_data="#!/bin/sh\necho hello > /root/hello\n",
        volumes=(VolumeSpec(20, "/srv", "/dev/sdf"),),
        ingress=(IngressRule("tcp", (80, 80)), IngressRule("icmp", source="10.0.0.0/8")),
        public_address=True,
    )
    info = await cloud.launch(web)
    assert info.state is MachineState.running and info.address
    assert info.name == "nest-web" and info.token == web.token

    (key,) = own(ec2, "describe_key_pairs", "KeyPairs")
    (group,) = own(ec2, "describe_security_groups", "SecurityGroups")
    rules = {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), p["IpRanges"][0]["CidrIp"])
        for p in group["IpPermissions"]
    }
    assert rules == {
        ("tcp", 22, 22, f"{CONTROLLER}/32"),  # SSH from the controller alone by default
        ("tcp", 80, 80, "0.0.0.0/0"),
        ("icmp", -1, -1, "10.0.0.0/8"),
    }
    (instance,) = own(ec2, "describe_instances", "Instances")
    assert instance["KeyName"] == key["KeyName"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
    assert instance["InstanceType"] == "t3.nano"  # 1 CPU, 512 MB: the smallest that fits
    assert instance["ImageId"] == moto.images["debian-12"]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["Name"] == "web" and tags["provisor:machine"] == "nest-web"
    user_data = ec2.describe_instance_attribute(InstanceId=info.id, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert "echo hello > /root/hello" in script and USER_DATA_DONE in script
    (volume,) = own(ec2, "describe_volumes", "Volumes")
    assert volume["Size"] == 20 and volume["State"] == "in-use"
    assert [(a["InstanceId"], a["Device"]) for a in volume["Attachments"]] == [
        (info.id, "/dev/sdf")
    ]
    (address,) = own(ec2, "describe_addresses", "Addresses")
    assert address["InstanceId"] == info.id

    again = await cloud.launch(web)  # a retried launch adopts, makes nothing new
    assert again.id == info.id
    assert len(own(ec2, "describe_instances", "Instances")) == 1
    assert len(own(ec2, "describe_volumes", "Volumes")) == 1
    assert len(own(ec2, "describe_addresses", "Addresses")) == 1

    image = await cloud.snapshot(info.id, "nest-web-image")
    assert image.id.startswith("ami-") and image.machine_id == info.id
    assert (await cloud.snapshot(info.id, "nest-web-image")).id == image.id  # once per name
    backup = await cloud.snapshot_volume(volume["VolumeId"], "nest-web data")
    clone = await cloud.launch(spec("nest-clone", image=image.id))
    (cloned,) = [
        i for i in own(ec2, "describe_instances", "Instances") if i["InstanceId"] == clone.id
    ]
    assert cloned["ImageId"] == image.id

    assert (await cloud.reboot(info.id)).state is MachineState.running
    assert (await cloud.stop(info.id)).state is MachineState.stopped
    assert (await cloud.start(info.id)).state is MachineState.running
    await cloud.stop(info.id)
    relaunched = await cloud.launch(web)  # a launch retried after a stop runs it again
    assert relaunched.id == info.id and relaunched.state is MachineState.running
    assert "Linux" in await cloud.console_log(info.id)
    listed = await cloud.describe(tags={"provisor:deployment": "7"})
    assert sorted(m.name for m in listed) == ["nest-clone", "nest-web"]

    for machine in (info, clone):
        assert (await cloud.terminate(machine.id)).state is MachineState.terminated
    assert (await cloud.terminate(info.id)).state is MachineState.terminated  # a no-op
    await cloud.clean_up({"provisor:deployment": "7"})
    await cloud.delete_snapshot(image.id)
    await cloud.delete_snapshot(backup)

    states = {i["State"]["Name"] for i in own(ec2, "describe_instances", "Instances")}
    assert states == {"terminated"}
    assert own(ec2, "describe_volumes", "Volumes") == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert own(ec2, "describe_security_groups", "SecurityGroups") == []
    assert own(ec2, "describe_key_pairs", "KeyPairs") == []
    assert all(i["ImageId"] != image.id for i in ec2.describe_images(Owners=["self"])["Images"])
    assert all(s["SnapshotId"] != backup for s in ec2.describe_snapshots()["Snapshots"])


def _ingress(ec2: Any) -> list[tuple[str, int, int, list[str], list[str]]]:
    """The deployment's security group rules: protocol, ports, IPv4 and IPv6 sources."""
    (group,) = own(ec2, "describe_security_groups", "SecurityGroups")
    return [
        (
            p["IpProtocol"],
            p.get("FromPort"),
            p.get("ToPort"),
            [r["CidrIp"] for r in p.get("IpRanges", [])],
            [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])],
        )
        for p in group["IpPermissions"]
    ]


async def test_ssh_is_open_to_the_configured_source_only(moto: MotoEc2) -> None:
    """Port 22 answers `ssh_source` exactly; without one, the controller's own address;
    the whole internet never, unless a blueprint's rule says so."""
    ec2 = moto.client(direct=True)
    machine = spec("nest-ssh", tags={**DEPLOYMENT, "provisor:machine": "nest-ssh"})
    default = provider(moto)
    await default.launch(machine)
    assert _ingress(ec2) == [("tcp", 22, 22, [f"{CONTROLLER}/32"], [])]
    (group,) = own(ec2, "describe_security_groups", "SecurityGroups")
    assert "0.0.0.0/0" not in str(group["IpPermissions"])  # (egress is EC2's default: all)
    for info in await default.describe(tags=DEPLOYMENT):
        await default.terminate(info.id)
    await default.clean_up(DEPLOYMENT)

    for source, ranges in (
        ("198.51.100.0/24", (["198.51.100.0/24"], [])),
        ("2001:db8::/32", ([], ["2001:db8::/32"])),
    ):
        configured = provider(moto, ssh_source=source)
        info = await configured.launch(machine)
        assert _ingress(ec2) == [("tcp", 22, 22, *ranges)]
        await configured.terminate(info.id)
        await configured.clean_up(DEPLOYMENT)

    settings = {"region": moto.region, "endpoint": moto.proxy_url, "access_key_id": "testing"}
    nowhere = Ec2Provider("moto", Ec2Settings.parse(settings), secret_access_key="testing")
    with pytest.raises(ProviderError, match="no ssh_source for deployment 7") as info:
        await nowhere.launch(machine)
    assert "--ssh-source" in info.value.message
    assert "PROVISOR_PARAMETER_ADDRESS" in info.value.message
    live = [
        i for i in own(ec2, "describe_instances", "Instances") if i["State"]["Name"] != "terminated"
    ]
    assert live == []  # refused before anything ran


async def test_clean_up_refuses_while_machines_live(moto: MotoEc2) -> None:
    cloud = provider(moto)
    await cloud.launch(spec("nest-db"))
    with pytest.raises(ProviderError, match="still live"):
        await cloud.clean_up({"provisor:deployment": "7"})


async def test_throttling_and_server_errors_are_retried(moto: MotoEc2) -> None:
    cloud = provider(moto)
    moto.proxy.throttle(3, action="RunInstances")
    moto.proxy.server_errors(2, 503, action="DescribeInstances")
    moto.proxy.server_errors(1, 500, action="CreateSecurityGroup")
    info = await cloud.launch(spec("nest-web"))
    assert info.state is MachineState.running
    assert moto.proxy.counts["RunInstances"] == 4  # three refused, then done
    assert moto.proxy.counts["CreateSecurityGroup"] == 2
    assert len(own(moto.client(direct=True), "describe_instances", "Instances")) == 1


async def test_slow_boot_and_eventual_consistency_are_waited_out(moto: MotoEc2) -> None:
    cloud = provider(moto)
    moto.proxy.slow_boot(2.0)
    moto.proxy.not_found_after_create(1.0)
    info = await cloud.launch(spec("nest-web", volumes=(VolumeSpec(5, "/srv"),)))
    assert info.state is MachineState.running
    assert moto.proxy.counts["DescribeInstances"] >= 3  # it polled through pending
    (volume,) = own(moto.client(direct=True), "describe_volumes", "Volumes")
    assert volume["Attachments"][0]["Device"] == "/dev/sdf"


async def test_an_html_error_page_is_reported_as_such(moto: MotoEc2) -> None:
    cloud = provider(moto, max_attempts=2)
    moto.proxy.html_error(10, 500, action="RunInstances")
    with pytest.raises(ProviderError) as caught:
        await cloud.launch(spec("nest-web"))
    message = str(caught.value)
    assert "not EC2 XML" in message and "HTTP 500" in message
    assert "nest-web" in message and "RunInstances" in message


async def test_ec2_errors_name_the_machine_the_call_and_the_code(moto: MotoEc2) -> None:
    cloud = provider(moto)
    with pytest.raises(ProviderError) as caught:
        await cloud.launch(
            spec("nest-web", size=dataclasses.replace(spec("x").size, flavor="z9.huge"))
        )
    message = str(caught.value)
    assert "machine nest-web" in message and "RunInstances" in message
    assert "InvalidParameterValue" in message or "InvalidInstanceType" in message
    with pytest.raises(ProviderError, match="no image named 'fedora-1'"):
        await cloud.launch(spec("nest-db", image="fedora-1"))


async def test_an_unreachable_endpoint_or_no_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = {"region": "us-east-1", "endpoint": "http://127.0.0.1:9", "max_attempts": 1}
    anonymous = Ec2Provider("nowhere", Ec2Settings.parse(settings), controller="test")
    with pytest.raises(ProviderError, match="NoCredentials: no credentials"):
        await anonymous.check()
    keyed = Ec2Provider(
        "nowhere",
        Ec2Settings.parse({**settings, "access_key_id": "AKIDEXAMPLE"}),
        secret_access_key="secret",
        controller="test",
    )
    with pytest.raises(ProviderError, match=r"Unreachable: cannot reach http://127\.0\.0\.1:9"):
        await keyed.check()


def test_killed_after_run_instances_makes_no_second_instance(moto: MotoEc2) -> None:
    """SIGKILL right after RunInstances returns; the next launch adopts that instance."""
    program = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_provider_ec2 import provider, spec

        class Moto:
            proxy_url = {moto.proxy_url!r}
            region = {moto.region!r}

        asyncio.run(provider(Moto()).launch(spec("nest-web")))
        """
    )
    crashed = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, **crash.environment("ec2-run-instances:nest-web")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -9, crashed.stderr
    ec2 = moto.client(direct=True)
    (first,) = own(ec2, "describe_instances", "Instances")
    info = asyncio.run(provider(moto).launch(spec("nest-web")))
    assert info.id == first["InstanceId"]
    assert [i["InstanceId"] for i in own(ec2, "describe_instances", "Instances")] == [info.id]


def test_user_data_reports_the_host_keys_before_the_nodes_own() -> None:
    report = "python3 - <<'X' || true\nprint('keys')\nX\n"
    assert wrap_user_data(None) is None
    assert wrap_user_data(None, report) == f"#!/bin/sh\n{report}"
    script = wrap_user_data("#!/bin/sh\necho hi\n", report) or ""
    assert script.index("print('keys')") < script.index("echo hi") < script.index(USER_DATA_DONE)
    document = "#cloud-config\nruncmd:\n  - echo hi\nfinal_message: done  # a comment\n"
    config = wrap_user_data(document, report) or ""
    assert config.startswith("#cloud-config\n")
    assert yaml.safe_load(config) == {"runcmd": [report, "echo hi"], "final_message": "done"}
    assert wrap_user_data(document) == document  # nothing to report: as it was
    with pytest.raises(ProviderError, match="machine m: #cloud-config user data is not valid"):
        wrap_user_data("#cloud-config\nruncmd: [\n", report, machine="m")
    with pytest.raises(ProviderError, match="runcmd a list"):
        wrap_user_data("#cloud-config\nruncmd: echo hi\n", report, machine="m")
