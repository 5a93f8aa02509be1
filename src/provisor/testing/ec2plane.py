"""The data plane moto lacks: real machines for the instances moto pretends to run.

moto keeps EC2's records (instances, states, tags, user data) but runs nothing, so an
`ec2` provider tested against it could never SSH into what it launched. `DataPlane`
watches moto and, for every instance tagged `provisor:machine`, keeps a machine of
the local provider (a real OpenSSH host on a loopback address) in the same power
state: launched when the instance runs, stopped and started with it, terminated with
it. It writes where each instance's SSH answers to a JSON map file,
`{"i-0abc...": "127.101.0.2"}`, which the tests hand to the provider.

    with DataPlane(moto.url, "us-east-1", LocalProvider(..., contain=False), public_key,
                   map_file) as plane:
        ...run instances through the provider...
        address = plane.wait_mapped(instance_id)

It polls moto directly, not through the fault proxy: the faults are for the provider.
moto's RebootInstances changes nothing moto reports, so reboots are not mirrored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import json
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisor.core.errors import ProvisorError
from provisor.machines import validate_hostname
from provisor.providers.base import MachineInfo, MachineSpec, MachineState
from provisor.providers.local import LocalProvider
from provisor.testing._background import Background
from provisor.testing.moto import ec2_client

__all__ = ["MACHINE_TAG", "DataPlane", "DataPlaneError"]

MACHINE_TAG = "provisor:machine"  # instances with this tag get a machine
POLL_INTERVAL = 0.2  # seconds
_DOWN = ("stopping", "stopped")
_GONE = ("shutting-down", "terminated")


class DataPlaneError(RuntimeError):
    """Something failed in the data plane's thread; `errors` has every failure."""

    def __init__(self, errors: list[BaseException]) -> None:
        lines = "\n".join(f"- {type(e).__name__}: {e}" for e in errors)
        super().__init__(f"the EC2 data plane failed {len(errors)} time(s):\n{lines}")
        self.errors = errors


@dataclass
class _Machine:
    """The local machine that stands for one instance."""

    machine_id: str
    address: str
    powered: bool = True


class DataPlane(Background):
    """Mirror moto's tagged instances onto local machines, from a background thread."""

    def __init__(
        self,
        moto_url: str,
        region: str,
        local_provider: LocalProvider,
        public_key: str,
        map_file: Path,
        *,
        interval: float = POLL_INTERVAL,
        on_launched: Callable[[str, MachineInfo], Awaitable[None]] | None = None,
    ) -> None:
        """`on_launched(instance id, machine)` runs once an instance's machine is up, before
        the map names it (so before provisor can reach it): tests change the machine there."""
        self.on_launched = on_launched
        self.moto_url = moto_url
        self.region = region
        self.provider = local_provider
        self.public_key = public_key
        self.map_file = Path(map_file)
        self.interval = interval
        self.mapped_addresses: set[str] = set()  # every address ever in the map
        self._errors: list[BaseException] = []
        self._machines: dict[str, _Machine] = {}  # instance id -> its machine
        self._launched: set[str] = set()  # instance ids a launch was tried for
        self._failed: set[str] = set()  # instances left alone after an error
        self._lock = threading.Lock()
        self._map_lock = threading.Lock()  # one writer at a time: the newest map wins
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    @property
    def errors(self) -> list[BaseException]:
        """Every failure of the thread so far (a launch, a poll, a stop...)."""
        with self._lock:
            return list(self._errors)

    def mapping(self) -> dict[str, str]:
        """Instance id -> address of its machine, as in the map file."""
        with self._lock:
            return {i: m.address for i, m in self._machines.items()}

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the data plane is already started")
        self._client = ec2_client(self.moto_url, self.region)
        self._write_map()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ec2-data-plane", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, terminate every machine launched, raise what went wrong."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        errors = self.errors
        if errors:
            raise DataPlaneError(errors)

    def wait_mapped(self, instance_id: str, timeout: float = 60.0) -> str:
        """The address of the instance's machine, once it has one."""
        self._wait(lambda: instance_id in self.mapping(), timeout, f"{instance_id} mapped")
        return self.mapping()[instance_id]

    def wait_unmapped(self, instance_id: str, timeout: float = 60.0) -> None:
        """Until the instance's machine is gone from the map (the instance terminated)."""
        self._wait(lambda: instance_id not in self.mapping(), timeout, f"{instance_id} unmapped")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.errors:
                raise DataPlaneError(self.errors)
            if time.monotonic() > deadline:
                raise TimeoutError(f"data plane: not {what} within {timeout:.0f} s")
            time.sleep(0.05)

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # kept, raised by stop()
            self._record(exc)

    async def _main(self) -> None:
        busy: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set():
                try:
                    instances = await asyncio.to_thread(self._describe)
                except Exception as exc:
                    self._record(exc)
                else:
                    busy = {i: t for i, t in busy.items() if not t.done()}
                    for instance_id, job in self._jobs(instances, busy).items():
                        busy[instance_id] = asyncio.create_task(self._guarded(instance_id, job))
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.gather(*busy.values(), return_exceptions=True)
            await self._terminate_all()

    def _describe(self) -> dict[str, dict[str, Any]]:
        """moto's tagged instances: id -> {"state": ..., "tags": {...}}."""
        found: dict[str, dict[str, Any]] = {}
        pages = self._client.get_paginator("describe_instances").paginate()
        for page in pages:
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                    if MACHINE_TAG in tags:
                        state = instance["State"]["Name"]
                        found[instance["InstanceId"]] = {"state": state, "tags": tags}
        return found

    def _jobs(
        self, instances: dict[str, dict[str, Any]], busy: dict[str, asyncio.Task[None]]
    ) -> dict[str, Awaitable[None]]:
        """What to do now for each instance whose machine is not being changed already."""
        jobs: dict[str, Awaitable[None]] = {}
        with self._lock:
            machines = dict(self._machines)
            failed = set(self._failed)
        for instance_id, instance in instances.items():
            if instance_id in busy or instance_id in failed:
                continue
            machine, state = machines.get(instance_id), instance["state"]
            if machine is None:
                if state == "running" and instance_id not in self._launched:
                    jobs[instance_id] = self._launch(instance_id, instance["tags"])
            elif state in _GONE:
                jobs[instance_id] = self._terminate(instance_id, machine)
            elif state in _DOWN and machine.powered:
                jobs[instance_id] = self._power(instance_id, machine, on=False)
            elif state == "running" and not machine.powered:
                jobs[instance_id] = self._power(instance_id, machine, on=True)
        for instance_id, machine in machines.items():
            if instance_id not in instances and instance_id not in busy:
                jobs[instance_id] = self._terminate(instance_id, machine)  # moto forgot it
        return jobs

    async def _guarded(self, instance_id: str, job: Awaitable[None]) -> None:
        """Run one job; a failure is recorded and the instance left alone from then on."""
        try:
            await job
        except Exception as exc:
            self._record(exc, instance_id)

    async def _launch(self, instance_id: str, tags: dict[str, str]) -> None:
        self._launched.add(instance_id)
        name = tags[MACHINE_TAG]
        user_data = await asyncio.to_thread(self._user_data, instance_id)
        spec = MachineSpec(
            token=instance_id,
            name=name,
            hostname=_hostname(tags.get("Name"), name),
            image="debian",
            ssh_public_key=self.public_key,
            user_data=user_data,
            tags={"ec2:instance-id": instance_id},
        )
        info = await self.provider.launch(spec)
        if info.address is None:
            raise RuntimeError(f"instance {instance_id}: local machine {info.id} has no address")
        if info.port != 22:
            raise RuntimeError(
                f"instance {instance_id}: local machine {info.id} is on port "
                f"{info.port}; the map only carries addresses (port 22)"
            )
        if self.on_launched is not None:
            await self.on_launched(instance_id, info)
        with self._lock:
            self._machines[instance_id] = _Machine(info.id, info.address)
            self.mapped_addresses.add(info.address)
        await asyncio.to_thread(self._write_map)

    def _user_data(self, instance_id: str) -> str | None:
        answer = self._client.describe_instance_attribute(
            InstanceId=instance_id, Attribute="userData"
        )
        value = answer.get("UserData", {}).get("Value")
        if not value:
            return None
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise RuntimeError(f"instance {instance_id}: user data is not base64: {exc}") from exc
        if data[:2] == b"\x1f\x8b":  # cloud-init takes gzipped user data too
            data = gzip.decompress(data)
        return data.decode("utf-8", "replace")

    async def _power(self, instance_id: str, machine: _Machine, *, on: bool) -> None:
        if on:
            await self.provider.start(machine.machine_id)
        else:
            await self.provider.stop(machine.machine_id)
        with self._lock:
            machine.powered = on

    async def _terminate(self, instance_id: str, machine: _Machine) -> None:
        await self.provider.terminate(machine.machine_id)
        with self._lock:
            self._machines.pop(instance_id, None)
        await asyncio.to_thread(self._write_map)

    async def _terminate_all(self) -> None:
        """Terminate every machine a launch was tried for (failed launches included)."""

        async def one(token: str) -> None:
            info = await self.provider.find(token)
            if info is not None and info.state != MachineState.terminated:
                await self.provider.terminate(info.id)

        results = await asyncio.gather(
            *(one(t) for t in sorted(self._launched)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                self._record(result)
        with self._lock:
            self._machines.clear()
        self._write_map()

    # --- state -------------------------------------------------------------------------------

    def _record(self, exc: BaseException, instance_id: str | None = None) -> None:
        if isinstance(exc, ProvisorError) and instance_id is not None:
            exc = RuntimeError(f"instance {instance_id}: {exc.message}")
        elif instance_id is not None:
            exc = RuntimeError(f"instance {instance_id}: {type(exc).__name__}: {exc}")
        with self._lock:
            if instance_id is not None:
                self._failed.add(instance_id)
            # A poll failing every 0.2 s (moto down) is one failure, not hundreds.
            if not self._errors or repr(self._errors[-1]) != repr(exc):
                self._errors.append(exc)

    def _write_map(self) -> None:
        """The map file, replaced atomically: readers never see half of it."""
        with self._map_lock:
            self._replace_map()

    def _replace_map(self) -> None:
        with self._lock:
            data = {i: m.address for i, m in sorted(self._machines.items())}
        self.map_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{self.map_file.name}.", dir=self.map_file.parent)
        try:
            with os.fdopen(handle, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(temp, self.map_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def _hostname(name_tag: str | None, machine_name: str) -> str:
    """The Name tag when it is a valid hostname (EC2 allows any text), else the name."""
    for candidate in (name_tag, machine_name):
        if candidate:
            try:
                return validate_hostname(candidate)
            except ProvisorError:
                continue
    return "machine"
