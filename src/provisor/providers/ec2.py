"""The `ec2` provider: machines on any EC2-compatible cloud (AWS, OpenStack, moto).

boto3 does the protocol; its calls block, so they run in a thread pool of the
provider's own (the default executor's handful of threads would serialise a
30-machine launch). botocore's standard retry mode retries throttling and 5xx
with jittered backoff; provisor's own waits poll briefly with jitter instead of
boto3's waiters (15 s x 40).

Every resource provisor makes carries tags: `provisor:controller` (this
controller, so two installations sharing an account never adopt each other's
machines), `provisor:deployment`, `provisor:machine` and `provisor:token`. A
launch looks the token up by tag before calling RunInstances and passes a client
token too: some EC2 implementations ignore client tokens, none loses tags.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from provisor.crashpoints import crash_point
from provisor.providers._ec2_settings import Ec2Settings
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

T = TypeVar("T")

LAUNCH_TIMEOUT = 600.0
STATES = {
    "pending": MachineState.pending,
    "running": MachineState.running,
    "stopping": MachineState.stopping,
    "shutting-down": MachineState.stopping,
    "stopped": MachineState.stopped,
    "terminated": MachineState.terminated,
}
# Errors that mean "not there (yet)": EC2 is eventually consistent after a create.
NOT_FOUND = (
    "InvalidInstanceID.NotFound",
    "InvalidVolume.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidSnapshot.NotFound",
)


@dataclass
class _Wait:
    state: str
    machine: str
    deadline: float
    future: asyncio.Future[dict[str, Any]]


class Ec2Error(ProviderError):
    """An EC2 API call failed: which machine, which call, the EC2 error code."""

    def __init__(self, message: str, *, code: str, machine: str | None, call: str) -> None:
        super().__init__(f"{code}: {message}", machine=machine, call=call)
        self.code = code


def _client_token(token: str) -> str:
    """EC2 client tokens are at most 64 ASCII characters."""
    return (
        token
        if len(token) <= 64 and token.isascii()
        else hashlib.sha256(token.encode()).hexdigest()
    )


def _tags(pairs: Sequence[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in pairs or ()}


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _filters(values: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    return [
        {"Name": name, "Values": [v] if isinstance(v, str) else list(v)}
        for name, v in values.items()
    ]


def _tag_filters(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]


def wrap_user_data(user_data: str | None) -> str | None:
    """A shell script records its exit status where the orchestrator looks for it.

    cloud-init runs a `#!` user data once at first boot; wrapped, its output goes to
    /var/log/provisor-user-data.log and its status to USER_DATA_DONE. `#cloud-config`
    is left as it is (cloud-init's own boot-finished marks it done).
    """
    if not user_data or not user_data.startswith("#!"):
        return user_data
    fence = "PROVISOR_USER_DATA_" + secrets.token_hex(8)
    return (
        "#!/bin/sh\n"
        "mkdir -p /var/lib/provisor\n"
        f"cat > /var/lib/provisor/user-data <<'{fence}'\n"
        f"{user_data.rstrip(chr(10))}\n"
        f"{fence}\n"
        "chmod 0700 /var/lib/provisor/user-data\n"
        "/var/lib/provisor/user-data > /var/log/provisor-user-data.log 2>&1\n"
        "status=$?\n"
        f"echo $status > {USER_DATA_DONE}\n"
        "exit $status\n"
    )


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
        launch_timeout: float = LAUNCH_TIMEOUT,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.name = name
        self.settings = settings
        self.controller = controller
        self.launch_timeout = launch_timeout
        credentials: dict[str, str] = {}
        if settings.access_key_id:
            if not secret_access_key:
                raise ProviderError(
                    f"provider {name} has an access key id but no secret access key",
                    call="configure",
                )
            credentials = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": secret_access_key,
            }
        config = Config(
            region_name=settings.region,
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=min(settings.call_timeout, 10.0),
            read_timeout=settings.call_timeout,
            max_pool_connections=32,
            user_agent_extra="provisor",
        )
        session = boto3.session.Session(**credentials)
        self._ec2 = session.client("ec2", endpoint_url=settings.endpoint, config=config)
        self._threads = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix=f"ec2-{name}")
        self._setup_locks: dict[str, asyncio.Lock] = {}
        self._made: dict[str, str] = {}  # key pair and security group names -> ids, once known
        self._images: dict[str, str] = {}
        self._waits: dict[str, list[_Wait]] = {}  # instance id -> who waits for which state
        self._poll_soon = False  # a new wait: poll again quickly
        self._poller: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Ec2Provider({self.name!r}, region={self.settings.region!r})"

    # --- calls ----------------------------------------------------------------------------

    async def _call(self, call: str, machine: str | None = None, **params: Any) -> dict[str, Any]:
        """One API call off the event loop; every failure becomes an Ec2Error."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.parsers import ResponseParserError

        method = getattr(self._ec2, _snake(call))
        loop = asyncio.get_running_loop()
        try:
            reply: dict[str, Any] = await loop.run_in_executor(
                self._threads, lambda: method(**params)
            )
            return reply
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit():  # no EC2 error document: botocore made one from the status
                raise Ec2Error(
                    f"the endpoint answered HTTP {status or code} with a response that is not "
                    f"EC2 XML ({self.settings.endpoint or 'AWS'})",
                    code=f"HTTP{status or code}",
                    machine=machine,
                    call=call,
                ) from None
            raise Ec2Error(
                str(error.get("Message") or "no message"), code=code, machine=machine, call=call
            ) from None
        except ResponseParserError as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise Ec2Error(
                f"the endpoint's answer is not valid EC2 XML: {first}",
                code="InvalidResponse",
                machine=machine,
                call=call,
            ) from None
        except NoCredentialsError:
            raise Ec2Error(
                "no credentials: give the provider an access key or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY",
                code="NoCredentials",
                machine=machine,
                call=call,
            ) from None
        except BotoConnectionError as exc:
            raise Ec2Error(
                f"cannot reach {self.settings.endpoint or 'the AWS endpoint'}: {exc}",
                code="Unreachable",
                machine=machine,
                call=call,
            ) from None
        except BotoCoreError as exc:
            raise Ec2Error(str(exc), code=type(exc).__name__, machine=machine, call=call) from None

    async def _poll(
        self,
        what: str,
        check: Callable[[], Awaitable[T | None]],
        *,
        timeout: float,
        machine: str | None = None,
    ) -> T:
        """Until `check` gives a value: short jittered pauses, bounded by `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.2
        while True:
            try:
                found = await check()
            except Ec2Error as exc:
                if exc.code not in NOT_FOUND:
                    raise
                found = None  # just created, not visible yet
            if found is not None:
                return found
            if loop.time() + pause > deadline:
                raise ProviderError(f"{what}: not done after {timeout:g}s", machine=machine)
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            pause = min(pause * 1.5, 3.0)

    # --- machines -------------------------------------------------------------------------

    def _own(self, tags: Mapping[str, str]) -> dict[str, str]:
        return {"provisor:controller": self.controller, **tags} if self.controller else dict(tags)

    async def _instances(
        self, filters: list[dict[str, Any]] | None = None, ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if filters:
            params["Filters"] = filters
        if ids:
            params["InstanceIds"] = list(ids)
        found: list[dict[str, Any]] = []
        while True:
            reply = await self._call("DescribeInstances", **params)
            for reservation in reply.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
            token = reply.get("NextToken")
            if not token:
                return found
            params["NextToken"] = token

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
        tags = _tags(instance.get("Tags"))
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
        instances = await self._instances(_tag_filters(self._own({"provisor:token": token})))
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
        filters = _tag_filters(self._own(tags or {}))
        instances = await self._instances(filters, ids)
        mapped = self._address_map()
        return [self._info(i, mapped) for i in instances]

    async def launch(self, spec: MachineSpec) -> MachineInfo:
        """Run the machine (once), attach its volumes and address, wait until it answers."""
        existing = await self.find(spec.token)
        if existing is not None and existing.state is not MachineState.terminated:
            instance_id = existing.id
            if existing.state is MachineState.stopped:  # stopped since: a launch runs it
                await self._call("StartInstances", spec.name, InstanceIds=[instance_id])
        else:
            instance_id = await self._run_instance(spec)
            crash_point(f"ec2-run-instances:{spec.name}")  # the call is made, nothing recorded
        instance = await self._wait_state(instance_id, "running", spec.name)
        for number, volume in enumerate(spec.volumes):
            await self._attach_volume(spec, instance, number, volume.size_gb, volume.device)
        if spec.public_address:
            await self._associate_address(spec, instance_id)
            instance = {**instance, "PublicIpAddress": None}  # changed: read it again

        async def addressed() -> MachineInfo | None:
            nonlocal instance
            info = self._info(instance, self._address_map())
            if info.address:
                return info
            if not self.settings.address_map:  # the map is re-read; the instance must be
                found = await self._instances(ids=[instance_id])
                instance = found[0] if found else instance
            return None

        what = (
            "the address map names the instance"
            if self.settings.address_map
            else f"the instance has a {self.settings.address} address"
        )
        return await self._poll(what, addressed, timeout=self.launch_timeout, machine=spec.name)

    async def _run_instance(self, spec: MachineSpec) -> str:
        group = spec.tags.get("provisor:deployment", spec.name)
        key_name = await self._key_pair(group, spec.ssh_public_key, spec.tags)
        group_id = await self._security_group(group, spec.ingress, spec.tags)
        tags = self._own({**spec.tags, "provisor:token": spec.token, "provisor:machine": spec.name})
        params: dict[str, Any] = {
            "ImageId": await self._image(spec.image, spec.name),
            "InstanceType": self.settings.instance_type(
                spec.size.cpu, spec.size.memory_mb, spec.size.flavor
            ),
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "SecurityGroupIds": [group_id],
            "ClientToken": _client_token(spec.token),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": _tag_list({**tags, "Name": spec.hostname})},
            ],
        }
        user_data = wrap_user_data(spec.user_data)
        if user_data:
            params["UserData"] = user_data
        if self.settings.zone:
            params["Placement"] = {"AvailabilityZone": self.settings.zone}
        if self.settings.subnet:
            params["SubnetId"] = self.settings.subnet
        reply = await self._call("RunInstances", spec.name, **params)
        instance_id: str = reply["Instances"][0]["InstanceId"]
        return instance_id

    async def _wait_state(self, instance_id: str, state: str, machine: str) -> dict[str, Any]:
        """The instance once it is in `state`; one poller describes every waited instance."""
        loop = asyncio.get_running_loop()
        wait = _Wait(state, machine, loop.time() + self.launch_timeout, loop.create_future())
        self._waits.setdefault(instance_id, []).append(wait)
        self._poll_soon = True
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._watch_instances())
        return await wait.future

    async def _watch_instances(self) -> None:
        """While anyone waits: describe all waited instances in one call, settle waits.

        By an instance-id filter rather than InstanceIds, so an instance not visible yet
        (eventual consistency) is simply missing instead of failing the whole call.
        """
        loop = asyncio.get_running_loop()
        pause = 0.2
        while self._waits:
            if self._poll_soon:
                self._poll_soon, pause = False, 0.2
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            pause = min(pause * 1.5, 3.0)
            ids = list(self._waits)
            try:
                found: dict[str, dict[str, Any]] = {}
                for start in range(0, len(ids), 200):  # EC2 takes 200 values per filter
                    chunk = ids[start : start + 200]
                    for instance in await self._instances(_filters({"instance-id": chunk})):
                        found[instance["InstanceId"]] = instance
            except ProviderError as exc:
                for waits in self._waits.values():
                    for wait in waits:
                        if not wait.future.done():
                            wait.future.set_exception(exc)
                self._waits.clear()
                return
            now = loop.time()
            for instance_id in ids:
                seen = found.get(instance_id)
                current = seen["State"]["Name"] if seen else None
                waits = self._waits.get(instance_id, [])
                for wait in list(waits):
                    if wait.future.done():  # its waiter was cancelled
                        waits.remove(wait)
                    elif seen is not None and current == wait.state:
                        wait.future.set_result(seen)
                        waits.remove(wait)
                    elif current == "terminated" or now > wait.deadline:
                        why = (
                            "terminated"
                            if current == "terminated"
                            else (
                                f"still {current or 'not visible'} after {self.launch_timeout:g}s"
                            )
                        )
                        wait.future.set_exception(
                            ProviderError(
                                f"instance {instance_id} did not become {wait.state}: {why}",
                                machine=wait.machine,
                            )
                        )
                        waits.remove(wait)
                if not waits:
                    self._waits.pop(instance_id, None)

    async def _key_pair(self, group: str, public_key: str, tags: Mapping[str, str]) -> str:
        """The deployment's key pair, imported from the controller's key (once)."""
        name = f"provisor-{self.controller or 'x'}-{group}"
        async with self._setup_lock(f"key:{name}"):
            if f"key:{name}" in self._made:
                return name
            reply = await self._call("DescribeKeyPairs", Filters=_filters({"key-name": name}))
            if not reply.get("KeyPairs"):
                try:
                    await self._call(
                        "ImportKeyPair",
                        KeyName=name,
                        PublicKeyMaterial=public_key.encode(),
                        TagSpecifications=[
                            {
                                "ResourceType": "key-pair",
                                "Tags": _tag_list(self._own(_group_tags(tags))),
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
            reply = await self._call(
                "DescribeSecurityGroups", Filters=_filters({"group-name": name})
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
                        "Tags": _tag_list(self._own(_group_tags(tags))),
                    }
                ],
            }
            if self.settings.subnet:
                subnets = await self._call("DescribeSubnets", SubnetIds=[self.settings.subnet])
                params["VpcId"] = subnets["Subnets"][0]["VpcId"]
            created = await self._call("CreateSecurityGroup", **params)
            group_id = created["GroupId"]
            rules = [IngressRule("tcp", (22, 22), self.settings.ssh_source), *ingress]
            await self._call(
                "AuthorizeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=_permissions(rules),
            )
            self._made[f"group:{name}"] = group_id
            return group_id

    def _setup_lock(self, key: str) -> asyncio.Lock:
        return self._setup_locks.setdefault(key, asyncio.Lock())

    async def _image(self, image: str, machine: str) -> str:
        """An AMI id: given as one, from the settings' map, or looked up by image name."""
        if image.startswith("ami-"):
            return image
        if image in self.settings.images:
            return self.settings.images[image]
        if image not in self._images:
            reply = await self._call("DescribeImages", machine, Filters=_filters({"name": image}))
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
        await self._call("StopInstances", InstanceIds=[machine_id])
        await self._wait_state(machine_id, "stopped", machine_id)
        return (await self.describe([machine_id]))[0]

    async def start(self, machine_id: str) -> MachineInfo:
        await self._call("StartInstances", InstanceIds=[machine_id])
        await self._wait_state(machine_id, "running", machine_id)
        return (await self.describe([machine_id]))[0]

    async def reboot(self, machine_id: str) -> MachineInfo:
        await self._call("RebootInstances", InstanceIds=[machine_id])
        return (await self.describe([machine_id]))[0]

    async def terminate(self, machine_id: str) -> MachineInfo:
        """Release its address, end it, delete its volumes; safe to repeat."""
        await self._release_addresses(machine_id)
        found = await self._instances(ids=[machine_id])
        if found and found[0]["State"]["Name"] != "terminated":
            await self._call("TerminateInstances", machine_id, InstanceIds=[machine_id])
        instance = await self._wait_state(machine_id, "terminated", machine_id)
        await self._delete_volumes(machine_id)
        return self._info(instance, {})

    async def console_log(self, machine_id: str) -> str:
        reply = await self._call("GetConsoleOutput", machine_id, InstanceId=machine_id)
        output = reply.get("Output") or ""
        try:
            return base64.b64decode(output, validate=True).decode("utf-8", "replace")
        except ValueError:
            return str(output)

    # --- volumes and addresses ------------------------------------------------------------

    async def _attach_volume(
        self,
        spec: MachineSpec,
        instance: dict[str, Any],
        number: int,
        size_gb: int,
        device: str | None,
    ) -> str:
        instance_id = instance["InstanceId"]
        tags = self._own(
            {
                **spec.tags,
                "provisor:token": spec.token,
                "provisor:instance": instance_id,
                "provisor:volume": str(number),
            }
        )
        reply = await self._call(
            "DescribeVolumes",
            spec.name,
            Filters=_tag_filters({k: tags[k] for k in ("provisor:token", "provisor:volume")})
            + _filters({"status": ["creating", "available", "in-use"]}),
        )
        volumes = reply.get("Volumes", [])
        if volumes:
            volume = volumes[0]
        else:
            volume = await self._call(
                "CreateVolume",
                spec.name,
                Size=size_gb,
                AvailabilityZone=instance["Placement"]["AvailabilityZone"],
                TagSpecifications=[{"ResourceType": "volume", "Tags": _tag_list(tags)}],
            )
        volume_id: str = volume["VolumeId"]
        if any(a.get("InstanceId") == instance_id for a in volume.get("Attachments", [])):
            return volume_id
        await self._wait_volume(volume_id, "available", spec.name)
        await self._call(
            "AttachVolume",
            spec.name,
            VolumeId=volume_id,
            InstanceId=instance_id,
            Device=device or f"/dev/sd{chr(ord('f') + number)}",
        )
        await self._wait_volume(volume_id, "in-use", spec.name)
        return volume_id

    async def _wait_volume(self, volume_id: str, state: str, machine: str) -> None:
        async def reached() -> bool | None:
            reply = await self._call("DescribeVolumes", machine, VolumeIds=[volume_id])
            volumes = reply.get("Volumes", [])
            return True if volumes and volumes[0]["State"] == state else None

        await self._poll(f"volume {volume_id} {state}", reached, timeout=300.0, machine=machine)

    async def _delete_volumes(self, instance_id: str) -> None:
        reply = await self._call(
            "DescribeVolumes",
            instance_id,
            Filters=_tag_filters(self._own({"provisor:instance": instance_id})),
        )
        for volume in reply.get("Volumes", []):
            volume_id = volume["VolumeId"]
            if volume["State"] == "deleting" or volume["State"] == "deleted":
                continue
            if volume.get("Attachments"):
                await self._call("DetachVolume", instance_id, VolumeId=volume_id, Force=True)
                await self._wait_volume(volume_id, "available", instance_id)
            await self._call("DeleteVolume", instance_id, VolumeId=volume_id)

    async def _associate_address(self, spec: MachineSpec, instance_id: str) -> str:
        tags = self._own(
            {**spec.tags, "provisor:token": spec.token, "provisor:instance": instance_id}
        )
        reply = await self._call(
            "DescribeAddresses",
            spec.name,
            Filters=_tag_filters({"provisor:token": spec.token, **self._own({})}),
        )
        addresses = reply.get("Addresses", [])
        if addresses:
            address = addresses[0]
        else:
            address = await self._call(
                "AllocateAddress",
                spec.name,
                Domain="vpc",
                TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": _tag_list(tags)}],
            )
        if address.get("InstanceId") != instance_id:
            await self._call(
                "AssociateAddress",
                spec.name,
                AllocationId=address["AllocationId"],
                InstanceId=instance_id,
            )
        public_ip: str = address["PublicIp"]
        return public_ip

    async def _release_addresses(self, instance_id: str) -> None:
        """Disassociate, then release: never release an address still associated."""
        reply = await self._call(
            "DescribeAddresses",
            instance_id,
            Filters=_tag_filters(self._own({"provisor:instance": instance_id})),
        )
        for address in reply.get("Addresses", []):
            if address.get("AssociationId"):
                await self._call(
                    "DisassociateAddress", instance_id, AssociationId=address["AssociationId"]
                )

            async def free(allocation: str = address["AllocationId"]) -> bool | None:
                found = await self._call(
                    "DescribeAddresses", instance_id, AllocationIds=[allocation]
                )
                listed = found.get("Addresses", [])
                return True if not listed or not listed[0].get("AssociationId") else None

            await self._poll("address disassociated", free, timeout=60.0, machine=instance_id)
            await self._call("ReleaseAddress", instance_id, AllocationId=address["AllocationId"])

    # --- snapshots and images -------------------------------------------------------------

    async def snapshot(self, machine_id: str, name: str) -> SnapshotInfo:
        """An image (AMI) of the machine; `launch` takes its id as the image. Idempotent by name."""
        reply = await self._call(
            "DescribeImages", machine_id, Owners=["self"], Filters=_filters({"name": name})
        )
        images = reply.get("Images", [])
        if images:
            image_id = images[0]["ImageId"]
        else:
            created = await self._call(
                "CreateImage",
                machine_id,
                InstanceId=machine_id,
                Name=name,
                TagSpecifications=[
                    {
                        "ResourceType": "image",
                        "Tags": _tag_list(self._own({"provisor:instance": machine_id})),
                    }
                ],
            )
            image_id = created["ImageId"]

        async def available() -> dict[str, Any] | None:
            found = await self._call("DescribeImages", machine_id, ImageIds=[image_id])
            listed = found.get("Images", [])
            if listed and listed[0]["State"] == "failed":
                raise ProviderError(
                    f"image {image_id} failed", machine=machine_id, call="CreateImage"
                )
            return listed[0] if listed and listed[0]["State"] == "available" else None

        image = await self._poll(
            f"image {image_id} available", available, timeout=1800.0, machine=machine_id
        )
        size = sum(
            m.get("Ebs", {}).get("VolumeSize", 0) for m in image.get("BlockDeviceMappings", [])
        )
        return SnapshotInfo(
            id=image_id,
            machine_id=machine_id,
            location=f"ec2:{self.settings.region}:{image_id}",
            size=size * 2**30,
            sha256="",
        )

    async def snapshot_volume(self, volume_id: str, description: str) -> str:
        """A snapshot of one volume (for backups); its id once completed."""
        created = await self._call(
            "CreateSnapshot",
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": _tag_list(self._own({"provisor:volume-id": volume_id})),
                }
            ],
        )
        snapshot_id: str = created["SnapshotId"]

        async def completed() -> bool | None:
            found = await self._call("DescribeSnapshots", SnapshotIds=[snapshot_id])
            listed = found.get("Snapshots", [])
            if listed and listed[0]["State"] == "error":
                raise ProviderError(f"snapshot {snapshot_id} failed", call="CreateSnapshot")
            return True if listed and listed[0]["State"] == "completed" else None

        await self._poll(f"snapshot {snapshot_id} completed", completed, timeout=3600.0)
        return snapshot_id

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Deregister an image and delete its disk snapshots, or delete a volume snapshot."""
        if snapshot_id.startswith("ami-"):
            reply = await self._call("DescribeImages", ImageIds=[snapshot_id])
            images = reply.get("Images", [])
            if not images:
                return
            await self._call("DeregisterImage", ImageId=snapshot_id)
            for mapping in images[0].get("BlockDeviceMappings", []):
                backing = mapping.get("Ebs", {}).get("SnapshotId")
                if backing:
                    await self._delete_volume_snapshot(backing)
        else:
            await self._delete_volume_snapshot(snapshot_id)

    async def _delete_volume_snapshot(self, snapshot_id: str) -> None:
        try:
            await self._call("DeleteSnapshot", SnapshotId=snapshot_id)
        except Ec2Error as exc:
            if exc.code != "InvalidSnapshot.NotFound":
                raise

    # --- deployments ----------------------------------------------------------------------

    async def clean_up(self, tags: Mapping[str, str]) -> None:
        """Delete the deployment's security group and key pair once no machine is live."""
        filters = _tag_filters(self._own(tags))
        live = [
            i["InstanceId"]
            for i in await self._instances(filters)
            if i["State"]["Name"] != "terminated"
        ]
        if live:
            raise ProviderError(
                f"machines still live, not removing their key pair and group: {', '.join(live)}",
                call="clean_up",
            )
        groups = await self._call("DescribeSecurityGroups", Filters=filters)
        for group in groups.get("SecurityGroups", []):
            try:
                await self._call("DeleteSecurityGroup", GroupId=group["GroupId"])
            except Ec2Error as exc:
                if exc.code != "InvalidGroup.NotFound":
                    raise
        keys = await self._call("DescribeKeyPairs", Filters=filters)
        for key in keys.get("KeyPairs", []):
            await self._call("DeleteKeyPair", KeyName=key["KeyName"])
        self._made.clear()  # made again by the next launch that needs them

    async def check(self) -> str:
        reply = await self._call("DescribeAvailabilityZones")
        zones = [z["ZoneName"] for z in reply.get("AvailabilityZones", [])]
        where = self.settings.endpoint or "AWS"
        return (
            f"EC2 API at {where}, region {self.settings.region}: zones {', '.join(zones) or 'none'}"
        )

    def close(self) -> None:
        self._threads.shutdown(wait=False)


def _group_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A machine's tags that describe its deployment (not the machine itself)."""
    return {k: v for k, v in tags.items() if k in ("provisor:deployment", "provisor:tenant")}


def _permissions(rules: Sequence[IngressRule]) -> list[dict[str, Any]]:
    permissions = []
    for rule in rules:
        permission: dict[str, Any] = {
            "IpProtocol": rule.protocol,
            "IpRanges": [{"CidrIp": rule.source}],
        }
        if rule.protocol == "icmp":
            permission.update(FromPort=-1, ToPort=-1)
        else:
            permission.update(FromPort=rule.ports[0], ToPort=rule.ports[1])
        permissions.append(permission)
    return permissions


def _snake(call: str) -> str:
    """RunInstances -> run_instances (boto3's method names)."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(call))


__all__ = ["Ec2Error", "Ec2Provider", "Ec2Settings", "wrap_user_data"]
