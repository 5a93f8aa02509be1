"""The remote side of fleet changes against real hosts: every object kind is probed,
written to a new state, read back, written back (a rollback) and read back again, equal
byte for byte to what it was."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import posixpath
import shlex
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from machines_needed import requires_root
from provisor import machines
from provisor._asyncssh import asyncssh
from provisor.core.changes.model import (
    FileState,
    ObjectKey,
    PackageState,
    ServiceState,
    State,
    SysctlState,
    UserState,
    Write,
)
from provisor.fleet.changes import (
    WriteReport,
    output_limit,
    parse_probe,
    parse_write,
    probe_script,
    run_script,
    write_script,
)
from provisor.fleet.changes.write import write_output_limit
from provisor.machines import SandboxHost
from provisor.testing.pytest_plugin import Testbed

pytestmark = [pytest.mark.testbed, requires_root]

S = TypeVar("S", FileState, UserState, PackageState, ServiceState, SysctlState)

HASH = (  # a crypt(3) SHA-512 hash, of nothing in particular
    "$6$provisor$Qm3Zr0sT8oX6x1VbQy2ZpS9y0wq4u1mF3Jc8YtR5aN7dLeKhGvBiCjDk2Wl4Ho6Pq9Us1Xz3Ae5Mf7Ng0Rb2"
)


class Remote:
    """A root session on one testbed host."""

    def __init__(self, connection: asyncssh.SSHClientConnection) -> None:
        self.connection = connection

    async def probe(self, *keys: ObjectKey) -> dict[ObjectKey, State | str]:
        code, out, err = await run_script(
            self.connection, probe_script(keys), timeout=60, max_output=output_limit(keys)
        )
        assert code == 0, err
        return parse_probe(keys, out)

    async def state(self, key: ObjectKey) -> State:
        state = (await self.probe(key))[key]
        assert not isinstance(state, str), state
        return state

    async def state_of(self, key: ObjectKey, kind: type[S]) -> S:
        state = await self.state(key)
        assert isinstance(state, kind)
        return state

    async def write(self, *writes: Write) -> WriteReport:
        _, out, _ = await run_script(
            self.connection,
            write_script(writes),
            timeout=120,
            max_output=write_output_limit(writes),
        )
        return parse_write(writes, out)

    async def sh(self, command: str) -> str:
        result = await self.connection.run(command, check=True)
        return str(result.stdout)

    async def round_trip(self, key: ObjectKey, new: State, seen: State | None = None) -> None:
        """Write `new`, read it back (as `seen`, when the host fills in more), write the
        old state back, read it back: equal to the old state."""
        old = await self.state(key)
        report = await self.write(Write(key, old, new))
        assert report.ok and report.done == (0,), report
        assert report.states[key] == (seen or new)
        back = await self.write(Write(key, seen or new, old))
        assert back.ok, back
        assert back.states[key] == old
        assert await self.state(key) == old


@contextlib.asynccontextmanager
async def remote(host: SandboxHost) -> AsyncIterator[Remote]:
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=asyncssh.import_known_hosts(machines.known_hosts_entry(host) + "\n"),
    ) as connection:
        yield Remote(connection)


async def test_file_round_trips_content_mode_and_owner(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("file", "/etc/provisor-demo.conf")
    async with remote(host) as r:
        await r.sh(
            "printf 'old\\n' > /etc/provisor-demo.conf && chown root:adm /etc/provisor-demo.conf"
            " && chmod 0640 /etc/provisor-demo.conf"
        )
        old = await r.state_of(key, FileState)
        assert old == FileState(True, b"old\n", 0o640, "root", "adm")
        every_byte = bytes(range(256)) * 3 + b"no newline at the end"
        await r.round_trip(key, FileState(True, every_byte, 0o4750, "nobody", "nogroup"))
        await r.round_trip(key, replace(old, mode=0o600))  # mode only: in place
        await r.round_trip(key, replace(old, owner="daemon", group="daemon"))
        await r.round_trip(key, FileState(False, kind="missing"))
        assert await r.sh("ls -ld /etc/provisor-demo.conf | cut -c1-10") == "-rw-r-----\n"


async def test_odd_path_is_taken_literally_and_its_directories_made(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    odd = '/srv/it\'s "odd" $(touch /tmp/pwned) `touch /tmp/pwned`/a; b & c\\.conf'
    key = ObjectKey("file", odd)
    new = FileState(True, b"x=1\n", 0o644, "root", "root")
    async with remote(host) as r:
        old = await r.state(key)
        assert old == FileState(False, kind="missing")
        report = await r.write(Write(key, old, new))
        assert report.ok and report.states[key] == new
        assert await r.sh(f"cat {shlex.quote(odd)}") == "x=1\n"
        assert await r.sh(f"stat -c %a {shlex.quote(posixpath.dirname(odd))}") == "755\n"
        back = await r.write(Write(key, new, old))
        assert back.ok and back.states[key] == old
        gone = f"test ! -e {shlex.quote(odd)} && test ! -e /tmp/pwned && echo clean"
        assert await r.sh(gone) == "clean\n"


async def test_probe_refuses_large_files_and_tells_other_kinds(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    async with remote(host) as r:
        await r.sh("head -c 1048577 /dev/zero > /root/big; ln -s /etc/passwd /root/link")
        big, link, directory, exact = (
            ObjectKey("file", p) for p in ("/root/big", "/root/link", "/etc", "/root/exact")
        )
        await r.sh("head -c 1048576 /dev/zero > /root/exact")
        states = await r.probe(big, link, directory, exact)
        too_large = states[big]
        assert isinstance(too_large, str) and "larger than 1 MiB" in too_large
        assert states[link] == states[directory] == FileState(True, kind="other")
        exact_state = states[exact]
        assert isinstance(exact_state, FileState) and exact_state.content == bytes(1048576)


async def test_a_file_changed_since_it_was_read_is_not_overwritten(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("file", "/etc/motd")
    domain = ObjectKey("sysctl", "kernel.domainname")
    async with remote(host) as r:
        old = await r.state_of(key, FileState)
        old_domain = await r.state(domain)
        await r.sh("echo 'edited by hand' >> /etc/motd")
        report = await r.write(
            Write(key, old, FileState(True, b"ours\n", 0o644, "root", "root")),
            Write(domain, old_domain, SysctlState("never.example")),
        )
        assert report.done == ()
        assert report.failure == (0, "changed since it was read; not overwritten")
        assert not report.ok
        edited = report.states[key]
        assert isinstance(edited, FileState) and edited.content == (old.content or b"") + (
            b"edited by hand\n"
        )
        assert report.states[domain] == old_domain  # stopped at the first failure


async def test_user_round_trips_groups_hash_keys_and_shell(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("user", "carol")
    async with remote(host) as r:
        await r.sh("useradd -m -s /bin/bash -G audio carol")
        old = await r.state_of(key, UserState)
        assert old == UserState(True, ("audio",), "!", None, "/bin/bash", "/home/carol")
        new = UserState(
            True, ("adm", "staff"), HASH, b"ssh-ed25519 AAAA carol@x\n", "/bin/sh", "/home/carol"
        )
        await r.round_trip(key, new)
        await r.round_trip(key, replace(old, groups=()))  # no supplementary groups at all
        assert await r.sh("stat -c '%a %U' /home/carol/.ssh") == "700 carol\n"
        # a new user, then none again (userdel without -r: the home stays)
        dave = ObjectKey("user", "dave")
        none = await r.state(dave)
        assert none == UserState(False)
        wanted = UserState(True, ("adm",), HASH, b"k1\nk2\n", "/bin/sh")
        report = await r.write(Write(dave, none, wanted))
        made = replace(wanted, home="/home/dave")
        assert report.ok and report.states[dave] == made
        assert await r.sh("stat -c '%a %U' /home/dave/.ssh/authorized_keys") == "600 dave\n"
        back = await r.write(Write(dave, made, none))
        assert back.ok and back.states[dave] == none


async def test_password_hash_is_in_no_process_argv(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("user", "erin")
    async with remote(host) as r:
        await r.sh("useradd erin")
        old = await r.state_of(key, UserState)
        # chpasswd takes a second here, so the sampler below sees it running
        await r.sh(
            "printf '#!/bin/sh\\nsleep 1\\nexec /usr/sbin/chpasswd \"$@\"\\n'"
            " > /usr/local/sbin/chpasswd && chmod 755 /usr/local/sbin/chpasswd"
        )
        sampler = asyncio.ensure_future(
            r.sh("for i in $(seq 40); do ps -eo args; sleep 0.05; done")
        )
        await asyncio.sleep(0.3)
        report = await r.write(Write(key, old, replace(old, password_hash=HASH)))
        samples = await sampler
        assert report.ok and report.states[key] == replace(old, password_hash=HASH)
        assert "chpasswd -e" in samples  # sampled while it ran
        assert HASH not in samples and "Qm3Zr0sT8" not in samples
    script = write_script([Write(key, old, replace(old, password_hash=HASH))])
    assert script.count(HASH) == 1
    assert f"printf '%s:%s\\n' \"$u\" '{HASH}' | chpasswd -e" in script


INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          provisor-demo
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: a sleeping daemon for provisor's tests
### END INIT INFO
PIDFILE=/var/tmp/provisor-demo.pid
case "$1" in
start) exec start-stop-daemon --start --quiet --background --make-pidfile \\
  --pidfile $PIDFILE --exec /bin/sleep -- 100000 ;;
stop) exec start-stop-daemon --stop --quiet --oknodo --pidfile $PIDFILE --remove-pidfile ;;
restart) "$0" stop && exec "$0" start ;;
status) exec start-stop-daemon --status --pidfile $PIDFILE ;;
*) exit 3 ;;
esac
"""


async def test_sysv_service_round_trips_running_and_enabled(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("service", "provisor-demo")
    async with remote(host) as r:
        assert await r.state(key) == ServiceState(False, manager="sysv")
        script = ObjectKey("file", "/etc/init.d/provisor-demo")
        made = await r.write(
            Write(
                script,
                FileState(False, kind="missing"),
                FileState(True, INIT_SCRIPT.encode(), 0o755, "root", "root"),
            )
        )
        assert made.ok
        old = await r.state_of(key, ServiceState)
        assert old == ServiceState(True, running=False, enabled=False, manager="sysv")
        await r.round_trip(key, replace(old, running=True, enabled=True))
        await r.round_trip(key, replace(old, enabled=True))
        assert await r.sh("ls /etc/rc2.d/ | grep provisor-demo || true") == "K01provisor-demo\n"
        # a restart (a file it reads changed): running before and after, a new process
        running = replace(old, running=True)
        assert (await r.write(Write(key, old, running))).ok
        pid = await r.sh("cat /var/tmp/provisor-demo.pid")
        restarted = await r.write(Write(key, running, running, restart=True))
        assert restarted.ok and restarted.states[key] == running
        assert await r.sh("cat /var/tmp/provisor-demo.pid") not in ("", pid)
        assert (await r.write(Write(key, running, old))).states[key] == old


async def test_sysctl_round_trips_and_other_hosts_are_untouched(testbed: Testbed) -> None:
    a, b = await testbed.start(2)
    domain = ObjectKey("sysctl", "kernel.domainname")
    conf = ObjectKey("file", "/etc/sysctl.d/99-provisor.conf")
    async with remote(a) as ra, remote(b) as rb:
        b_before = await rb.probe(domain, conf)
        old_a = await ra.state(domain)
        report = await ra.write(
            Write(domain, old_a, SysctlState("a.example")),
            Write(
                conf,
                FileState(False, kind="missing"),
                FileState(True, b"kernel.domainname = a.example\n", 0o644, "root", "root"),
            ),
        )
        assert report.ok and report.done == (0, 1)
        assert report.states[domain] == SysctlState("a.example")
        assert await rb.probe(domain, conf) == b_before
        await ra.round_trip(domain, SysctlState("tab\tand space.example"))
        release = ObjectKey("sysctl", "kernel.osrelease")  # read-only
        old_release = await ra.state(release)
        refused = await ra.write(Write(release, old_release, SysctlState("0.0")))
        assert refused.failure is not None and refused.failure[0] == 0
        assert refused.failure[1].startswith("cannot set it:"), refused.failure
        assert refused.states[release] == old_release


async def test_probe_tells_apart_what_the_host_lacks(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    keys = [
        ObjectKey("sysctl", "kernel.no_such_thing"),
        ObjectKey("user", "nobody-here"),
        ObjectKey("service", "no-such-service"),
        ObjectKey("package", "no-such-package"),
    ]
    async with remote(host) as r:
        states = await r.probe(*keys)
    assert list(states.values()) == [
        SysctlState(None),
        UserState(False),
        ServiceState(False, manager="sysv"),
        PackageState(None, manager="apt"),
    ]


def test_parser_is_bounded_and_ignores_what_the_host_prints() -> None:
    key = ObjectKey("sysctl", "kernel.domainname")
    value = base64.b64encode(b"x").decode()
    framed = f"@@start\n@@0 value {value}\n@@0 done MQ==\n@@end\n".encode()
    noise = b"@@0 value bm9pc2U=\nWelcome!\n@@7 done MQ==\n"  # before the script ran
    assert parse_probe([key], noise + framed) == {key: SysctlState("x")}
    assert parse_probe([key], framed[:-10]) == {key: "the probe's output was cut short"}
    huge = b"@@start\n" + b"A" * (output_limit([key]) + 1) + framed
    assert parse_probe([key], huge) == {key: "the probe's output was cut short"}
    assert parse_probe([key], b"@@start\n@@0 value !!\n@@0 done MQ==\n@@end\n") == {
        key: "a record of the host is not valid base64"
    }
    with pytest.raises(ValueError, match="user name not usable"):
        probe_script([ObjectKey("user", "-oProxyCommand=x")])
    report = parse_write([Write(key, SysctlState("a"), SysctlState("b"))], b"")
    assert not report.ok and report.error is not None


def _deb(directory: Path, version: str) -> bytes:
    root = directory / f"provisor-demo-pkg-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/provisor-demo").mkdir(parents=True)
    (root / "usr/share/provisor-demo/version").write_text(version + "\n")
    (root / "DEBIAN/control").write_text(
        f"Package: provisor-demo-pkg\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: provisor tests <tests@example.invalid>\nDescription: a test package\n"
    )
    deb = directory / f"provisor-demo-pkg_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb.read_bytes()


def _index_entry(version: str, data: bytes) -> str:
    return (
        f"Package: provisor-demo-pkg\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: provisor tests <tests@example.invalid>\n"
        f"Filename: ./provisor-demo-pkg_{version}_all.deb\nSize: {len(data)}\n"
        f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription: a test package\n\n"
    )


async def test_package_installs_upgrades_and_rolls_back(testbed: Testbed, tmp_path: Path) -> None:
    (host,) = await testbed.start(1)
    debs = {version: _deb(tmp_path, version) for version in ("1.0", "2.0")}
    index = "".join(_index_entry(version, data) for version, data in debs.items()).encode()
    missing = FileState(False, kind="missing")
    repo = {f"/srv/repo/provisor-demo-pkg_{v}_all.deb": data for v, data in debs.items()}
    repo["/srv/repo/Packages"] = index
    key = ObjectKey("package", "provisor-demo-pkg")
    async with remote(host) as r:
        made = await r.write(
            *(
                Write(
                    ObjectKey("file", path), missing, FileState(True, data, 0o644, "root", "root")
                )
                for path, data in repo.items()
            )
        )
        assert made.ok, made
        # this host's apt sees the local repository only: no network
        await r.sh(
            "rm -rf /etc/apt/sources.list /etc/apt/sources.list.d/* && "
            "echo 'deb [trusted=yes] file:/srv/repo ./' > /etc/apt/sources.list.d/local.list && "
            "apt-get update -q >/dev/null"
        )
        old = await r.state_of(key, PackageState)
        assert old == PackageState(None, candidate="2.0", manager="apt")
        await r.round_trip(key, replace(old, version="1.0"))
        assert (await r.write(Write(key, old, replace(old, version="1.0")))).ok
        one = await r.state_of(key, PackageState)
        await r.round_trip(key, replace(one, version="2.0"))  # upgrade, then downgrade
        assert await r.sh("cat /usr/share/provisor-demo/version") == "1.0\n"
        failed = await r.write(Write(key, one, replace(one, version="9.9")))
        assert failed.failure is not None
        assert failed.failure[1].startswith("apt-get install failed (exit 100):")
        assert "'9.9' for 'provisor-demo-pkg' was not found" in failed.failure[1]
        assert failed.states[key] == one
