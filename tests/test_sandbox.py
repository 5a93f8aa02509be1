"""The sandbox testbed against the real thing: OpenSSH sshd, ssh and asyncssh, no mocks."""

from __future__ import annotations

import asyncio
import os
import secrets
import select
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from machines_needed import requires_root
from provisor import machines
from provisor.core.errors import InvalidInput, ProvisorError
from provisor.machines import SandboxHost, _namespaces, procs
from provisor.testing.pytest_plugin import Testbed

pytestmark = pytest.mark.testbed


Ssh = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def ssh(tmp_path: Path) -> Ssh:
    """Run a command on a host with the system OpenSSH client, pinning its host key."""

    def run(
        host: SandboxHost, command: str, *, pinned: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        known_hosts = tmp_path / f"known_hosts_{secrets.token_hex(4)}"
        known_hosts.write_text((pinned or machines.known_hosts_entry(host)) + "\n")
        argv = [
            "ssh", "-F", "/dev/null", "-i", str(host.client_key),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", "-p", str(host.port),
            f"{host.user}@{host.address}", command,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    return run


def out(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr}"
    return result.stdout.strip()


async def arun(
    host: SandboxHost, command: str, stdin: str | None = None
) -> asyncssh.SSHCompletedProcess:
    """Run a command with asyncssh as the client, pinning the host key."""
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as conn:
        return await conn.run(command, input=stdin)


# --- namespace mode (root) -------------------------------------------------------------------


@requires_root
def test_each_host_has_its_own_hostname(testbed: Testbed, ssh: Ssh) -> None:
    a, b = testbed(2)
    assert a.isolation == b.isolation == "namespaces"
    assert (a.port, a.user) == (22, "root")
    assert out(ssh(a, "hostname")) == a.name
    assert out(ssh(b, "hostname")) == b.name
    assert a.name != b.name and a.address != b.address
    # root's home starts as a new server's, not as a copy of the machine's /root.
    assert out(ssh(a, "ls -A /root")).split() == [".bashrc", ".profile", ".ssh"]


@requires_root
def test_files_are_copy_on_write_per_host(testbed: Testbed, ssh: Ssh) -> None:
    a, b = testbed(2)
    marker = f"/etc/provisor-test-{secrets.token_hex(6)}"
    assert out(ssh(a, f"echo written-on-a > {marker} && cat {marker}")) == "written-on-a"
    assert ssh(b, f"test -e {marker}").returncode == 1
    assert not Path(marker).exists()  # the machine's own /etc is untouched
    assert (a.directory / "upper" / marker.lstrip("/")).read_text() == "written-on-a\n"
    # The machine's files are visible underneath (it is an overlay, not an empty root).
    assert out(ssh(b, "cat /etc/debian_version")) == Path("/etc/debian_version").read_text().strip()


@requires_root
def test_processes_are_per_host(testbed: Testbed, ssh: Ssh) -> None:
    a, b = testbed(2)
    out(ssh(a, "setsid nohup sleep 3171 >/dev/null 2>&1 < /dev/null &"))
    assert "sleep 3171" in out(ssh(a, "ps -eo args"))
    assert "sleep 3171" not in out(ssh(b, "ps -eo args"))
    # PID 1 of a host is its sshd, or the init of a contained host (which starts an sshd
    # per connection): it has its own PID namespace.
    assert ("_contain.py" if a.contained else "sshd") in out(ssh(a, "ps -o args= -p 1"))


@requires_root
def test_restart_is_a_reboot(testbed: Testbed, ssh: Ssh) -> None:
    (host,) = testbed(1)
    marker = f"/etc/provisor-reboot-{secrets.token_hex(6)}"
    out(ssh(host, f"echo kept > {marker}; setsid nohup sleep 3172 >/dev/null 2>&1 < /dev/null &"))
    assert "sleep 3172" in out(ssh(host, "ps -eo args"))

    rebooted = asyncio.run(machines.restart(host))

    assert rebooted.pid != host.pid and machines.is_running(rebooted)
    assert not machines.is_running(host) or host.pid == rebooted.pid
    assert out(ssh(rebooted, f"cat {marker}")) == "kept"
    assert "sleep 3172" not in out(ssh(rebooted, "ps -eo args"))
    assert out(ssh(rebooted, "hostname")) == host.name
    assert machines.load(host.name, testbed.base_dir) == rebooted


@requires_root
def test_rekey_changes_the_host_key(testbed: Testbed, ssh: Ssh) -> None:
    (host,) = testbed(1)
    old_pin = machines.known_hosts_entry(host)
    out(ssh(host, "setsid nohup sleep 3173 >/dev/null 2>&1 < /dev/null &"))
    # /etc/ssh holds the host's own key pair, as a server's does; the machine's are hidden.
    show = "ls /etc/ssh | grep ssh_host_; cat /etc/ssh/ssh_host_*_key.pub"
    listed = "ssh_host_ed25519_key\nssh_host_ed25519_key.pub"
    assert out(ssh(host, show)) == f"{listed}\n{host.host_public_key}"

    rekeyed = asyncio.run(machines.rekey(host))

    assert rekeyed.host_public_key != host.host_public_key
    assert out(ssh(rekeyed, show)) == f"{listed}\n{rekeyed.host_public_key}"
    refused = ssh(rekeyed, "hostname", pinned=old_pin)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
    assert out(ssh(rekeyed, "hostname")) == host.name
    # Only sshd restarted: the host was not rebooted.
    assert rekeyed.pid == host.pid
    assert "sleep 3173" in out(ssh(rekeyed, "ps -eo args"))
    assert machines.load(host.name, testbed.base_dir) == rekeyed


@requires_root
def test_stop_leaves_no_process_and_no_mount(testbed: Testbed, ssh: Ssh) -> None:
    (host,) = testbed(1)
    out(ssh(host, "setsid nohup sleep 3174 >/dev/null 2>&1 < /dev/null &"))
    init = _namespaces.init_pid(host)
    assert init is not None
    pid_ns = procs.pid_namespace(init)
    assert pid_ns is not None and len(procs.in_pid_namespace(pid_ns)) >= 2
    overlays = Path(f"/proc/{init}/mountinfo").read_text()
    assert overlays.count(f"provisor-{host.name} ") >= 5  # /etc /root /var /usr /tmp at least
    # The host's processes (they alone hold its mounts), by pidfd: the number of a namespace
    # that ended is the next one's made anywhere (another test's host); a pidfd names one
    # process, and reads once it ended.
    members = [os.pidfd_open(pid) for pid in procs.in_pid_namespace(pid_ns)]
    try:
        asyncio.run(machines.stop(host))

        assert not machines.is_running(host)
        assert not procs.is_alive(host.pid) and not procs.is_alive(init)
        ended, _, _ = select.select(members, [], [], 0)
        assert len(ended) == len(members), "a process of the host outlived stop"
    finally:
        for pidfd in members:
            os.close(pidfd)
    assert str(host.directory) not in Path("/proc/self/mountinfo").read_text()
    assert procs.referring_to(host.directory) == []
    assert (host.directory / "upper" / "etc" / "hostname").exists()  # the disk is kept

    asyncio.run(machines.stop(host))  # idempotent
    asyncio.run(machines.destroy(host))
    assert not host.directory.exists()


@requires_root
def test_removing_the_authorized_key_rejects_the_client(testbed: Testbed, ssh: Ssh) -> None:
    (host,) = testbed(1)
    keys = machines.authorized_keys_path(host)
    content = keys.read_text()
    # Emptied, not removed: this computer's root cannot create files in a contained host
    # (its uid is not one of the host's), only change those there.
    keys.write_text("")
    rejected = ssh(host, "true")
    assert rejected.returncode == 255 and "Permission denied" in rejected.stderr
    keys.write_text(content)
    assert out(ssh(host, "hostname")) == host.name
    assert (
        not Path("/root/.ssh/authorized_keys").exists()
        or content not in Path("/root/.ssh/authorized_keys").read_text()
    )


async def password_login(host: SandboxHost, user: str, password: str) -> str:
    """Log in with a password only (no key, no agent) and answer `id -un`."""
    async with asyncssh.connect(
        host.address,
        host.port,
        username=user,
        password=password,
        client_keys=None,
        agent_path=None,
        preferred_auth="password",
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as conn:
        return str((await conn.run("id -un", check=True)).stdout).strip()


@requires_root
async def test_password_login_takes_a_users_password_and_not_roots(testbed: Testbed) -> None:
    (with_passwords,) = await testbed.start(1, password_login=True)
    (plain,) = await testbed.start(1)
    password = secrets.token_urlsafe(12)
    for host in (with_passwords, plain):
        # chpasswd reads the password on stdin: it never shows in argv (ps).
        created = await arun(
            host, "useradd -m -s /bin/sh ops && chpasswd", f"ops:{password}\nroot:{password}\n"
        )
        assert created.exit_status == 0, created.stderr

    assert await password_login(with_passwords, "ops", password) == "ops"
    with pytest.raises(asyncssh.PermissionDenied):
        await password_login(with_passwords, "ops", password + "-wrong")
    with pytest.raises(asyncssh.PermissionDenied):  # root: keys only
        await password_login(with_passwords, "root", password)
    with pytest.raises(asyncssh.PermissionDenied):  # the default: no passwords at all
        await password_login(plain, "ops", password)
    reloaded = machines.load(with_passwords.name, testbed.base_dir)
    assert reloaded is not None and reloaded.password_login  # kept for its next boot


@requires_root
@pytest.mark.slow
async def test_fifty_hosts_start_concurrently(testbed: Testbed) -> None:
    hosts = await testbed.start(50)
    assert len({h.address for h in hosts}) == 50
    results = await asyncio.gather(*(arun(h, "hostname") for h in hosts))
    assert [r.stdout.strip() for r in results] == [h.name for h in hosts]  # type: ignore[union-attr]
    assert all(r.exit_status == 0 for r in results)


# --- process mode (any user) -----------------------------------------------------------------


async def test_process_mode_runs_commands_over_ssh(testbed: Testbed, tmp_path: Path) -> None:
    (host,) = await testbed.start(1, isolation="process")
    assert host.isolation == "process"
    assert host.port == 2222
    assert machines.is_running(host)

    result = await arun(host, 'echo "$HOSTNAME"; pwd; echo oops >&2; exit 7')

    assert result.exit_status == 7
    assert result.stdout == f"{host.name}\n{host.directory / 'root'}\n"
    assert result.stderr == "oops\n"
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as conn:
        assert (await conn.run("cat", input="round trip")).stdout == "round trip"
        async with conn.start_sftp_client() as sftp, sftp.open("hello.txt", "w") as f:
            await f.write("via sftp")
        assert (await conn.run("cat hello.txt")).stdout == "via sftp"
    assert (host.directory / "root" / "hello.txt").read_text() == "via sftp"
    # OpenSSH's scp (SFTP protocol) needs the session's exit status to report success.
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(machines.known_hosts_entry(host) + "\n")
    (tmp_path / "up.txt").write_text("via scp\n")
    scp = await asyncio.create_subprocess_exec(
        "scp", "-F", "/dev/null", "-P", str(host.port), "-i", str(host.client_key),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes",
        str(tmp_path / "up.txt"), f"{host.user}@{host.address}:up.txt",
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await scp.communicate()
    assert scp.returncode == 0, err
    assert (host.directory / "root" / "up.txt").read_text() == "via scp\n"


async def test_process_mode_restart_and_rekey(testbed: Testbed) -> None:
    (host,) = await testbed.start(1, isolation="process")
    await arun(host, "echo kept > kept.txt; nohup sleep 3175 >/dev/null 2>&1 < /dev/null &")
    assert any("sleep 3175" in procs.cmdline(p) for p in procs.pids())

    rebooted = await machines.restart(host)
    assert not any("sleep 3175" in procs.cmdline(p) for p in procs.pids())
    assert (await arun(rebooted, "cat kept.txt")).stdout == "kept\n"

    rekeyed = await machines.rekey(rebooted)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await arun(rebooted, "true")  # pinned to the old key
    assert (await arun(rekeyed, "hostname")).exit_status == 0


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.10", "::1", "localhost", "127.0.0.0"])
async def test_address_outside_loopback_is_refused(address: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"127\.0\.0\.0/8") as info:
        await machines.start("bad", address, base_dir=tmp_path, isolation="process")
    assert info.value.field == "address"
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("inside", ["tmp_path", "/etc/provisor-sandbox", "/var/lib/provisor"])
async def test_base_dir_inside_an_overlaid_dir_is_refused(inside: str, tmp_path: Path) -> None:
    base = tmp_path if inside == "tmp_path" else Path(inside)
    with pytest.raises(InvalidInput, match="overlapping layers") as info:
        await machines.start("tb01", "127.63.0.1", base_dir=base, isolation="namespaces")
    assert info.value.field == "base_dir"
    assert not (base / "tb01").exists()


async def test_address_in_use_names_the_holder(tmp_path: Path) -> None:
    address = f"127.63.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    with socket.socket() as holder:
        holder.bind((address, 2222))
        holder.listen()
        with pytest.raises(ProvisorError, match=f"pid {os.getpid()}") as info:
            await machines.start("busy", address, base_dir=tmp_path, isolation="process")
    assert f"{address}:2222" in str(info.value)


def test_wildcard_listeners_block_every_loopback_address() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 1111 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 2222 1 0000000000000000 100 0 0 10 0\n"
    )
    tcp6 = (
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0\n"
    )
    found = procs.parse_listeners(tcp) + procs.parse_listeners(tcp6)
    assert [(str(s.address), s.port, s.inode) for s in found] == [
        ("0.0.0.0", 22, 1111),
        ("127.0.0.1", 5432, 2222),
        ("::", 22, 3333),
    ]
    assert {s.inode for s in procs.blocking_listeners("127.9.8.7", 22, found)} == {1111, 3333}
    assert procs.blocking_listeners("127.9.8.7", 5432, found) == []
    assert [s.inode for s in procs.blocking_listeners("127.0.0.1", 5432, found)] == [2222]


def test_load_unknown_host_is_none(tmp_path: Path) -> None:
    assert machines.load("nosuchhost", tmp_path) is None
    with pytest.raises(InvalidInput):
        machines.load("Not_A_Hostname", tmp_path)
