"""The provider interface: what the orchestrator may ask of any infrastructure.

One interface module, one module per backend (Libcloud's NodeDriver, Nova's
ComputeDriver). Every call is async; blocking SDKs run in threads inside the
backend. Calls that change things are idempotent: launching twice with the same
client token gives the same machine, terminating a terminated machine is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from provisor.core.errors import ProvisorError

# Where a machine's first-boot user data leaves its exit status: providers that run
# user data write it, the orchestrator waits for it before a node's scripts.
USER_DATA_DONE = "/var/lib/provisor/user-data.done"


class MachineState(StrEnum):
    pending = "pending"  # asked for, not yet running
    running = "running"
    stopping = "stopping"
    stopped = "stopped"  # powered off, disk kept
    terminated = "terminated"  # gone, disk removed
    error = "error"


class Capability(StrEnum):
    stop_start = "stop_start"
    reboot = "reboot"
    console = "console"
    snapshots = "snapshots"  # snapshot a machine, launch from a snapshot
    volumes = "volumes"  # extra disks at launch
    user_data = "user_data"  # cloud-init / shell script at first boot
    public_address = "public_address"  # elastic / floating addresses


@dataclass(frozen=True)
class Size:
    cpu: int = 1
    memory_mb: int = 512
    flavor: str | None = None  # a provider's own name for a size, when given


@dataclass(frozen=True)
class VolumeSpec:
    size_gb: int
    mount: str  # mount point inside the machine, e.g. /var/lib/postgresql
    device: str | None = None  # where the provider needs one (EC2: /dev/sdf)


@dataclass(frozen=True)
class IngressRule:
    """Traffic a deployment's machines accept (an EC2 security group rule)."""

    protocol: str  # tcp, udp or icmp
    ports: tuple[int, int] = (0, 0)  # first and last port; ignored for icmp
    source: str = "0.0.0.0/0"  # CIDR


@dataclass(frozen=True)
class MachineSpec:
    """One machine to launch. `token` makes the launch idempotent."""

    token: str  # unique per machine of a deployment, stable across retries
    name: str  # provisor's machine name, e.g. "shop-app-2"
    hostname: str
    image: str  # an image name, or a snapshot id from `snapshot`
    ssh_public_key: str  # authorized for `login_user`
    size: Size = field(default_factory=Size)
    volumes: tuple[VolumeSpec, ...] = ()
    user_data: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    ingress: tuple[IngressRule, ...] = ()  # for providers with firewalls
    public_address: bool = False  # an elastic / floating address of its own
    # Shell commands that send the machine's SSH host public keys to the controller. A
    # provider that cannot tell a machine's `host_key` itself runs them once, at first
    # boot, before the user data: the controller pins the key before it connects.
    host_key_report: str | None = None
    # The machine this one replaces (a restore from a backup). A provider that can gives
    # the new machine that one's address, powering that one off first (it is terminated
    # once its replacement answers); others launch as usual.
    replaces: str | None = None


@dataclass(frozen=True)
class MachineInfo:
    """What the provider knows of a machine now."""

    id: str
    token: str
    name: str
    state: MachineState
    address: str | None  # where SSH answers; None until known
    port: int = 22
    login_user: str = "root"
    host_key: str | None = None  # OpenSSH public host key, when the provider knows it
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    machine_id: str
    location: str  # where the copy lives (a path, a bucket URL)
    size: int  # bytes
    sha256: str


class ProviderError(ProvisorError):
    """A provider call failed; says which machine, which call and why."""

    status = 502

    def __init__(self, message: str, *, machine: str | None = None, call: str | None = None):
        where = " ".join(p for p in (f"machine {machine}" if machine else "", call or "") if p)
        super().__init__(f"{where}: {message}" if where else message, field="provider")
        self.machine = machine
        self.call = call


class NotSupported(ProviderError):
    status = 400


@runtime_checkable
class Provider(Protocol):
    """An infrastructure driver. Backends declare what they can do in `capabilities`."""

    name: str
    capabilities: frozenset[Capability]

    async def launch(self, spec: MachineSpec) -> MachineInfo:
        """Create and boot a machine; with a token seen before, return that machine."""
        ...

    async def find(self, token: str) -> MachineInfo | None:
        """The machine launched with this token, if any (terminated ones included)."""
        ...

    async def describe(
        self, ids: Sequence[str] | None = None, *, tags: Mapping[str, str] | None = None
    ) -> list[MachineInfo]:
        """Many machines in one call: by id, or all whose tags include `tags`."""
        ...

    async def stop(self, machine_id: str) -> MachineInfo: ...

    async def start(self, machine_id: str) -> MachineInfo: ...

    async def reboot(self, machine_id: str) -> MachineInfo: ...

    async def terminate(self, machine_id: str) -> MachineInfo:
        """Remove the machine and its disks; a no-op for a terminated one."""
        ...

    async def console_log(self, machine_id: str) -> str:
        """The machine's boot and user-data output."""
        ...

    async def snapshot(self, machine_id: str, name: str) -> SnapshotInfo:
        """Copy the machine's disks to long-term storage; launchable as an image."""
        ...

    async def delete_snapshot(self, snapshot_id: str) -> None: ...

    async def clean_up(self, tags: Mapping[str, str]) -> None:
        """Remove what launches made for machines with these tags (key pairs, firewall
        groups) once none of them is left; a no-op where there is nothing to remove."""
        ...

    async def check(self) -> str:
        """Reachability and credentials: a one-line description, or a ProviderError."""
        ...
