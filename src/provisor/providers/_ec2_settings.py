"""The settings of an `ec2` provider: endpoint, region, how sizes and images map."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from provisor.core.errors import InvalidInput, invalid_input

_SIZE_KEY = re.compile(r"([1-9][0-9]{0,3})x([1-9][0-9]{1,7})")
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")

# Sizes to EC2 instance types when the settings give no map: the t3 family
# (capacity as CPUxMEMORY_MB); a node gets the smallest type that fits it.
DEFAULT_INSTANCE_TYPES: dict[str, str] = {
    "2x512": "t3.nano",
    "2x1024": "t3.micro",
    "2x2048": "t3.small",
    "2x4096": "t3.medium",
    "2x8192": "t3.large",
    "4x16384": "t3.xlarge",
    "8x32768": "t3.2xlarge",
}


def capacity(size_key: str) -> tuple[int, int]:
    """(cpu, memory_mb) of a `CPUxMEMORY_MB` key."""
    match = _SIZE_KEY.fullmatch(size_key)
    if match is None:
        raise ValueError(f"invalid size {size_key!r}: use CPUxMEMORY_MB, e.g. 2x4096")
    return int(match.group(1)), int(match.group(2))


def source_cidr(value: str) -> str:
    """A CIDR traffic may come from, as EC2 takes it; a bare address is that address alone."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        detail = str(exc)
        if "has host bits set" in detail:
            loose = ipaddress.ip_network(value.strip(), strict=False)
            single = value.strip().split("/")[0] + ("/128" if loose.version == 6 else "/32")
            detail = f"host bits set: the network is {loose}, the address alone {single}"
        raise ValueError(
            f"invalid CIDR {value!r} ({detail}): use an address or a network, e.g. 203.0.113.7/32"
        ) from None
    return str(network)


class Ec2Settings(BaseModel):
    """What `provisor providers add NAME --type ec2` records (no secret in here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(description="e.g. us-east-1; OpenStack's EC2 API often wants nova")
    endpoint: str | None = Field(
        default=None, description="the EC2 API URL; none for AWS's own endpoint of the region"
    )
    access_key_id: str | None = Field(
        default=None,
        description="with the secret key stored sealed; none: boto3's own chain "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)",
    )
    zone: str | None = Field(default=None, description="availability zone for machines, volumes")
    subnet: str | None = Field(default=None, description="subnet id for machines (VPC)")
    login_user: str = Field(default="root", description="the user the images let SSH in")
    address: Literal["public", "private"] = Field(
        default="public",
        description="which address the controller reaches machines at: public (the elastic "
        "address, else the public IP) or private (the controller is inside the network)",
    )
    address_map: str | None = Field(
        default=None,
        description="a JSON file {instance id: address} to reach machines at instead "
        "(NAT, labs, tests); machines not in it have no address yet",
    )
    ssh_source: str | None = Field(
        default=None,
        description="CIDR allowed to reach port 22: where the controller connects from; "
        "none: the controller's own address (PROVISOR_PARAMETER_ADDRESS) alone",
    )
    instance_types: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_INSTANCE_TYPES),
        description="CPUxMEMORY_MB capacity -> instance type; a node gets the smallest "
        "type that fits its size (a node's flavor is used as the type as it is)",
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="image name -> AMI id; other names are looked up by image name",
    )
    max_attempts: int = Field(default=6, ge=1, le=20, description="tries per API call")
    call_timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per API call")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid endpoint {value!r}: use http(s)://host[:port][/path]")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value != "nova" and not _REGION.fullmatch(value):
            raise ValueError(f"invalid region {value!r}: e.g. us-east-1 (or nova)")
        return value

    @field_validator("ssh_source")
    @classmethod
    def _ssh_source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return source_cidr(value)

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        for key, kind in value.items():
            capacity(key)
            if not kind:
                raise ValueError(f"size {key} maps to an empty instance type")
        return value

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Ec2Settings:
        """Validated settings; InvalidInput names the offending setting."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise invalid_input(exc) from None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def instance_type(self, cpu: int, memory_mb: int, flavor: str | None) -> str:
        """The instance type for a node's size."""
        if flavor:
            return flavor
        exact = self.instance_types.get(f"{cpu}x{memory_mb}")
        if exact:
            return exact
        fitting = sorted(
            (capacity(key)[::-1], kind)
            for key, kind in self.instance_types.items()
            if capacity(key)[0] >= cpu and capacity(key)[1] >= memory_mb
        )
        if not fitting:
            raise InvalidInput(
                f"no instance type fits {cpu} CPU and {memory_mb} MB: add one to the "
                "provider's instance_types or give the node a flavor",
                field="size",
            )
        return fitting[0][1]
