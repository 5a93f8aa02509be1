"""A hostile script on a `local` machine stays inside it: no write, read or signal reaches
this computer, and its root is not this computer's root. Real machines, real sshd."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from machines_needed import clean_up_machines, requires_root
from provisor import machines
from provisor.machines import _containment, procs
from provisor.providers import IngressRule, MachineInfo, MachineSpec
from provisor.providers.local import LocalProvider
from provisor.testing.blocks import claim_block

pytestmark = [pytest.mark.testbed, requires_root]

ROOT_TEST_DIR = Path("/run/provisor-test")  # outside the machines' overlaid directories
BLOCKS = range(200, 230)
# Outside every overlaid directory, on the computer's own root filesystem.
OUTSIDE = Path("/mnt")


class Local:
    def __init__(self, state_dir: Path, hosts_dir: Path, network: str) -> None:
        self.provider = LocalProvider(state_dir, network=network, hosts_dir=hosts_dir)
        self.hosts_dir = hosts_dir
        self.key = asyncssh.generate_private_key("ssh-ed25519")

    async def launch(
        self,
        user_data: str | None = None,
        image: str = "debian-12",
        ingress: tuple[IngressRule, ...] = (),
    ) -> MachineInfo:
        token = f"c-{secrets.token_hex(4)}"
        return await self.provider.launch(
            MachineSpec(
                token=token,
                name=token,
                hostname=token,
                image=image,
                ssh_public_key=self.key.export_public_key().decode().strip(),
                user_data=user_data,
                ingress=ingress,
            )
        )

    async def run(self, info: MachineInfo, command: str) -> asyncssh.SSHCompletedProcess:
        assert info.address is not None and info.host_key is not None
        async with asyncssh.connect(
            info.address,
            username="root",
            client_keys=[self.key],
            known_hosts=asyncssh.import_known_hosts(f"{info.address} {info.host_key}\n"),
        ) as conn:
            return await conn.run(command)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    block, lock = claim_block(ROOT_TEST_DIR / ".blocks", BLOCKS)
    hosts_dir = ROOT_TEST_DIR / f"contain-{secrets.token_hex(4)}"
    hosts_dir.mkdir(parents=True)
    (hosts_dir / ".session-pid").write_text(f"{os.getpid()}\n")
    bed = Local(tmp_path / "home" / "local-provider", hosts_dir, f"127.{block}.0.0/16")
    try:
        yield bed
    finally:

        async def terminate_all() -> None:
            for info in await bed.provider.describe():
                await bed.provider.terminate(info.id)

        try:
            asyncio.run(terminate_all())
        finally:
            clean_up_machines(hosts_dir)
            shutil.rmtree(hosts_dir, ignore_errors=True)
            lock.close()


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A world-writable directory of this computer, outside the machines' overlays."""
    directory = OUTSIDE / f"provisor-containment-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o1777)
    directory.chmod(0o1777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _machine_processes(hosts_dir: Path, info: MachineInfo) -> list[int]:
    host = machines.load(info.id, hosts_dir)
    assert host is not None and host.contained
    return procs.descendants(host.pid)


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(u) for u in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


async def test_a_hostile_user_data_script_reaches_nothing_of_this_computer(
    local: Local, outside: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # the controller's data directory (PROVISOR_HOME)
    home.mkdir(exist_ok=True)
    (home / "secret.key").write_text("controller secret\n")
    home.chmod(0o700)
    victim = subprocess.Popen(["sleep", "300"])
    report = "/var/lib/hostile.report"
    script = textwrap.dedent(
        f"""\
        #!/bin/sh
        exec > {report} 2>&1
        try() {{
            if sh -c "$2" >/dev/null 2>&1; then echo "$1 ESCAPED"; else echo "$1 refused"; fi
        }}
        try write-outside {shlex.quote(f"echo pwned > {outside}/marker")}
        try write-tmp-outside {shlex.quote(f"echo pwned > {tmp_path}/marker")}
        echo x > /dev/shm/provisor-marker  # the machine's own /dev/shm
        try signal {shlex.quote(f"kill -0 {victim.pid}")}
        try see-process {shlex.quote(f"test -e /proc/{victim.pid}")}
        try list-process {shlex.quote("ps ax | grep -q '[s]leep 300'")}
        try read-home {shlex.quote(f"cat {home}/secret.key")}
        try list-home {shlex.quote(f"ls {home}")}
        try read-host-shadow 'grep -q "^root:[^*!:]" /etc/shadow'
        echo "uid $(id -u)"
        """
    )
    try:
        info = await local.launch(user_data=script)
        for _ in range(200):
            status = await local.provider.user_data_status(info.id)
            if status is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(await local.provider.console_log(info.id))
        result = await local.run(info, f"cat {report}")
        lines = str(result.stdout).splitlines()
        assert "uid 0" in lines, lines  # root inside the machine
        escaped = [line for line in lines if "ESCAPED" in line]
        assert escaped == [], lines
        assert len([line for line in lines if line.endswith(" refused")]) == 8, lines
        assert not (outside / "marker").exists() and not (tmp_path / "marker").exists()
        assert not Path("/dev/shm/provisor-marker").exists()
        assert victim.poll() is None  # alive
        # Seen from this computer, every process of the machine is an unprivileged uid.
        pids = _machine_processes(local.hosts_dir, info)
        assert pids
        for pid in pids:
            try:
                uids = _uids(pid)
            except FileNotFoundError:
                continue  # ended since it was listed (an SSH session's processes)
            assert uids == [_containment.UID_BASE] * 4, (pid, procs.cmdline(pid))
    finally:
        victim.kill()
        victim.wait()


async def test_a_session_cannot_undo_its_mounts_to_reach_the_machine_directory(
    local: Local,
) -> None:
    info = await local.launch()
    directory = local.hosts_dir / info.id
    # The host record and boot files are read by this computer's root: the machine
    # sees them read-only, and cannot unmount what hides its writable views.
    command = (
        f"echo x >> {directory}/host.json; echo rc=$?; "
        f"umount -l {directory} 2>/dev/null; echo umount=$?; "
        "umount -l /run 2>/dev/null; echo umount-run=$?; "
        f"ls {directory}/.views/disk | wc -l"
    )
    result = await local.run(info, command)
    out = str(result.stdout).split()
    assert out[:3] == ["rc=1", "umount=32", "umount-run=32"], result.stdout
    assert out[3] == "0", result.stdout  # the view's mount point, empty
    assert b"x\n" not in (directory / "host.json").read_bytes()[-2:]
    assert await local.run(info, "id -u") and (await local.run(info, "id -u")).stdout == "0\n"


async def test_a_machine_cannot_connect_to_a_listener_of_this_computer(local: Local) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        info = await local.launch()
        probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 3)'"
        result = await local.run(info, probe)
        assert result.exit_status != 0
        assert "ConnectionRefusedError" in str(result.stderr), result.stderr
        # The same probe from this computer connects: the listener was there all along.
        with socket.create_connection(("127.0.0.1", port), 3):
            pass


async def test_machines_reach_each_other_and_this_computer_only_their_published_ports(
    local: Local,
) -> None:
    server = local.launch(ingress=(IngressRule("tcp", (8080, 8080)),))
    peer = local.launch()
    info, other = await asyncio.gather(server, peer)
    serve = "for p in 8080 8081; do nohup python3 -m http.server $p >/dev/null 2>&1 & done"
    await local.run(info, serve)
    fetch = (
        "import sys, urllib.request\n"
        "for port in (8080, 8081):\n"
        "    url = f'http://{sys.argv[1]}:{port}/'\n"
        "    for _ in range(100):\n"
        "        try:\n"
        "            print(port, urllib.request.urlopen(url, timeout=3).status)\n"
        "            break\n"
        "        except OSError:\n"
        "            import time; time.sleep(0.05)\n"
    )
    assert info.address is not None
    result = await local.run(other, f"python3 -c {shlex.quote(fetch)} {info.address}")
    assert result.stdout == "8080 200\n8081 200\n", result.stderr  # a peer reaches both
    with socket.create_connection((info.address, 8080), 3) as published:
        published.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert published.recv(12).startswith(b"HTTP/1.0 200")
    with pytest.raises(ConnectionRefusedError):  # not in the machine's ingress
        socket.create_connection((info.address, 8081), 3).close()


async def test_without_containment_a_warning_says_so(
    local: Local, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(_containment.OFF_VARIABLE, "off")
    caplog.set_level(logging.WARNING, logger="provisor.machines")
    info = await local.launch()
    host = machines.load(info.id, local.hosts_dir)
    assert host is not None and not host.contained
    assert [r.getMessage() for r in caplog.records if "NOT contained" in r.getMessage()]
    assert (await local.run(info, "id -u")).stdout == "0\n"
    init = procs.children(host.pid)
    assert init and _uids(init[0])[0] == 0  # the real root: what the warning warns of


async def test_links_a_machine_leaves_on_its_disk_are_not_followed_at_boot(
    local: Local, outside: Path
) -> None:
    """What the computer's root writes into a machine's disk at boot (its account
    files) is never written through the machine's symbolic links."""
    info = await local.launch()
    target = outside / "written-by-root"
    command = f"rm -f /etc/gshadow && ln -s {target} /etc/gshadow"
    assert (await local.run(info, command)).exit_status == 0
    info = await local.provider.reboot(info.id)
    assert not target.exists()
    assert (await local.run(info, "readlink /etc/gshadow")).stdout == f"{target}\n"


async def test_links_in_a_snapshot_are_not_followed_when_a_machine_is_made_from_it(
    local: Local, outside: Path
) -> None:
    """A new machine's identity (hostname, hosts, root's keys and dot files) is written
    into a disk the old machine's root filled: never through the links it left."""
    info = await local.launch()
    links = {
        "/etc/hostname": outside / "hostname",
        "/etc/hosts": outside / "hosts",
        "/root/.ssh": outside / "ssh",
        "/root/.profile": outside / "profile",
    }
    made = " && ".join(f"rm -rf {path} && ln -s {target} {path}" for path, target in links.items())
    # The new machine must log in through its own .ssh: a link to `outside/ssh`, where
    # this computer's root would write authorized_keys, must become a directory again.
    (outside / "ssh").mkdir()
    assert (await local.run(info, made)).exit_status == 0, made
    snap = await local.provider.snapshot(info.id, "with-links")
    copy = await local.launch(image=snap.id)
    assert sorted(p.name for p in outside.iterdir()) == ["ssh"]
    assert list((outside / "ssh").iterdir()) == []
    hostname = await local.run(copy, "hostname -f; test -L /etc/hostname || echo plain")
    assert hostname.stdout.splitlines()[-1] == "plain"


async def test_sudo_works_with_the_machines_own_policy(local: Local) -> None:
    """sudo reads only root-owned policy: the machine has its own, and its drop-ins count."""
    info = await local.launch()
    script = (
        "sudo -n id -u"
        " && useradd -m alice"
        " && echo 'alice ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/alice"
        " && chmod 0440 /etc/sudoers.d/alice"
        " && su alice -c 'sudo -n id -u'"
    )
    result = await local.run(info, script)
    assert result.exit_status == 0, result.stderr
    assert result.stdout == "0\n0\n"
    assert "owned by" not in result.stderr, result.stderr  # sudo's complaint of a file
