"""The `ec2` provider: machines on any EC2-compatible cloud (AWS, OpenStack, moto).

The API calls, their errors and the waits are in `_ec2_api`; volumes, addresses and
snapshots in `_ec2_storage`; this module is the provider itself.

Every resource provisor makes carries tags: `provisor:controller` (this
controller, so two installations sharing an account never adopt each other's
machines), `provisor:deployment`, `provisor:machine` and `provisor:token`. A
launch looks the token up by tag before calling RunInstances and passes a client
token too: some EC2 implementations ignore client tokens, none loses tags.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from provisor.providers._ec2_api import (
    Ec2Api,
    Ec2Error,
    client_token,
    tag_filters,
    tag_list,
    tags_from,
    value_filters,
)
from provisor.providers._ec2_settings import Ec2Settings, source_cidr
from provisor.providers._ec2_storage import Ec2Storage
from provisor.providers.base import (
    USER_DATA_DONE,
    Capability,
    IngressRule,
    MachineInfo,
    MachineSpec,
    MachineState,
    ProviderError,
    SnapshotInfo,
)

LAUNCH_TIMEOUT = 600.0
STATES = {
    "pending": MachineState.pending,
    "running": MachineState.running,
    "stopping": MachineState.stopping,
    "shutting-down": MachineState.stopping,
    "stopped": MachineState.stopped,
    "terminated": MachineState.terminated,
}


def wrap_user_data(
    user_data: str | None, host_key_report: str | None = None, *, machine: str = ""
) -> str | None:
    """The user data as the instance gets it: the host-key report first, then the node's.

    cloud-init runs a `#!` user data once at first boot; wrapped, its output goes to
    /var/log/provisor-user-data.log and its status to USER_DATA_DONE. A `#cloud-config`
    keeps its meaning (cloud-init's own boot-finished marks it done), with the report
    as its first `runcmd`. The report's output goes to the console log.
    """
    if user_data and user_data.startswith("#cloud-config"):
        return _cloud_config_with(user_data, host_key_report, machine)
    if user_data and not user_data.startswith("#!"):
        return user_data  # not ours to change (cloud-init reads other formats itself)
    lines = ["#!/bin/sh"]
    if host_key_report:
        lines.append(host_key_report.rstrip("\n"))
    if user_data:
        fence = "PROVISOR_USER_DATA_" + secrets.token_hex(8)
        lines += [
            "mkdir -p /var/lib/provisor",
            f"cat > /var/lib/provisor/user-data <<'{fence}'",
            user_data.rstrip("\n"),
            fence,
            "chmod 0700 /var/lib/provisor/user-data",
            "/var/lib/provisor/user-data > /var/log/provisor-user-data.log 2>&1",
            "status=$?",
            f"echo $status > {USER_DATA_DONE}",
            "exit $status",
        ]
    return "\n".join(lines) + "\n" if len(lines) > 1 else None


MAX_USER_DATA = 16 * 1024
"""EC2's limit on an instance's user data, in bytes before base64."""


def _check_size(user_data: str, given: str | None, machine: str) -> None:
    """Refuse, before RunInstances, user data EC2 would refuse: the node's own and what
    provisor adds to it (the host-key report, the deployment's variables)."""
    size = len(user_data.encode())
    if size > MAX_USER_DATA:
        own = len(given.encode()) if given else 0
        raise ProviderError(
            f"user data is {size:,} bytes with what provisor adds to the node's "
            f"{own:,}; EC2 takes at most {MAX_USER_DATA:,}: make the node's user data shorter",
            machine=machine,
            call="launch",
        )


def _cloud_config_with(document: str, command: str | None, machine: str) -> str:
    """A #cloud-config whose `runcmd` starts with `command` (its meaning otherwise kept;
    YAML comments are not)."""
    if command is None:
        return document
    try:
        config = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise ProviderError(
            f"#cloud-config user data is not valid YAML: {exc}", machine=machine
        ) from None
    config = {} if config is None else config
    if not isinstance(config, dict) or not isinstance(config.get("runcmd") or [], list):
        raise ProviderError(
            "#cloud-config user data must be a mapping, its runcmd a list", machine=machine
        )
    config["runcmd"] = [command, *(config.get("runcmd") or [])]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


class Ec2Provider:
    """Machines, volumes and addresses through the EC2 API."""

    capabilities = frozenset(
        {
            Capability.stop_start,
            Capability.reboot,
            Capability.console,
            Capability.snapshots,
            Capability.volumes,
            Capability.user_data,
            Capability.public_address,
        }
    )

    def __init__(
        self,
        name: str,
        settings: Ec2Settings,
        *,
        secret_access_key: str | None = None,
        controller: str = "",
        controller_address: str | None = None,
        launch_timeout: float = LAUNCH_TIMEOUT,
    ) -> None:
        self.name = name
        self.settings = settings
        self.controller = controller
        self.controller_address = controller_address
        self.launch_timeout = launch_timeout
        self._api = Ec2Api(
            name, settings, secret_access_key=secret_access_key, controller=controller
        )
        self._storage = Ec2Storage(self._api)
        self._setup_locks: dict[str, asyncio.Lock] = {}
        self._made: dict[str, str] = {}  # key pair and security group names -> ids, once known
        self._images: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Ec2Provider({self.name!r}, region={self.settings.region!r})"

    # --- machines -------------------------------------------------------------------------

    def _address_map(self) -> dict[str, str]:
        if not self.settings.address_map:
            return {}
        try:
            data = json.loads(Path(self.settings.address_map).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProviderError(
                f"cannot read the address map {self.settings.address_map}: {exc}"
            ) from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _address(self, instance: dict[str, Any], mapped: Mapping[str, str]) -> str | None:
        if self.settings.address_map:
            return mapped.get(instance["InstanceId"])  # never an address the map does not give
        if self.settings.address == "private":
            return instance.get("PrivateIpAddress") or None
        return instance.get("PublicIpAddress") or None

    def _info(self, instance: dict[str, Any], mapped: Mapping[str, str]) -> MachineInfo:
        tags = tags_from(instance.get("Tags"))
        state = STATES.get(instance.get("State", {}).get("Name", ""), MachineState.error)
        return MachineInfo(
            id=instance["InstanceId"],
            token=tags.get("provisor:token", ""),
            name=tags.get("provisor:machine", instance["InstanceId"]),
            state=state,
            address=None if state is MachineState.terminated else self._address(instance, mapped),
            login_user=self.settings.login_user,
            tags=tags,
        )

    async def find(self, token: str) -> MachineInfo | None:
        instances = await self._api.instances(tag_filters(self._api.own({"provisor:token": token})))
        if not instances:
            return None
        live = [i for i in instances if i["State"]["Name"] != "terminated"]
        if len(live) > 1:
            ids = ", ".join(i["InstanceId"] for i in live)
            raise ProviderError(
                f"more than one live instance has token {token}: {ids}", call="find"
            )
        mapped = self._address_map()
        return self._info((live or instances)[0], mapped)

    async def describe(
        self, ids: Sequence[str] | None = None, *, tags: Mapping[str, str] | None = None
    ) -> list[MachineInfo]:
        filters = tag_filters(self._api.own(tags or {}))
        instances = await self._api.instances(filters, ids)
        mapped = self._address_map()
        return [self._info(i, mapped) for i in instances]

    async def launch(self, spec: MachineSpec) -> MachineInfo:
        """Run the machine (once), attach its volumes and address, wait until it answers."""
        existing = await self.find(spec.token)
        if existing is not None and existing.state is not MachineState.terminated:
            instance_id = existing.id
            if existing.state is MachineState.stopped:  # stopped since: a launch runs it
                await self._api.call("StartInstances", spec.name, InstanceIds=[instance_id])
        else:
            instance_id = await self._run_instance(spec)
            sys.audit("provisor.step", f"ec2-run-instances:{spec.name}")  # made, not yet recorded
        instance = await self._api.wait_state(
            instance_id, "running", spec.name, timeout=self.launch_timeout
        )
        for number, volume in enumerate(spec.volumes):
            await self._storage.attach_volume(spec, instance, number, volume.size_gb, volume.device)
        if spec.public_address:
            await self._storage.associate_address(spec, instance_id)
            instance = {**instance, "PublicIpAddress": None}  # changed: read it again

        async def addressed() -> MachineInfo | None:
            nonlocal instance
            info = self._info(instance, self._address_map())
            if info.address:
                return info
            if not self.settings.address_map:  # the map is re-read; the instance must be
                found = await self._api.instances(ids=[instance_id])
                instance = found[0] if found else instance
            return None

        what = (
            "the address map names the instance"
            if self.settings.address_map
            else f"the instance has a {self.settings.address} address"
        )
        return await self._api.poll(what, addressed, timeout=self.launch_timeout, machine=spec.name)

    async def _run_instance(self, spec: MachineSpec) -> str:
        user_data = wrap_user_data(spec.user_data, spec.host_key_report, machine=spec.name)
        if user_data:  # refused before anything is made for it
            _check_size(user_data, spec.user_data, spec.name)
        group = spec.tags.get("provisor:deployment", spec.name)
        key_name = await self._key_pair(group, spec.ssh_public_key, spec.tags)
        group_id = await self._security_group(group, spec.ingress, spec.tags)
        tags = self._api.own(
            {**spec.tags, "provisor:token": spec.token, "provisor:machine": spec.name}
        )
        params: dict[str, Any] = {
            "ImageId": await self._image(spec.image, spec.name),
            "InstanceType": self.settings.instance_type(
                spec.size.cpu, spec.size.memory_mb, spec.size.flavor
            ),
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "SecurityGroupIds": [group_id],
            "ClientToken": client_token(spec.token),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list({**tags, "Name": spec.hostname})},
            ],
        }
        if user_data:
            params["UserData"] = user_data
        if self.settings.zone:
            params["Placement"] = {"AvailabilityZone": self.settings.zone}
        if self.settings.subnet:
            params["SubnetId"] = self.settings.subnet
        reply = await self._api.call("RunInstances", spec.name, **params)
        instance_id: str = reply["Instances"][0]["InstanceId"]
        return instance_id

    async def _key_pair(self, group: str, public_key: str, tags: Mapping[str, str]) -> str:
        """The deployment's key pair, imported from the controller's key (once)."""
        name = f"provisor-{self.controller or 'x'}-{group}"
        async with self._setup_lock(f"key:{name}"):
            if f"key:{name}" in self._made:
                return name
            reply = await self._api.call(
                "DescribeKeyPairs", Filters=value_filters({"key-name": name})
            )
            if not reply.get("KeyPairs"):
                try:
                    await self._api.call(
                        "ImportKeyPair",
                        KeyName=name,
                        PublicKeyMaterial=public_key.encode(),
                        TagSpecifications=[
                            {
                                "ResourceType": "key-pair",
                                "Tags": tag_list(self._api.own(_group_tags(tags))),
                            }
                        ],
                    )
                except Ec2Error as exc:
                    if exc.code != "InvalidKeyPair.Duplicate":  # another controller process won
                        raise
            self._made[f"key:{name}"] = name
        return name

    async def _security_group(
        self, group: str, ingress: Sequence[IngressRule], tags: Mapping[str, str]
    ) -> str:
        """The deployment's security group: SSH from the controller plus the blueprint's rules."""
        name = f"provisor-{self.controller or 'x'}-{group}"
        async with self._setup_lock(f"group:{name}"):
            if f"group:{name}" in self._made:
                return self._made[f"group:{name}"]
            reply = await self._api.call(
                "DescribeSecurityGroups", Filters=value_filters({"group-name": name})
            )
            if reply.get("SecurityGroups"):
                group_id: str = reply["SecurityGroups"][0]["GroupId"]
                self._made[f"group:{name}"] = group_id
                return group_id
            params: dict[str, Any] = {
                "GroupName": name,
                "Description": f"provisor deployment {group}",
                "TagSpecifications": [
                    {
                        "ResourceType": "security-group",
                        "Tags": tag_list(self._api.own(_group_tags(tags))),
                    }
                ],
            }
            if self.settings.subnet:
                subnets = await self._api.call("DescribeSubnets", SubnetIds=[self.settings.subnet])
                params["VpcId"] = subnets["Subnets"][0]["VpcId"]
            ssh = IngressRule("tcp", (22, 22), self._ssh_source(group))
            created = await self._api.call("CreateSecurityGroup", **params)
            group_id = created["GroupId"]
            rules = [ssh, *ingress]
            await self._api.call(
                "AuthorizeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=_permissions(rules),
            )
            self._made[f"group:{name}"] = group_id
            return group_id

    def _ssh_source(self, group: str) -> str:
        """Who may reach port 22: the settings' `ssh_source`, else the controller alone.
        Never the whole internet by default."""
        if self.settings.ssh_source:
            return self.settings.ssh_source
        if self.controller_address:
            return source_cidr(self.controller_address)
        raise ProviderError(
            f"no ssh_source for deployment {group}'s security group: set the provider's "
            "ssh_source (--ssh-source CIDR, where the controller connects from) or "
            "PROVISOR_PARAMETER_ADDRESS (the controller's address)",
            call="CreateSecurityGroup",
        )

    def _setup_lock(self, key: str) -> asyncio.Lock:
        return self._setup_locks.setdefault(key, asyncio.Lock())

    async def _image(self, image: str, machine: str) -> str:
        """An AMI id: given as one, from the settings' map, or looked up by image name."""
        if image.startswith("ami-"):
            return image
        if image in self.settings.images:
            return self.settings.images[image]
        if image not in self._images:
            reply = await self._api.call(
                "DescribeImages", machine, Filters=value_filters({"name": image})
            )
            images = sorted(reply.get("Images", []), key=lambda i: i.get("CreationDate", ""))
            if not images:
                raise ProviderError(
                    f"no image named {image!r} at {self.settings.endpoint or 'AWS'} "
                    f"({self.settings.region}): map it to an AMI id in the provider's images",
                    machine=machine,
                    call="DescribeImages",
                )
            self._images[image] = images[-1]["ImageId"]
        return self._images[image]

    async def stop(self, machine_id: str) -> MachineInfo:
        await self._api.call("StopInstances", InstanceIds=[machine_id])
        await self._api.wait_state(machine_id, "stopped", machine_id, timeout=self.launch_timeout)
        return (await self.describe([machine_id]))[0]

    async def start(self, machine_id: str) -> MachineInfo:
        await self._api.call("StartInstances", InstanceIds=[machine_id])
        await self._api.wait_state(machine_id, "running", machine_id, timeout=self.launch_timeout)
        return (await self.describe([machine_id]))[0]

    async def reboot(self, machine_id: str) -> MachineInfo:
        await self._api.call("RebootInstances", InstanceIds=[machine_id])
        return (await self.describe([machine_id]))[0]

    async def terminate(self, machine_id: str) -> MachineInfo:
        """Release its address, end it, delete its volumes; safe to repeat."""
        await self._storage.release_addresses(machine_id)
        found = await self._api.instances(ids=[machine_id])
        if found and found[0]["State"]["Name"] != "terminated":
            await self._api.call("TerminateInstances", machine_id, InstanceIds=[machine_id])
        instance = await self._api.wait_state(
            machine_id, "terminated", machine_id, timeout=self.launch_timeout
        )
        await self._storage.delete_volumes(machine_id)
        return self._info(instance, {})

    async def console_log(self, machine_id: str) -> str:
        reply = await self._api.call("GetConsoleOutput", machine_id, InstanceId=machine_id)
        output = reply.get("Output") or ""
        try:
            return base64.b64decode(output, validate=True).decode("utf-8", "replace")
        except ValueError:
            return str(output)

    # --- snapshots and images -------------------------------------------------------------

    async def snapshot(self, machine_id: str, name: str) -> SnapshotInfo:
        """An image (AMI) of the machine; `launch` takes its id as the image. Idempotent by name."""
        return await self._storage.snapshot(machine_id, name)

    async def snapshot_volume(self, volume_id: str, description: str) -> str:
        """A snapshot of one volume (for backups); its id once completed."""
        return await self._storage.snapshot_volume(volume_id, description)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Deregister an image and delete its disk snapshots, or delete a volume snapshot."""
        await self._storage.delete_snapshot(snapshot_id)

    # --- deployments ----------------------------------------------------------------------

    async def clean_up(self, tags: Mapping[str, str]) -> None:
        """Delete the deployment's security group and key pair once no machine is live."""
        filters = tag_filters(self._api.own(tags))
        live = [
            i["InstanceId"]
            for i in await self._api.instances(filters)
            if i["State"]["Name"] != "terminated"
        ]
        if live:
            raise ProviderError(
                f"machines still live, not removing their key pair and group: {', '.join(live)}",
                call="clean_up",
            )
        groups = await self._api.call("DescribeSecurityGroups", Filters=filters)
        for group in groups.get("SecurityGroups", []):
            try:
                await self._api.call("DeleteSecurityGroup", GroupId=group["GroupId"])
            except Ec2Error as exc:
                if exc.code != "InvalidGroup.NotFound":
                    raise
        keys = await self._api.call("DescribeKeyPairs", Filters=filters)
        for key in keys.get("KeyPairs", []):
            await self._api.call("DeleteKeyPair", KeyName=key["KeyName"])
        self._made.clear()  # made again by the next launch that needs them

    async def check(self) -> str:
        reply = await self._api.call("DescribeAvailabilityZones")
        zones = [z["ZoneName"] for z in reply.get("AvailabilityZones", [])]
        where = self.settings.endpoint or "AWS"
        return (
            f"EC2 API at {where}, region {self.settings.region}: zones {', '.join(zones) or 'none'}"
        )

    def close(self) -> None:
        self._api.close()


def _group_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A machine's tags that describe its deployment (not the machine itself)."""
    return {k: v for k, v in tags.items() if k in ("provisor:deployment", "provisor:tenant")}


def _permissions(rules: Sequence[IngressRule]) -> list[dict[str, Any]]:
    permissions = []
    for rule in rules:
        permission: dict[str, Any] = {"IpProtocol": rule.protocol}
        if ":" in rule.source:
            permission["Ipv6Ranges"] = [{"CidrIpv6": rule.source}]
        else:
            permission["IpRanges"] = [{"CidrIp": rule.source}]
        if rule.protocol == "icmp":
            permission.update(FromPort=-1, ToPort=-1)
        else:
            permission.update(FromPort=rule.ports[0], ToPort=rule.ports[1])
        permissions.append(permission)
    return permissions


__all__ = ["Ec2Error", "Ec2Provider", "Ec2Settings", "wrap_user_data"]
