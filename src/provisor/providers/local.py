"""The `local` provider: real SSH-reachable machines on this computer.

Each machine is a namespace-mode sandbox host (see docs/testbed.md): Debian's OpenSSH
sshd in its own UTS, PID and mount namespaces, with a copy-on-write overlay over the
system directories, listening on port 22 of its own loopback address. Machines outlive
the process that launched them; this provider finds them again through its registry.

    provider = LocalProvider()                     # state in $PROVISOR_HOME/local-provider
    info = await provider.launch(MachineSpec(token="shop-app-1", name="shop-app-1",
                                             hostname="app-1", image="debian-12",
                                             ssh_public_key=key))
    ssh -i key root@<info.address>

See docs/providers.md, section "local".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import threading
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from provisor import machines
from provisor._asyncssh import asyncssh
from provisor.core.errors import ProvisorError
from provisor.datadir import default_home
from provisor.files import private_dir, write_private
from provisor.providers import _local_cgroup, _local_disk, _local_userdata
from provisor.providers._local_state import (
    MachineRecord,
    Registry,
    RegistryData,
    SnapshotRecord,
    VolumeKind,
    VolumeRecord,
    now,
)
from provisor.providers.base import (
    Capability,
    IngressRule,
    MachineInfo,
    MachineSpec,
    MachineState,
    ProviderError,
    SnapshotInfo,
)

__all__ = ["LocalProvider", "default_state_dir"]

log = logging.getLogger("provisor.providers.local")

PORT = 22
LOGIN_USER = "root"
DEFAULT_NETWORK = "127.100.0.0/16"
MIN_MEMORY_MB = 64
CONSOLE_KEEP = 256 * 1024  # bytes of console log returned, and kept after terminate
SNAPSHOT_PREFIX = "snap-"
MACHINE_PREFIX = "m-"
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def default_state_dir() -> Path:
    return default_home() / "local-provider"


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ProviderError(f"invalid network {value!r}: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(_LOOPBACK):
        raise ProviderError(
            f"network {value} is not inside 127.0.0.0/8: local machines only ever listen "
            "on loopback addresses"
        )
    if network.num_addresses < 4:
        raise ProviderError(f"network {value} is too small: give at least a /30")
    return network


MAX_PORTS = 100  # TCP ports a machine's ingress may open (each is a listening socket here)


def _ingress_ports(rules: Sequence[IngressRule]) -> list[int]:
    """The TCP ports a machine's ingress opens: published on its address on this computer.

    Other protocols are not forwarded (only TCP is), and every source may connect: all
    connections come from this computer.
    """
    ports: set[int] = set()
    for rule in rules:
        if rule.protocol != "tcp":
            continue
        first, last = rule.ports
        if (first, last) == (0, 0):
            first, last = 1, 65535
        if last - first + 1 + len(ports) > MAX_PORTS:
            raise ProviderError(
                f"ingress opens more than {MAX_PORTS} TCP ports ({first}-{last}): the local "
                "provider publishes each port on its own; open fewer",
                call="launch",
            )
        ports.update(range(first, last + 1))
    return sorted(ports)


def _endpoint(url: str) -> list[tuple[str, int]]:
    """The (address, port) of the controller's parameter endpoint, relayed to machines."""
    if not url:
        return []
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname, parsed.port
    if host is None or port is None:
        raise ProviderError(f"parameter endpoint {url!r} has no address and port")
    try:
        loopback = ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        loopback = False
    if not loopback:
        raise ProviderError(
            f"the parameter endpoint {host}:{port} is not on a loopback address: local "
            "machines reach only 127.x addresses of this computer (set "
            "PROVISOR_PARAMETER_ADDRESS to one)"
        )
    return [(host, port)]


def _tail(path: Path, limit: int = CONSOLE_KEEP) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    if size > limit:
        # Start at a line boundary, as the console of a long-running server shows its end.
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def _ssh_port_free(address: str) -> bool:
    """Whether nothing listens on address:22: one refused connection, no /proc scan."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((address, 22)) != 0


class LocalProvider:
    """Machines on this computer, each a sandbox host on its own loopback address.

    `state_dir` holds the registry (machines by token and id, snapshots), the snapshot
    archives, locks and the console logs of terminated machines. `hosts_dir` holds the
    machines' disks: the sandbox's base dir, which must be outside the directories the
    machines overlay (default: the sandbox's, /run/provisor/sandbox as root).
    Addresses come from `network`; `volume_kind` says whether volumes are directories
    bound into the machine ("dir") or sparse ext4 images loop-mounted there ("loop").
    """

    name = "local"
    capabilities = frozenset(
        {
            Capability.stop_start,
            Capability.reboot,
            Capability.console,
            Capability.snapshots,
            Capability.volumes,
            Capability.user_data,
        }
    )

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        network: str = DEFAULT_NETWORK,
        hosts_dir: Path | None = None,
        volume_kind: VolumeKind = "dir",
        parameter_url: str = "",
        contain: bool = True,
    ) -> None:
        self.state_dir = Path(os.path.abspath(state_dir or default_state_dir()))
        self.network = _network(network)
        self.hosts_dir = Path(os.path.abspath(hosts_dir or machines.default_base_dir()))
        if volume_kind not in ("dir", "loop"):
            raise ProviderError(f"unknown volume kind {volume_kind!r}: expected dir or loop")
        self.volume_kind: VolumeKind = volume_kind
        # False only for machines that stand for remote servers (the test bed's EC2
        # plane): they reach the controller over the network, as cloud machines do.
        self.contain = contain
        # The machines share one network of their own (see docs/providers.md, "Containment"):
        # of this computer they reach only the controller's parameter endpoint.
        self._network_name = str(self.network).replace("/", "-")
        self._relays: list[tuple[str, int]] = []
        self._relay_problem = ""  # said at launch: other calls need no endpoint
        try:
            self._relays = _endpoint(parameter_url)
        except ProviderError as exc:
            self._relay_problem = exc.message
        self.snapshot_dir = self.state_dir / "snapshots"
        self._console_dir = self.state_dir / "console"
        self._registry = Registry(self.state_dir)
        self._cgroups_known = False
        self._cgroups: _local_cgroup.MemoryCgroups | None = None
        self._cgroups_lock = threading.Lock()  # concurrent launches detect once
        self._hosts_dir_checked = False

    def __repr__(self) -> str:
        return f"LocalProvider({str(self.state_dir)!r}, network={str(self.network)!r})"

    # --- the Provider interface -------------------------------------------------------------

    async def launch(self, spec: MachineSpec) -> MachineInfo:
        """Boot a machine for `spec`; with a token seen before, that machine as it is now.

        The token is recorded (state pending) before anything is made, so a launch that
        crashes half-way is completed by the next launch with that token, never doubled.
        """
        # One record, not the whole registry: every launch of a deployment asks at once.
        known = await asyncio.to_thread(self._registry.machine_of_token, spec.token)
        if known is not None and known.phase != "pending":
            return await self._info(known)
        if known is None and spec.replaces is not None:
            await self._power_off_replaced(spec.replaces)
        record = known if known is not None else await self._reserve(spec)
        if record.phase != "pending":
            return await self._info(record)
        return await self._complete(record.id)

    async def find(self, token: str) -> MachineInfo | None:
        data = await self._read()
        machine_id = data.tokens.get(token)
        return None if machine_id is None else await self._info(data.machines[machine_id])

    async def describe(
        self, ids: Sequence[str] | None = None, *, tags: Mapping[str, str] | None = None
    ) -> list[MachineInfo]:
        data = await self._read()
        if ids is not None:
            unknown = [i for i in ids if i not in data.machines]
            if unknown:
                raise ProviderError(f"no such machine(s): {', '.join(unknown)}", call="describe")
            records = [data.machines[i] for i in ids]
        else:
            records = sorted(data.machines.values(), key=lambda r: (r.created_at, r.id))
        if tags:
            records = [r for r in records if all(r.tags.get(k) == v for k, v in tags.items())]
        return await asyncio.to_thread(lambda: [self._info_sync(r) for r in records])

    async def stop(self, machine_id: str) -> MachineInfo:
        self._require_root("stop")
        async with self._locked(machine_id, "stop") as record:
            self._require_created(record, "stop")
            host = await self._host(record, "stop")
            await self._power_off(record, host, "stop")
            return await self._info(record)

    async def start(self, machine_id: str) -> MachineInfo:
        self._require_root("start")
        async with self._locked(machine_id, "start") as record:
            self._require_created(record, "start")
            host = await self._host(record, "start")
            if not machines.is_running(host):
                await self._power_on(record, "start")
            return await self._info(record)

    async def reboot(self, machine_id: str) -> MachineInfo:
        """Power-cycle the machine: every process is gone, its files are kept.

        A machine that is down (stopped, or crashed) is booted.
        """
        self._require_root("reboot")
        async with self._locked(machine_id, "reboot") as record:
            self._require_created(record, "reboot")
            host = await self._host(record, "reboot")
            await self._power_off(record, host, "reboot")
            await self._power_on(record, "reboot")
            return await self._info(record)

    async def terminate(self, machine_id: str) -> MachineInfo:
        """Destroy the machine, its disk and its volumes; a no-op when already terminated.

        The registry keeps the terminated machine (so `find` reports it) and the end of
        its console log.
        """
        self._require_root("terminate")
        async with self._locked(machine_id, "terminate") as record:
            if record.phase == "terminated":
                return await self._info(record)
            await asyncio.to_thread(self._keep_console, record)
            await self._discard(record, "terminate")
            record = await self._update(
                machine_id,
                phase="terminated",
                terminated_at=now(),
                user_data=None,
                cgroup=None,
                error=None,
            )
            return await self._info(record)

    async def console_log(self, machine_id: str) -> str:
        """The machine's boot messages and user-data output (the last 256 KiB)."""
        record = await self._record(machine_id, "console_log")
        if record.phase == "terminated":
            return await asyncio.to_thread(_tail, self._console_dir / f"{record.id}.log")
        return await asyncio.to_thread(_tail, self._console_path(record))

    async def snapshot(self, machine_id: str, name: str) -> SnapshotInfo:
        """Archive the machine's disk and volumes; launch it again with image = the id.

        Snapshot names are unique: taking a snapshot of the same machine with the same
        name again returns the first one (a retried call makes no second archive).
        """
        self._require_root("snapshot")
        if not name or "\n" in name:
            raise ProviderError("a snapshot needs a one-line name", machine=machine_id)
        async with self._locked(machine_id, "snapshot") as record:
            self._require_created(record, "snapshot")
            same = self._snapshot_named(await self._read(), name, machine_id)
            if same is not None:
                return self._snapshot_info(same)
            snapshot_id = SNAPSHOT_PREFIX + secrets.token_hex(4)
            location = self.snapshot_dir / f"{snapshot_id}.tar.gz"
            manifest = {
                "format": "provisor-local-snapshot/1",
                "id": snapshot_id,
                "name": name,
                "machine_id": record.id,
                "hostname": record.hostname,
                "image": record.image,
                "volumes": [
                    {"index": v.index, "mount": v.mount, "size_gb": v.size_gb, "kind": v.kind}
                    for v in record.volumes
                ],
            }
            size, sha256 = await asyncio.to_thread(
                _local_disk.create_archive,
                self.hosts_dir / record.id,
                manifest,
                location,
                record.id,
            )
            snap = SnapshotRecord(
                id=snapshot_id,
                name=name,
                machine_id=record.id,
                location=str(location),
                size=size,
                sha256=sha256,
                image=record.image,
                volumes=[replace(v) for v in record.volumes],
            )

            def add(data: RegistryData) -> SnapshotRecord:
                other = self._snapshot_named(data, name, machine_id)
                if other is not None:
                    return other
                data.snapshots[snapshot_id] = snap
                return snap

            stored = await self._registry.transact(add)
            if stored.id != snapshot_id:
                await asyncio.to_thread(location.unlink, missing_ok=True)
            return self._snapshot_info(stored)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot's archive; a no-op for one deleted before.

        Machines launched from it keep their disks (each has its own copy).
        """

        def mark(data: RegistryData) -> SnapshotRecord:
            snap = data.snapshots.get(snapshot_id)
            if snap is None:
                raise ProviderError(f"no such snapshot: {snapshot_id}", call="delete_snapshot")
            snap.deleted = True
            return snap

        snap = await self._registry.transact(mark)
        await asyncio.to_thread(Path(snap.location).unlink, missing_ok=True)

    async def clean_up(self, tags: Mapping[str, str]) -> None:
        """Nothing outlives a local machine: its address and disk go with `terminate`."""

    async def check(self) -> str:
        self._require_root("check")
        await self._read()
        return f"local machines on {self.network}, state in {self.state_dir}"

    # --- beyond the interface ----------------------------------------------------------------

    async def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot that has not been deleted."""
        data = await self._read()
        return [self._snapshot_info(s) for s in data.snapshots.values() if not s.deleted]

    async def import_snapshot(self, archive: Path, name: str) -> SnapshotInfo:
        """Take in a snapshot archive made by `snapshot` (restored from a backup store) as
        a snapshot of this provider, launchable as an image. The archive is moved here."""
        self._require_root("import_snapshot")
        manifest = await asyncio.to_thread(_local_disk.read_manifest, archive)
        snapshot_id = SNAPSHOT_PREFIX + secrets.token_hex(4)
        location = self.snapshot_dir / f"{snapshot_id}.tar.gz"
        await asyncio.to_thread(private_dir, self.snapshot_dir)
        await asyncio.to_thread(os.replace, archive, location)
        size, sha256 = await asyncio.to_thread(_local_disk.file_sha256, location)
        snap = SnapshotRecord(
            id=snapshot_id,
            name=f"{name}/{snapshot_id}",
            machine_id=str(manifest.get("machine_id", "")),
            location=str(location),
            size=size,
            sha256=sha256,
            image=str(manifest.get("image", "debian-12")),
            volumes=[VolumeRecord.from_json(v) for v in manifest.get("volumes", [])],
        )

        def add(data: RegistryData) -> SnapshotRecord:
            data.snapshots[snapshot_id] = snap
            return snap

        return self._snapshot_info(await self._registry.transact(add))

    async def restore_in_place(self, machine_id: str, archive: Path) -> MachineInfo:
        """Roll a machine back to a snapshot archive: stop it, replace its disk and
        volumes with the archive's, start it. Same machine, address and host key."""
        self._require_root("restore_in_place")
        await asyncio.to_thread(_local_disk.read_manifest, archive)  # refuse anything else
        async with self._locked(machine_id, "restore_in_place") as record:
            self._require_created(record, "restore_in_place")
            host = await self._host(record, "restore_in_place")
            await self._power_off(record, host, "restore_in_place")
            await asyncio.to_thread(
                _local_disk.replace_disk, archive, self.hosts_dir / record.id, record.id
            )
            await self._power_on(record, "restore_in_place")
            return await self._info(record)

    async def user_data_status(self, machine_id: str) -> int | None:
        """The exit status of the machine's user-data, or None while it has not finished."""
        record = await self._record(machine_id, "user_data_status")
        if record.phase != "created":
            return None
        host = await self._host(record, "user_data_status")

        def read() -> int | None:
            try:
                marker = machines.host_file(host, _local_userdata.DONE_MARKER)
                return int(marker.read_text().strip())
            except (OSError, ValueError, ProvisorError):
                return None

        return await asyncio.to_thread(read)

    def machine_directory(self, machine_id: str) -> Path:
        """Where the machine's disk lives on this computer."""
        return self.hosts_dir / machine_id

    # --- launching ---------------------------------------------------------------------------

    async def _reserve(self, spec: MachineSpec) -> MachineRecord:
        """Validate `spec` and record its token (state pending): the first step of launch.

        Returns the machine already recorded for the token, if any.
        """
        known = await asyncio.to_thread(self._registry.machine_of_token, spec.token)
        if known is not None:
            return known
        self._require_root("launch")
        if self._relay_problem:
            raise ProviderError(self._relay_problem, call="launch")
        if not self._hosts_dir_checked:
            try:
                await asyncio.to_thread(machines.check_namespace_base_dir, self.hosts_dir)
            except ProvisorError as exc:
                raise ProviderError(exc.message, call="launch") from None
            self._hosts_dir_checked = True
        plan = await self._plan(spec)
        groups = await self._memory_cgroups()

        def reserve(data: RegistryData) -> MachineRecord:
            existing = data.tokens.get(spec.token)
            if existing is not None:
                return data.machines[existing]
            while True:
                machine_id = MACHINE_PREFIX + secrets.token_hex(4)
                taken = machine_id in data.machines or (self.hosts_dir / machine_id).exists()
                if not taken:
                    break
            record = replace(
                plan,
                id=machine_id,
                address=self._allocate(data, take_over=spec.replaces),
                # Recorded before it is made, so that no crash can leave it unrecorded
                # (and no second transaction is needed to record it).
                cgroup=str(groups.path_for(machine_id)) if groups is not None else None,
            )
            data.machines[machine_id] = record
            data.tokens[spec.token] = machine_id
            return record

        record = await self._registry.transact(reserve)
        log.debug("token %s: machine %s (%s)", spec.token, record.id, record.phase)
        return record

    async def _plan(self, spec: MachineSpec) -> MachineRecord:
        """The record of a machine for `spec` (no id, no address yet), or a ProviderError."""

        def fail(message: str) -> ProviderError:
            return ProviderError(message, call="launch")

        if not spec.token:
            raise fail("a machine spec needs a token")
        try:
            machines.validate_hostname(spec.hostname)
        except ProvisorError as exc:
            raise fail(exc.message) from None
        key = spec.ssh_public_key.strip()
        try:
            if "\n" in key:
                raise ValueError("more than one line")
            asyncssh.import_public_key(key)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise fail(f"ssh_public_key is not an OpenSSH public key: {exc}") from None
        if spec.size.cpu < 1:
            raise fail(f"size.cpu must be at least 1, not {spec.size.cpu}")
        if spec.size.memory_mb < MIN_MEMORY_MB:
            raise fail(
                f"size.memory_mb must be at least {MIN_MEMORY_MB}, not {spec.size.memory_mb}"
            )
        if spec.user_data is not None:
            _local_userdata.to_script(spec.user_data)  # raises on a malformed one
        snapshot: SnapshotRecord | None = None
        volumes: list[VolumeRecord] = []
        if spec.image.startswith(SNAPSHOT_PREFIX):
            snapshot = await self._usable_snapshot(spec.image)
            volumes = [replace(v) for v in snapshot.volumes]
        elif not spec.image.startswith("debian"):
            raise fail(
                f"unknown image {spec.image!r}: the local provider runs this computer's own "
                "Debian userland (debian-12, or any image name starting with 'debian') or a "
                f"snapshot id ({SNAPSHOT_PREFIX}...)"
            )
        mounts = {v.mount for v in volumes}
        for volume in spec.volumes:
            if volume.size_gb < 1:
                raise fail(f"volume {volume.mount}: size_gb must be at least 1")
            try:
                machines.check_mount(machines.Mount(Path("/volume"), volume.mount))
            except ProvisorError as exc:
                raise fail(f"volume {volume.mount}: {exc.message}") from None
            if volume.mount in mounts:
                if snapshot is None:
                    raise fail(f"two volumes are mounted at {volume.mount}")
                continue  # the snapshot's volume, with its data
            mounts.add(volume.mount)
            volumes.append(
                VolumeRecord(
                    index=len(volumes),
                    size_gb=volume.size_gb,
                    mount=volume.mount,
                    kind=self.volume_kind,
                    device=volume.device,
                )
            )
        return MachineRecord(
            id="",
            token=spec.token,
            name=spec.name,
            hostname=spec.hostname,
            address="",
            image=spec.image,
            ssh_public_key=key,
            cpu=spec.size.cpu,
            memory_mb=spec.size.memory_mb,
            flavor=spec.size.flavor,
            volumes=volumes,
            tags=dict(spec.tags),
            snapshot=snapshot.id if snapshot is not None else None,
            user_data=spec.user_data,
            ports=_ingress_ports(spec.ingress),
        )

    async def _usable_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        snap = (await self._read()).snapshots.get(snapshot_id)
        if snap is None or snap.deleted:
            state = "deleted" if snap is not None else "unknown"
            raise ProviderError(f"image {snapshot_id}: {state} snapshot", call="launch")
        await asyncio.to_thread(
            _local_disk.verify_archive, Path(snap.location), snap.size, snap.sha256, snap.id
        )
        return snap

    def _allocate(
        self, data: RegistryData, avoid: str | None = None, take_over: str | None = None
    ) -> str:
        """The address of machine `take_over` if nothing listens there any more (its
        replacement's: see `_power_off_replaced`), else the first address of the network
        that no machine of the registry holds and nothing on this computer listens on
        (called under the registry lock)."""
        replaced = data.machines.get(take_over or "")
        if replaced is not None and replaced.address and replaced.phase == "created":
            others = {
                m.address
                for m in data.machines.values()
                if m.phase != "terminated" and m.id != replaced.id
            }
            wanted = replaced.address
            if wanted != avoid and wanted not in others and _ssh_port_free(wanted):
                return wanted
        held = {m.address for m in data.machines.values() if m.phase != "terminated"}
        for candidate in self.network.hosts():
            address = str(candidate)
            if address == "127.0.0.1" or address == avoid:
                continue
            if address not in held and _ssh_port_free(address):
                return address
        raise ProviderError(
            f"no free address left in {self.network}: terminate machines or give the "
            "provider a larger network",
            call="launch",
        )

    async def _complete(self, machine_id: str) -> MachineInfo:
        """Boot a reserved (pending) machine: the second step of launch, idempotent."""
        async with self._locked(machine_id, "launch", known=True) as record:
            if record.phase != "pending":
                return await self._info(record)
            try:
                host = await self._boot_new(record)
            except asyncio.CancelledError:
                raise  # still pending: the next launch with the token takes over
            except Exception as exc:
                error = exc if isinstance(exc, ProviderError) else None
                message = exc.message if isinstance(exc, ProvisorError) else repr(exc)
                try:
                    # As recorded now: booting may have moved its address, made its cgroup.
                    current = self._get(await self._read(), machine_id, "launch")
                    await self._discard(current, "launch")
                except ProviderError as cleanup:
                    log.warning(
                        "machine %s: cleanup after a failed launch: %s", machine_id, cleanup
                    )
                await self._update(machine_id, error=message)
                if error is not None:
                    raise
                raise ProviderError(message, machine=machine_id, call="launch") from exc
            record = await self._update(
                machine_id,
                phase="created",
                address=host.address,
                host_key=host.host_public_key,
                user_data=None,
                error=None,
            )
            log.info("machine %s (%s) running at %s", record.id, record.hostname, host.address)
            return await self._info(record)

    async def _boot_new(self, record: MachineRecord) -> machines.SandboxHost:
        directory = self.hosts_dir / record.id
        host = await asyncio.to_thread(machines.load, record.id, self.hosts_dir)
        if host is not None:
            # A launch that crashed after the machine was made: adopt it as it is.
            if machines.is_running(host):
                return host
            return await self._start_host(record, "launch")
        # Nothing was spawned: whatever a crashed launch left is rebuilt from scratch.
        await asyncio.to_thread(_local_disk.remove_tree, directory)
        record = await self._ensure_free_address(record)
        if record.snapshot is not None:
            snap = await self._usable_snapshot(record.snapshot)
            await asyncio.to_thread(
                _local_disk.extract_archive, Path(snap.location), directory, record.id
            )
        await asyncio.to_thread(_local_disk.make_volumes, directory, record.volumes, record.id)
        cgroup = await self._cgroup_for(record)
        init = _local_userdata.init_script(record.id, record.address, PORT, record.user_data)
        try:
            return await machines.start(
                record.id,
                record.address,
                base_dir=self.hosts_dir,
                port=PORT,
                isolation="namespaces",
                hostname=record.hostname,
                authorized_keys=[record.ssh_public_key],
                mounts=_local_disk.mounts(directory, record.volumes),
                cgroup=cgroup,
                init_script=init,
                contain=self.contain,  # a blueprint's scripts run as root there
                network=self._network_name,
                publish=record.ports,
                relays=self._relays,
            )
        except ProvisorError as exc:
            raise ProviderError(exc.message, machine=record.id, call="launch") from exc

    async def _power_off_replaced(self, machine_id: str) -> None:
        """Power off the machine a replacement is launched for, so that the replacement
        takes its address (machines that were given it keep reaching it); its disk is
        kept. One that cannot be powered off keeps its address, and the replacement
        gets another."""
        replaced = (await self._read()).machines.get(machine_id)
        if replaced is None or replaced.phase != "created":
            return
        try:
            await self.stop(machine_id)
        except ProviderError as exc:
            log.warning("machine %s (replaced) keeps its address: %s", machine_id, exc.message)

    async def _ensure_free_address(self, record: MachineRecord) -> MachineRecord:
        """Move a reserved machine to another address if something took its own since."""
        if _ssh_port_free(record.address):
            return record

        def move(data: RegistryData) -> MachineRecord:
            current = data.machines[record.id]
            current.address = self._allocate(data, avoid=current.address)
            return current

        moved = await self._registry.transact(move)
        log.info("machine %s: %s was taken, moved to %s", record.id, record.address, moved.address)
        return moved

    # --- power -------------------------------------------------------------------------------

    async def _start_host(self, record: MachineRecord, call: str) -> machines.SandboxHost:
        """Boot a machine that has a disk; its hostname, mounts and keys are on it."""
        loops = self._loop_files(record)
        if loops:
            await asyncio.to_thread(_local_disk.wait_loops_released, loops)
        cgroup = await self._cgroup_for(record)
        try:
            return await machines.start(
                record.id,
                record.address,
                base_dir=self.hosts_dir,
                port=PORT,
                isolation="namespaces",
                cgroup=cgroup,
                contain=self.contain,
                network=self._network_name,
                publish=record.ports,
                # The controller's endpoint now (a machine made by an older version of
                # this provider or without a controller keeps its own).
                relays=self._relays or None,
            )
        except ProvisorError as exc:
            raise ProviderError(exc.message, machine=record.id, call=call) from exc

    async def _power_on(self, record: MachineRecord, call: str) -> None:
        host = await self._start_host(record, call)
        if host.host_public_key != record.host_key:
            await self._update(record.id, host_key=host.host_public_key)

    async def _power_off(
        self, record: MachineRecord, host: machines.SandboxHost, call: str
    ) -> None:
        try:
            await machines.stop(host)
        except ProvisorError as exc:
            raise ProviderError(exc.message, machine=record.id, call=call) from exc
        loops = self._loop_files(record)
        if loops:
            left = await asyncio.to_thread(_local_disk.wait_loops_released, loops)
            if left:
                raise ProviderError(
                    f"loop devices {', '.join(left)} of its volumes are still attached",
                    machine=record.id,
                    call=call,
                )

    async def _discard(self, record: MachineRecord, call: str) -> None:
        """Remove everything of a machine on this computer: processes, disk, cgroup."""
        directory = self.hosts_dir / record.id
        try:
            host = await asyncio.to_thread(machines.load, record.id, self.hosts_dir)
        except ProvisorError:
            host = None  # a half-written host record: nothing runs that it could name
        try:
            if host is not None:
                await machines.destroy(host)
            else:
                await asyncio.to_thread(_local_disk.remove_tree, directory)
        except (ProvisorError, OSError) as exc:
            message = exc.message if isinstance(exc, ProvisorError) else str(exc)
            raise ProviderError(message, machine=record.id, call=call) from exc
        loops = self._loop_files(record)
        if loops:
            await asyncio.to_thread(_local_disk.wait_loops_released, loops)
        if record.cgroup:
            await asyncio.to_thread(_local_cgroup.remove, Path(record.cgroup))

    async def _memory_cgroups(self) -> _local_cgroup.MemoryCgroups | None:
        """Where machines' memory cgroups are made; None when limits are unavailable."""
        if not self._cgroups_known:
            await asyncio.to_thread(self._detect_cgroups)
        return self._cgroups

    def _detect_cgroups(self) -> None:
        with self._cgroups_lock:
            if not self._cgroups_known:
                self._cgroups = _local_cgroup.detect()
                self._cgroups_known = True

    def _loop_files(self, record: MachineRecord) -> list[Path]:
        directory = self.hosts_dir / record.id
        return [_local_disk.volume_path(directory, v) for v in record.volumes if v.kind == "loop"]

    async def _cgroup_for(self, record: MachineRecord) -> Path | None:
        """The machine's memory cgroup, made or refreshed; None when limits are unavailable."""
        if record.cgroup:
            path = Path(record.cgroup)
            if await asyncio.to_thread(_local_cgroup.apply_limit, path, record.memory_mb):
                return path
        groups = await self._memory_cgroups()
        if groups is None:
            return None
        try:
            path = await asyncio.to_thread(groups.create, record.id, record.memory_mb)
        except OSError as exc:
            log.warning(
                "machine %s: no memory cgroup (%s); its size is not enforced", record.id, exc
            )
            return None
        if record.cgroup != str(path):
            await self._update(record.id, cgroup=str(path))
            record.cgroup = str(path)
        return path

    # --- registry and state --------------------------------------------------------------------

    async def _read(self) -> RegistryData:
        return await asyncio.to_thread(self._registry.read)

    async def _update(self, machine_id: str, **changes: Any) -> MachineRecord:
        def change(data: RegistryData) -> MachineRecord:
            record = data.machines[machine_id]
            for key, value in changes.items():
                setattr(record, key, value)
            return record

        return await self._registry.transact(change)

    async def _record(self, machine_id: str, call: str) -> MachineRecord:
        """The machine's record as last written (that one alone is made from the file)."""
        record = await asyncio.to_thread(self._registry.machine, machine_id)
        if record is None:
            return self._get(RegistryData(), machine_id, call)  # raises: no such machine
        return record

    def _get(self, data: RegistryData, machine_id: str, call: str) -> MachineRecord:
        record = data.machines.get(machine_id)
        if record is None:
            raise ProviderError(
                f"no such machine in the local provider's registry ({self.state_dir})",
                machine=machine_id,
                call=call,
            )
        return record

    @contextlib.asynccontextmanager
    async def _locked(
        self, machine_id: str, call: str, *, known: bool = False
    ) -> AsyncIterator[MachineRecord]:
        """Hold the machine's lock; yields its record as it is once the lock is held.

        `known`: the caller has just seen the machine in the registry.
        """
        if not known:  # unknown: an error, and no lock file
            await self._record(machine_id, call)
        async with self._registry.machine_lock(machine_id, call):
            yield await self._record(machine_id, call)

    @staticmethod
    def _require_created(record: MachineRecord, call: str) -> None:
        """A made machine: not pending, not terminated."""
        machine_id = record.id
        if record.phase == "terminated":
            raise ProviderError("the machine is terminated", machine=machine_id, call=call)
        if record.phase == "pending":
            raise ProviderError(
                "the machine is still being launched (launch it again with its token to "
                "complete an interrupted launch)",
                machine=machine_id,
                call=call,
            )

    async def _host(self, record: MachineRecord, call: str) -> machines.SandboxHost:
        try:
            host = await asyncio.to_thread(machines.load, record.id, self.hosts_dir)
        except ProvisorError as exc:
            raise ProviderError(exc.message, machine=record.id, call=call) from exc
        if host is None:
            raise ProviderError(
                f"its disk is gone from {self.hosts_dir / record.id} (was the directory "
                "removed, or is it on a tmpfs that did not survive a restart?); terminate it",
                machine=record.id,
                call=call,
            )
        return host

    def _console_path(self, record: MachineRecord) -> Path:
        return self.hosts_dir / record.id / "console.log"

    def _keep_console(self, record: MachineRecord) -> None:
        text = _tail(self._console_path(record))
        if text:
            private_dir(self._console_dir)
            write_private(self._console_dir / f"{record.id}.log", text.encode())

    async def _info(self, record: MachineRecord) -> MachineInfo:
        return await asyncio.to_thread(self._info_sync, record)

    def _info_sync(self, record: MachineRecord) -> MachineInfo:
        state: MachineState
        host: machines.SandboxHost | None = None
        if record.phase == "terminated":
            state = MachineState.terminated
        else:
            try:
                host = machines.load(record.id, self.hosts_dir)
            except ProvisorError:
                host = None
            if record.phase == "pending":
                state = MachineState.error if record.error else MachineState.pending
            elif host is None:
                state = MachineState.error  # its disk is gone
            elif machines.is_running(host):
                state = MachineState.running
            else:
                state = MachineState.stopped
        gone = record.phase == "terminated"
        return MachineInfo(
            id=record.id,
            token=record.token,
            name=record.name,
            state=state,
            address=None if gone else record.address,
            port=PORT,
            login_user=LOGIN_USER,
            host_key=None if gone else (host.host_public_key if host else record.host_key),
            tags=dict(record.tags),
        )

    def _snapshot_named(
        self, data: RegistryData, name: str, machine_id: str
    ) -> SnapshotRecord | None:
        for snap in data.snapshots.values():
            if snap.name == name and not snap.deleted:
                if snap.machine_id != machine_id:
                    raise ProviderError(
                        f"snapshot name {name!r} is taken by {snap.id} of machine "
                        f"{snap.machine_id}",
                        machine=machine_id,
                        call="snapshot",
                    )
                return snap
        return None

    @staticmethod
    def _snapshot_info(snap: SnapshotRecord) -> SnapshotInfo:
        return SnapshotInfo(
            id=snap.id,
            machine_id=snap.machine_id,
            location=snap.location,
            size=snap.size,
            sha256=snap.sha256,
        )

    @staticmethod
    def _require_root(call: str) -> None:
        if os.geteuid() != 0:
            raise ProviderError(
                "local machines need root (namespaces, overlayfs, sshd on port 22); run "
                "provisor as root",
                call=call,
            )
