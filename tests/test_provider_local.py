"""The local provider against real sandbox machines: sshd, overlays, loop mounts; no mocks."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import asyncssh
import pytest

from machines_needed import clean_up_machines, requires_root
from provisor import machines
from provisor.machines import procs
from provisor.providers import (
    Capability,
    MachineInfo,
    MachineSpec,
    MachineState,
    Provider,
    ProviderError,
    Size,
    VolumeSpec,
    _local_disk,
)
from provisor.providers.local import LocalProvider
from provisor.testing.blocks import claim_block

pytestmark = pytest.mark.testbed


ROOT_TEST_DIR = Path("/run/provisor-test")  # as the testbed plugin: outside overlaid dirs
BLOCKS = range(100, 200)


def _claim_block() -> tuple[int, IO[str]]:
    """A 127.X.0.0/16 block with X in 100..199, locked as the testbed fixture locks its own
    (so the testbed and these tests never share one) and free of listeners."""
    return claim_block(ROOT_TEST_DIR / ".blocks", BLOCKS)


class Bed:
    """What a test gets: a provider of its own, a key pair, and ways to check machines."""

    def __init__(self, state_dir: Path, hosts_dir: Path, network: str) -> None:
        self.state_dir = state_dir
        self.hosts_dir = hosts_dir
        self.network = network
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.public_key = self.key.export_public_key().decode().strip()
        self.provider = self.new_provider()

    def new_provider(self, **options: object) -> LocalProvider:
        """Another provider over the same state, as another process would make it."""
        return LocalProvider(
            self.state_dir,
            network=self.network,
            hosts_dir=self.hosts_dir,
            **options,  # type: ignore[arg-type]
        )

    def spec(self, token: str | None = None, **fields: object) -> MachineSpec:
        token = token or f"t-{secrets.token_hex(4)}"
        values: dict[str, object] = {
            "token": token,
            "name": f"test-{token}",
            "hostname": f"{token}.example.test",
            "image": "debian-12",
            "ssh_public_key": self.public_key,
        }
        values.update(fields)
        return MachineSpec(**values)  # type: ignore[arg-type]

    async def ssh(self, info: MachineInfo, command: str) -> asyncssh.SSHCompletedProcess:
        """Run a command as the machine's login user with the spec's key, pinning its key."""
        assert info.address is not None and info.host_key is not None
        async with asyncssh.connect(
            info.address,
            info.port,
            username=info.login_user,
            client_keys=[self.key],
            known_hosts=asyncssh.import_known_hosts(f"{info.address} {info.host_key}\n"),
        ) as conn:
            return await conn.run(command)

    async def out(self, info: MachineInfo, command: str) -> str:
        result = await self.ssh(info, command)
        assert result.exit_status == 0, f"{command}: {result.stderr!r}"
        return str(result.stdout).strip()

    async def wait_user_data(self, info: MachineInfo, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.provider.user_data_status(info.id)
            if status is not None:
                return status
            await asyncio.sleep(0.05)
        log = await self.provider.console_log(info.id)
        raise AssertionError(f"user-data did not finish in {timeout} s; console:\n{log}")

    def host_dirs(self) -> list[Path]:
        if not self.hosts_dir.is_dir():
            return []
        return sorted(p for p in self.hosts_dir.iterdir() if p.name.startswith("m-"))


def _leftovers(hosts_dir: Path) -> list[str]:
    problems = [f"process {p}: {procs.cmdline(p)}" for p in procs.referring_to(hosts_dir)]
    problems += [f"loop device {d}" for d in _loop_devices_under(hosts_dir)]
    mounts = Path("/proc/self/mountinfo").read_text()
    problems += [f"mount: {line}" for line in mounts.splitlines() if f"{hosts_dir}/" in line]
    return problems


def _loop_devices_under(directory: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().startswith(f"{directory}/"):
                found.append(backing.parent.parent.name)
        except OSError:
            continue
    return found


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    block, lock = _claim_block()
    hosts_dir = ROOT_TEST_DIR / f"local-{secrets.token_hex(4)}"
    hosts_dir.mkdir(parents=True)
    # Lets `python -m provisor.testing cleanup` tell a live test run from a crashed one.
    (hosts_dir / ".session-pid").write_text(f"{os.getpid()}\n")
    test_bed = Bed(tmp_path / "state", hosts_dir, f"127.{block}.0.0/16")
    try:
        yield test_bed
    finally:

        async def terminate_all() -> list[BaseException]:
            provider = test_bed.new_provider()
            machines = await provider.describe()
            results = await asyncio.gather(
                *(provider.terminate(m.id) for m in machines), return_exceptions=True
            )
            return [r for r in results if isinstance(r, BaseException)]

        errors = asyncio.run(terminate_all()) if (tmp_path / "state").exists() else []
        problems = [f"terminate failed: {e!r}" for e in errors]
        problems += _leftovers(hosts_dir)
        problems += [f"machine directory left: {p}" for p in test_bed.host_dirs()]
        if problems:
            # Leave nothing for the next run whatever happened, then fail.
            clean_up_machines(hosts_dir)
        shutil.rmtree(hosts_dir, ignore_errors=True)
        lock.close()
        if problems:
            pytest.fail("local provider teardown:\n" + "\n".join(problems), pytrace=False)


# --- launching ---------------------------------------------------------------------------------


@requires_root
async def test_launch_gives_a_machine_reachable_with_the_specs_key(bed: Bed) -> None:
    provider = bed.provider
    assert isinstance(provider, Provider)
    assert provider.name == "local"
    assert Capability.public_address not in provider.capabilities
    assert provider.capabilities >= {
        Capability.stop_start,
        Capability.reboot,
        Capability.console,
        Capability.snapshots,
        Capability.volumes,
        Capability.user_data,
    }
    spec = bed.spec(size=Size(cpu=2, memory_mb=256), tags={"deployment": "shop"})

    info = await provider.launch(spec)

    assert info.state is MachineState.running
    assert info.id.startswith("m-") and info.token == spec.token and info.name == spec.name
    assert (info.port, info.login_user) == (22, "root")
    assert info.address is not None and info.address.startswith(bed.network.split(".0.0/")[0])
    assert info.host_key is not None and info.host_key.startswith("ssh-ed25519 ")
    assert info.tags == {"deployment": "shop"}
    assert await bed.out(info, "hostname") == spec.hostname
    assert await bed.out(info, "id -un") == "root"
    # The spec's key is authorized for root inside the machine, not on this computer.
    keys = await bed.out(info, "cat /root/.ssh/authorized_keys")
    assert spec.ssh_public_key in keys
    assert (
        not Path("/root/.ssh/authorized_keys").exists()
        or spec.ssh_public_key not in Path("/root/.ssh/authorized_keys").read_text()
    )
    assert await provider.find(spec.token) == info
    # Its memory size is a cgroup limit when this computer lets the provider set one.
    record = provider._registry.read().machines[info.id]
    if record.cgroup is not None:
        cgroup = Path(record.cgroup)
        limit = next(
            (cgroup / n).read_text().strip()
            for n in ("memory.max", "memory.limit_in_bytes")
            if (cgroup / n).exists()
        )
        assert int(limit) == 256 * 1024 * 1024
        members = (cgroup / "cgroup.procs").read_text().split()
        sshd = procs.children(machines.load(info.id, bed.hosts_dir).pid)  # type: ignore[union-attr]
        assert str(sshd[0]) in members


@requires_root
async def test_launch_is_idempotent_by_token(bed: Bed) -> None:
    spec = bed.spec()
    first = await bed.provider.launch(spec)
    await bed.provider.stop(first.id)

    again = await bed.provider.launch(spec)

    # The same machine, as it is now: launching again does not start it.
    assert again.id == first.id and again.state is MachineState.stopped
    assert len(await bed.provider.describe()) == 1
    assert len(bed.host_dirs()) == 1


@requires_root
def test_concurrent_launches_with_one_token_make_one_machine(bed: Bed) -> None:
    """Two threads, each with its own provider (own files, own locks, own event loop)."""
    spec = bed.spec()
    barrier = threading.Barrier(3)
    results: list[MachineInfo | BaseException] = []

    def launch() -> None:
        provider = bed.new_provider()
        barrier.wait()
        try:
            results.append(asyncio.run(provider.launch(spec)))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=launch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all(isinstance(r, MachineInfo) for r in results), results
    assert len({r.id for r in results if isinstance(r, MachineInfo)}) == 1
    assert all(r.state is MachineState.running for r in results if isinstance(r, MachineInfo))
    assert len(bed.host_dirs()) == 1
    assert len(asyncio.run(bed.provider.describe())) == 1


_LAUNCH_IN_A_PROCESS = """
import asyncio, sys
from pathlib import Path
from provisor.providers import MachineSpec
from provisor.providers.local import LocalProvider

state, hosts, network, token, key, mode = sys.argv[1:]
provider = LocalProvider(Path(state), network=network, hosts_dir=Path(hosts))
spec = MachineSpec(token=token, name=token, hostname="crash-test", image="debian-12",
                   ssh_public_key=key, user_data="#!/bin/sh\\necho once\\n")

async def main():
    if mode == "reserve-then-hang":
        record = await provider._reserve(spec)
        print(record.id, flush=True)
        await asyncio.sleep(3600)  # killed here: registered, nothing started
    else:
        print((await provider.launch(spec)).id, flush=True)

asyncio.run(main())
"""


def _launch_process(bed: Bed, token: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCH_IN_A_PROCESS, str(bed.state_dir), str(bed.hosts_dir),
         bed.network, token, bed.public_key, mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@requires_root
async def test_concurrent_launches_in_two_processes_make_one_machine(bed: Bed) -> None:
    token = f"t-{secrets.token_hex(4)}"
    procs = [_launch_process(bed, token, "launch") for _ in range(2)]
    outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in procs]

    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1
    (info,) = await bed.provider.describe()
    assert info.id in ids and info.state is MachineState.running
    assert len(bed.host_dirs()) == 1


@requires_root
async def test_a_launch_killed_after_registering_its_token_is_completed_later(bed: Bed) -> None:
    token = f"t-{secrets.token_hex(4)}"
    proc = _launch_process(bed, token, "reserve-then-hang")
    assert proc.stdout is not None
    reserved = (await asyncio.to_thread(proc.stdout.readline)).strip()
    assert reserved.startswith("m-"), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)  # the crash: the token is registered, no host exists
    await asyncio.to_thread(proc.wait)

    pending = await bed.provider.find(token)
    assert pending is not None and pending.id == reserved
    assert pending.state is MachineState.pending
    assert bed.host_dirs() == []
    with pytest.raises(ProviderError, match="still being launched"):
        await bed.provider.start(reserved)

    spec = bed.spec(token, hostname="crash-test", user_data="#!/bin/sh\necho once\n")
    info = await bed.new_provider().launch(spec)

    assert info.id == reserved and info.state is MachineState.running
    assert await bed.out(info, "hostname") == "crash-test"
    assert await bed.wait_user_data(info) == 0
    assert [m.id for m in await bed.provider.describe()] == [reserved]
    assert len(bed.host_dirs()) == 1


@requires_root
async def test_a_launch_that_crashed_after_booting_is_adopted(bed: Bed) -> None:
    """Crash between the host's boot and the registry's update: no second machine."""
    spec = bed.spec()
    record = await bed.provider._reserve(spec)
    host = await bed.provider._boot_new(record)  # booted; the registry still says pending
    assert (await bed.provider.find(spec.token)).state is MachineState.pending  # type: ignore[union-attr]

    info = await bed.new_provider().launch(spec)

    assert info.id == record.id and info.state is MachineState.running
    assert machines.load(record.id, bed.hosts_dir).pid == host.pid  # type: ignore[union-attr]
    assert info.host_key == host.host_public_key
    assert len(bed.host_dirs()) == 1


@requires_root
async def test_a_failed_launch_is_recorded_and_retried_with_its_token(bed: Bed) -> None:
    """A socket bound (not listening) to the machine's address:22 makes its sshd fail."""
    spec = bed.spec()
    first_address = bed.network.replace(".0.0/16", ".0.1")
    with socket.socket() as squatter:
        squatter.bind((first_address, 22))
        with pytest.raises(ProviderError, match="address already in use") as info:
            await bed.provider.launch(spec)
        assert info.value.call == "launch" and info.value.machine is not None
        failed = await bed.provider.find(spec.token)
        assert failed is not None and failed.state is MachineState.error
        assert bed.host_dirs() == []  # what the attempt made is gone

    retried = await bed.provider.launch(spec)

    assert retried.id == failed.id and retried.state is MachineState.running
    assert retried.address == first_address
    assert await bed.out(retried, "hostname") == spec.hostname


# --- describing ----------------------------------------------------------------------------


@requires_root
async def test_describe_many_at_once_and_by_tags(bed: Bed) -> None:
    specs = [
        bed.spec(tags={"deployment": "shop", "role": "web"}),
        bed.spec(tags={"deployment": "shop", "role": "db"}),
        bed.spec(tags={"deployment": "blog", "role": "web"}),
    ]
    launched = await asyncio.gather(*(bed.provider.launch(s) for s in specs))
    ids = [m.id for m in launched]
    assert len(set(ids)) == 3 and len({m.address for m in launched}) == 3

    described = await bed.provider.describe([ids[2], ids[0]])
    assert [m.id for m in described] == [ids[2], ids[0]]
    assert all(m.state is MachineState.running for m in described)
    shop = await bed.provider.describe(tags={"deployment": "shop"})
    assert sorted(m.id for m in shop) == sorted(ids[:2])
    web_shop = await bed.provider.describe(tags={"deployment": "shop", "role": "web"})
    assert [m.id for m in web_shop] == [ids[0]]
    assert await bed.provider.describe(tags={"deployment": "none"}) == []
    await bed.provider.stop(ids[1])
    states = {m.id: m.state for m in await bed.provider.describe()}
    assert states == {
        ids[0]: MachineState.running,
        ids[1]: MachineState.stopped,
        ids[2]: MachineState.running,
    }
    with pytest.raises(ProviderError, match="m-00000000") as info:
        await bed.provider.describe([ids[0], "m-00000000"])
    assert info.value.call == "describe"


# --- power -----------------------------------------------------------------------------------


@requires_root
async def test_stop_and_start_keep_files_and_reboot_kills_processes(bed: Bed) -> None:
    info = await bed.provider.launch(bed.spec())
    await bed.out(info, "echo kept > /srv/kept.txt; setsid nohup sleep 4711 >/dev/null 2>&1 &")
    assert "sleep 4711" in await bed.out(info, "ps -eo args")

    stopped = await bed.provider.stop(info.id)
    assert stopped.state is MachineState.stopped
    assert procs.referring_to(bed.provider.machine_directory(info.id)) == []
    assert not any("sleep 4711" in procs.cmdline(p) for p in procs.pids())
    assert (await bed.provider.stop(info.id)).state is MachineState.stopped  # idempotent

    started = await bed.provider.start(info.id)
    assert started.state is MachineState.running and started.address == info.address
    assert started.host_key == info.host_key
    assert await bed.out(started, "cat /srv/kept.txt") == "kept"
    assert "sleep 4711" not in await bed.out(started, "ps -eo args")

    await bed.out(started, "setsid nohup sleep 4712 >/dev/null 2>&1 &")
    rebooted = await bed.provider.reboot(info.id)
    assert rebooted.state is MachineState.running
    assert "sleep 4712" not in await bed.out(rebooted, "ps -eo args")
    assert await bed.out(rebooted, "cat /srv/kept.txt") == "kept"
    log = await bed.provider.console_log(info.id)
    assert log.count(f"provisor: booted {info.token}.example.test at ") == 3


@requires_root
async def test_terminate_is_idempotent_and_leaves_nothing(bed: Bed) -> None:
    provider = bed.new_provider(volume_kind="loop")
    spec = bed.spec(volumes=(VolumeSpec(1, "/var/lib/data"),), user_data="#!/bin/sh\necho bye\n")
    info = await provider.launch(spec)
    await bed.wait_user_data(info)
    directory = provider.machine_directory(info.id)
    volume = directory / "volumes" / "v0.img"
    assert volume.is_file()
    assert "/var/lib/data" in await bed.out(info, "grep /var/lib/data /proc/mounts")
    assert _loop_devices_under(directory)
    record = provider._registry.read().machines[info.id]

    gone = await provider.terminate(info.id)
    again = await provider.terminate(info.id)

    assert gone.state is again.state is MachineState.terminated
    assert gone.address is None
    assert not directory.exists() and not volume.exists()
    assert procs.referring_to(directory) == []
    assert _loop_devices_under(directory) == []
    if record.cgroup is not None:
        assert not Path(record.cgroup).exists()
    found = await provider.find(spec.token)
    assert found is not None and found.state is MachineState.terminated
    assert "echo bye" not in await provider.console_log(info.id)
    assert "bye" in await provider.console_log(info.id)  # kept after the machine is gone
    with pytest.raises(ProviderError, match="terminated") as error:
        await provider.start(info.id)
    assert error.value.machine == info.id
    # Launching with the token again gives the terminated machine, not a new one.
    assert (await provider.launch(spec)).state is MachineState.terminated


# --- user-data and console -----------------------------------------------------------------------


@requires_root
async def test_console_log_shows_a_shell_scripts_output(bed: Bed) -> None:
    script = "#!/bin/sh\necho hello from user-data\necho on stderr >&2\nhostname\nexit 3\n"
    spec = bed.spec(user_data=script)
    info = await bed.provider.launch(spec)

    assert await bed.wait_user_data(info) == 3

    log = await bed.provider.console_log(info.id)
    lines = log.splitlines()
    assert lines[0].startswith(f"provisor: booted {spec.hostname} at ")
    assert "hello from user-data" in lines and "on stderr" in lines
    assert spec.hostname in lines
    assert lines[-1] == "provisor: user-data exit status 3"
    assert await bed.out(info, "cat /var/lib/provisor/user-data.done") == "3"
    # User-data may hold secrets: only root reads it, its output and the boot script.
    assert await bed.out(info, "stat -c %a /var/lib/provisor/user-data") == "700"
    directory = bed.provider.machine_directory(info.id)
    assert (directory / "console.log").stat().st_mode & 0o777 == 0o600
    assert (directory / "init.sh").stat().st_mode & 0o777 == 0o700
    # Inside the machine too, where cloud-init users look.
    assert "hello from user-data" in await bed.out(info, "cat /var/log/provisor-console.log")
    # It runs once: not again at the next boot.
    await bed.provider.reboot(info.id)
    await asyncio.sleep(0.3)
    log = await bed.provider.console_log(info.id)
    assert log.count("hello from user-data") == 1 and log.count("provisor: booted") == 2


@requires_root
async def test_cloud_config_writes_files_and_runs_commands(bed: Bed) -> None:
    config = textwrap.dedent(
        """\
        #cloud-config
        packages: [nginx, postgresql]
        write_files:
          - path: /etc/shop/app.conf
            content: |
              listen = 8080
            permissions: '0640'
          - path: /srv/blob.bin
            encoding: b64
            content: aGVsbG8gYmluYXJ5
        runcmd:
          - echo "runcmd sees $(cat /etc/shop/app.conf)"
          - [sh, -c, 'echo argv form > /srv/argv.txt']
          - "false"
          - echo after failure
        """
    )
    info = await bed.provider.launch(bed.spec(user_data=config))

    assert await bed.wait_user_data(info) == 1  # the first failing command's status

    assert await bed.out(info, "stat -c '%a %U' /etc/shop/app.conf") == "640 root"
    assert await bed.out(info, "cat /etc/shop/app.conf") == "listen = 8080"
    assert await bed.out(info, "cat /srv/blob.bin") == "hello binary"
    assert await bed.out(info, "cat /srv/argv.txt") == "argv form"
    log = await bed.provider.console_log(info.id)
    assert "runcmd sees listen = 8080" in log
    assert "after failure" in log and "provisor: runcmd[2] exit status 1" in log
    assert "packages ignored" in log and "nginx postgresql" in log
    assert "provisor: user-data exit status 1" in log


@requires_root
@pytest.mark.parametrize(
    ("user_data", "message"),
    [
        ("echo no shebang", "expected a script"),
        ("#cloud-config\nruncmd: [", "line 3, column 1: invalid YAML"),
        ("#cloud-config\nwrite_files:\n  - content: x\n", "absolute path"),
        ("#cloud-config\nruncmd: echo\n", "runcmd must be a list"),
    ],
)
async def test_malformed_user_data_is_refused_before_anything_is_made(
    bed: Bed, user_data: str, message: str
) -> None:
    spec = bed.spec(user_data=user_data)
    with pytest.raises(ProviderError, match=message) as info:
        await bed.provider.launch(spec)
    assert info.value.call == "launch"
    assert await bed.provider.find(spec.token) is None


# --- volumes -------------------------------------------------------------------------------------


@requires_root
@pytest.mark.parametrize("kind", ["dir", "loop"])
async def test_volumes_survive_a_reboot_and_are_private(bed: Bed, kind: str) -> None:
    provider = bed.new_provider(volume_kind=kind)
    volumes = (VolumeSpec(1, "/srv/data"), VolumeSpec(2, "/var/lib/postgresql"))
    a, b = await asyncio.gather(
        provider.launch(bed.spec(volumes=volumes)), provider.launch(bed.spec(volumes=volumes))
    )
    await bed.out(a, "echo on-a > /srv/data/file; echo pg > /var/lib/postgresql/PG_VERSION")
    mounts = await bed.out(a, "cat /proc/mounts")
    assert " /srv/data " in mounts and " /var/lib/postgresql " in mounts
    if kind == "loop":
        assert await bed.out(a, "df -P /srv/data | tail -1 | cut -d' ' -f1") != await bed.out(
            a, "df -P /srv | tail -1 | cut -d' ' -f1"
        )
        size = (provider.machine_directory(a.id) / "volumes" / "v1.img").stat()
        assert size.st_size == 2 * 1024**3 and size.st_blocks * 512 < size.st_size  # sparse

    a = await provider.reboot(a.id)

    assert await bed.out(a, "cat /srv/data/file") == "on-a"
    assert await bed.out(a, "cat /var/lib/postgresql/PG_VERSION") == "pg"
    assert await bed.out(b, "ls -A /srv/data | grep -v lost+found || true") == ""
    assert (await bed.ssh(b, "test -e /srv/data/file")).exit_status == 1
    assert not Path("/srv/data/file").exists()  # nothing on this computer's own /srv
    await provider.stop(a.id)
    await provider.start(a.id)
    assert await bed.out(a, "cat /srv/data/file") == "on-a"


@requires_root
async def test_volume_mount_points_outside_the_machines_disk_are_refused(bed: Bed) -> None:
    for mount in ("/data", "/proc/x", "relative", "/srv/../etc"):
        with pytest.raises(ProviderError, match="volume"):
            await bed.provider.launch(bed.spec(volumes=(VolumeSpec(1, mount),)))
    assert await bed.provider.describe() == []
    assert not Path("/data").exists() or Path("/data").is_dir()


# --- snapshots ----------------------------------------------------------------------------------


@requires_root
async def test_launch_from_a_snapshot_has_the_files_written_before(bed: Bed) -> None:
    provider = bed.new_provider(volume_kind="loop")
    source = await provider.launch(
        bed.spec(
            volumes=(VolumeSpec(1, "/srv/data"),),
            user_data="#!/bin/sh\necho ran-once >> /srv/runs\n",
        )
    )
    await bed.wait_user_data(source)
    await bed.out(source, "echo before > /etc/marker; echo vol > /srv/data/v; rm /etc/motd")

    snap = await provider.snapshot(source.id, "before-upgrade")

    archive = Path(snap.location)
    assert snap.id.startswith("snap-") and snap.machine_id == source.id
    assert archive.is_file() and archive.stat().st_size == snap.size
    assert _local_disk.file_sha256(archive) == (snap.size, snap.sha256)
    assert await provider.snapshot(source.id, "before-upgrade") == snap  # a retry: the same
    await bed.out(source, "echo after > /etc/marker")

    copy = await provider.launch(bed.spec(image=snap.id, hostname="copy-1"))

    assert copy.id != source.id and copy.address != source.address
    assert copy.host_key != source.host_key
    assert await bed.out(copy, "hostname") == "copy-1"
    assert await bed.out(copy, "cat /etc/marker") == "before"
    assert await bed.out(copy, "cat /srv/data/v") == "vol"
    assert (await bed.ssh(copy, "test -e /etc/motd")).exit_status == 1  # a whiteout kept
    assert await bed.out(copy, "grep copy-1 /etc/hosts | cut -f1") == copy.address
    # Its user-data ran on the source machine, not again on the copy.
    await asyncio.sleep(0.3)
    assert await bed.out(copy, "cat /srv/runs") == "ran-once"
    assert await bed.out(source, "cat /etc/marker") == "after"
    assert [s.id for s in await provider.snapshots()] == [snap.id]

    await provider.delete_snapshot(snap.id)
    await provider.delete_snapshot(snap.id)  # idempotent
    assert not archive.exists()
    with pytest.raises(ProviderError, match="deleted snapshot"):
        await provider.launch(bed.spec(image=snap.id))
    assert await bed.out(copy, "cat /etc/marker") == "before"  # the copy has its own disk


@requires_root
async def test_a_replacement_takes_the_address_of_the_machine_it_replaces(bed: Bed) -> None:
    """A restore's launch (`replaces`): the machine replaced is powered off, its disk
    kept, and the replacement answers at its address; with nothing to take over, a
    launch gets an address of its own."""
    provider = bed.provider
    old = await provider.launch(bed.spec())
    await bed.out(old, "echo backed-up > /srv/who")
    snap = await provider.snapshot(old.id, "backup")

    new = await provider.launch(bed.spec(image=snap.id, hostname="web1", replaces=old.id))

    assert new.id != old.id and new.address == old.address
    assert new.host_key != old.host_key
    [replaced] = await provider.describe([old.id])
    assert replaced.state is MachineState.stopped
    assert (bed.provider.machine_directory(old.id) / _local_disk.UPPER).is_dir()
    assert await bed.out(new, "cat /srv/who") == "backed-up"
    assert await bed.out(new, "hostname") == "web1"
    await provider.terminate(old.id)
    assert await bed.out(new, "cat /srv/who") == "backed-up"  # the old one's end is not its
    other = await provider.launch(bed.spec(replaces=old.id))  # terminated: nothing to take
    unknown = await provider.launch(bed.spec(replaces="m-00000000"))
    assert len({new.address, other.address, unknown.address}) == 3


@requires_root
async def test_a_corrupted_snapshot_is_refused(bed: Bed) -> None:
    source = await bed.provider.launch(bed.spec())
    await bed.out(source, "echo x > /srv/x")
    snap = await bed.provider.snapshot(source.id, "nightly")
    archive = Path(snap.location)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))

    spec = bed.spec(image=snap.id)
    with pytest.raises(ProviderError, match=f"snapshot {snap.id} is corrupted") as info:
        await bed.provider.launch(spec)

    assert snap.sha256 in str(info.value) and info.value.call == "launch"
    assert await bed.provider.find(spec.token) is None
    assert len(bed.host_dirs()) == 1


# --- errors --------------------------------------------------------------------------------------


@requires_root
async def test_unknown_images_and_machines_are_named(bed: Bed) -> None:
    with pytest.raises(ProviderError, match=r"'ubuntu-22\.04'"):
        await bed.provider.launch(bed.spec(image="ubuntu-22.04"))
    with pytest.raises(ProviderError, match="snap-12345678"):
        await bed.provider.launch(bed.spec(image="snap-12345678"))
    info = await bed.provider.launch(bed.spec(image="debian-12-bookworm"))
    assert info.state is MachineState.running
    for call in ("stop", "start", "reboot", "terminate", "console_log"):
        with pytest.raises(ProviderError, match="no such machine") as error:
            await getattr(bed.provider, call)("m-deadbeef")
        assert error.value.machine == "m-deadbeef" and error.value.call == call
    with pytest.raises(ProviderError, match="snap-00000000"):
        await bed.provider.delete_snapshot("snap-00000000")
    with pytest.raises(ProviderError, match=r"127\.0\.0\.0/8"):
        LocalProvider(bed.state_dir, network="10.0.0.0/24")
    with pytest.raises(ProviderError, match="hostname"):
        await bed.provider.launch(bed.spec(hostname="bad_host!"))
    with pytest.raises(ProviderError, match="ssh_public_key"):
        await bed.provider.launch(bed.spec(ssh_public_key="not a key"))
    in_tmp = LocalProvider(bed.state_dir, network=bed.network, hosts_dir=bed.state_dir / "hosts")
    spec = bed.spec()
    with pytest.raises(ProviderError, match="overlapping layers"):
        await in_tmp.launch(spec)
    assert await bed.provider.find(spec.token) is None
    assert len(await bed.provider.describe()) == 1


# --- many at once --------------------------------------------------------------------------------


@requires_root
async def test_ten_machines_launch_concurrently(
    bed: Bed, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [bed.spec() for _ in range(10)]
    started = time.monotonic()
    machines = await asyncio.gather(*(bed.provider.launch(s) for s in specs))
    elapsed = time.monotonic() - started

    assert len({m.address for m in machines}) == 10
    hostnames = await asyncio.gather(*(bed.out(m, "hostname") for m in machines))
    assert hostnames == [s.hostname for s in specs]
    with capsys.disabled():
        print(f"\n10 concurrent launches: {elapsed:.2f} s ({elapsed / 10:.3f} s per machine)")
