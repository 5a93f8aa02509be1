"""Volumes, elastic addresses, snapshots and images of the `ec2` provider's machines.

Each is made once per machine and found again by its tags (`provisor:token`,
`provisor:instance`, ...), so a repeated launch or terminate does no harm.
"""

from __future__ import annotations

from typing import Any

from provisor.providers._ec2_api import Ec2Api, Ec2Error, tag_filters, tag_list, value_filters
from provisor.providers.base import MachineSpec, ProviderError, SnapshotInfo


class Ec2Storage:
    """A machine's volumes and address, and snapshots, through an `Ec2Api`."""

    def __init__(self, api: Ec2Api) -> None:
        self._api = api

    # --- volumes and addresses ------------------------------------------------------------

    async def attach_volume(
        self,
        spec: MachineSpec,
        instance: dict[str, Any],
        number: int,
        size_gb: int,
        device: str | None,
    ) -> str:
        instance_id = instance["InstanceId"]
        tags = self._api.own(
            {
                **spec.tags,
                "provisor:token": spec.token,
                "provisor:instance": instance_id,
                "provisor:volume": str(number),
            }
        )
        reply = await self._api.call(
            "DescribeVolumes",
            spec.name,
            Filters=tag_filters({k: tags[k] for k in ("provisor:token", "provisor:volume")})
            + value_filters({"status": ["creating", "available", "in-use"]}),
        )
        volumes = reply.get("Volumes", [])
        if volumes:
            volume = volumes[0]
        else:
            volume = await self._api.call(
                "CreateVolume",
                spec.name,
                Size=size_gb,
                AvailabilityZone=instance["Placement"]["AvailabilityZone"],
                TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
            )
        volume_id: str = volume["VolumeId"]
        if any(a.get("InstanceId") == instance_id for a in volume.get("Attachments", [])):
            return volume_id
        await self._wait_volume(volume_id, "available", spec.name)
        await self._api.call(
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
            reply = await self._api.call("DescribeVolumes", machine, VolumeIds=[volume_id])
            volumes = reply.get("Volumes", [])
            return True if volumes and volumes[0]["State"] == state else None

        await self._api.poll(f"volume {volume_id} {state}", reached, timeout=300.0, machine=machine)

    async def delete_volumes(self, instance_id: str) -> None:
        reply = await self._api.call(
            "DescribeVolumes",
            instance_id,
            Filters=tag_filters(self._api.own({"provisor:instance": instance_id})),
        )
        for volume in reply.get("Volumes", []):
            volume_id = volume["VolumeId"]
            if volume["State"] == "deleting" or volume["State"] == "deleted":
                continue
            if volume.get("Attachments"):
                await self._api.call("DetachVolume", instance_id, VolumeId=volume_id, Force=True)
                await self._wait_volume(volume_id, "available", instance_id)
            await self._api.call("DeleteVolume", instance_id, VolumeId=volume_id)

    async def associate_address(self, spec: MachineSpec, instance_id: str) -> str:
        tags = self._api.own(
            {**spec.tags, "provisor:token": spec.token, "provisor:instance": instance_id}
        )
        reply = await self._api.call(
            "DescribeAddresses",
            spec.name,
            Filters=tag_filters({"provisor:token": spec.token, **self._api.own({})}),
        )
        addresses = reply.get("Addresses", [])
        if addresses:
            address = addresses[0]
        else:
            address = await self._api.call(
                "AllocateAddress",
                spec.name,
                Domain="vpc",
                TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tag_list(tags)}],
            )
        if address.get("InstanceId") != instance_id:
            await self._api.call(
                "AssociateAddress",
                spec.name,
                AllocationId=address["AllocationId"],
                InstanceId=instance_id,
            )
        public_ip: str = address["PublicIp"]
        return public_ip

    async def release_addresses(self, instance_id: str) -> None:
        """Disassociate, then release: never release an address still associated."""
        reply = await self._api.call(
            "DescribeAddresses",
            instance_id,
            Filters=tag_filters(self._api.own({"provisor:instance": instance_id})),
        )
        for address in reply.get("Addresses", []):
            if address.get("AssociationId"):
                await self._api.call(
                    "DisassociateAddress", instance_id, AssociationId=address["AssociationId"]
                )

            async def free(allocation: str = address["AllocationId"]) -> bool | None:
                found = await self._api.call(
                    "DescribeAddresses", instance_id, AllocationIds=[allocation]
                )
                listed = found.get("Addresses", [])
                return True if not listed or not listed[0].get("AssociationId") else None

            await self._api.poll("address disassociated", free, timeout=60.0, machine=instance_id)
            await self._api.call(
                "ReleaseAddress", instance_id, AllocationId=address["AllocationId"]
            )

    # --- snapshots and images -------------------------------------------------------------

    async def snapshot(self, machine_id: str, name: str) -> SnapshotInfo:
        """An image (AMI) of the machine; `launch` takes its id as the image. Idempotent by name."""
        reply = await self._api.call(
            "DescribeImages", machine_id, Owners=["self"], Filters=value_filters({"name": name})
        )
        images = reply.get("Images", [])
        if images:
            image_id = images[0]["ImageId"]
        else:
            created = await self._api.call(
                "CreateImage",
                machine_id,
                InstanceId=machine_id,
                Name=name,
                TagSpecifications=[
                    {
                        "ResourceType": "image",
                        "Tags": tag_list(self._api.own({"provisor:instance": machine_id})),
                    }
                ],
            )
            image_id = created["ImageId"]

        async def available() -> dict[str, Any] | None:
            found = await self._api.call("DescribeImages", machine_id, ImageIds=[image_id])
            listed = found.get("Images", [])
            if listed and listed[0]["State"] == "failed":
                raise ProviderError(
                    f"image {image_id} failed", machine=machine_id, call="CreateImage"
                )
            return listed[0] if listed and listed[0]["State"] == "available" else None

        image = await self._api.poll(
            f"image {image_id} available", available, timeout=1800.0, machine=machine_id
        )
        size = sum(
            m.get("Ebs", {}).get("VolumeSize", 0) for m in image.get("BlockDeviceMappings", [])
        )
        return SnapshotInfo(
            id=image_id,
            machine_id=machine_id,
            location=f"ec2:{self._api.settings.region}:{image_id}",
            size=size * 2**30,
            sha256="",
        )

    async def snapshot_volume(self, volume_id: str, description: str) -> str:
        """A snapshot of one volume (for backups); its id once completed."""
        created = await self._api.call(
            "CreateSnapshot",
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": tag_list(self._api.own({"provisor:volume-id": volume_id})),
                }
            ],
        )
        snapshot_id: str = created["SnapshotId"]

        async def completed() -> bool | None:
            found = await self._api.call("DescribeSnapshots", SnapshotIds=[snapshot_id])
            listed = found.get("Snapshots", [])
            if listed and listed[0]["State"] == "error":
                raise ProviderError(f"snapshot {snapshot_id} failed", call="CreateSnapshot")
            return True if listed and listed[0]["State"] == "completed" else None

        await self._api.poll(f"snapshot {snapshot_id} completed", completed, timeout=3600.0)
        return snapshot_id

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Deregister an image and delete its disk snapshots, or delete a volume snapshot."""
        if snapshot_id.startswith("ami-"):
            reply = await self._api.call("DescribeImages", ImageIds=[snapshot_id])
            images = reply.get("Images", [])
            if not images:
                return
            await self._api.call("DeregisterImage", ImageId=snapshot_id)
            for mapping in images[0].get("BlockDeviceMappings", []):
                backing = mapping.get("Ebs", {}).get("SnapshotId")
                if backing:
                    await self._delete_volume_snapshot(backing)
        else:
            await self._delete_volume_snapshot(snapshot_id)

    async def _delete_volume_snapshot(self, snapshot_id: str) -> None:
        try:
            await self._api.call("DeleteSnapshot", SnapshotId=snapshot_id)
        except Ec2Error as exc:
            if exc.code != "InvalidSnapshot.NotFound":
                raise
