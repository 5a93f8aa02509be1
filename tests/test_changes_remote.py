"""The remote side of fleet changes against real hosts: every object kind is probed,
written to a new state, read back, written back (a rollback) and read back again, equal
byte for byte to what it was."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import posixpath
import shlex
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

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

HASH = "$6$provisor$Qm3Zr0sT8oX6x1VbQy2ZpS9y0wq4u1mF3Jc8YtR5aN7dLeKhGvBiCjDk2Wl4Ho6Pq9Us1Xz3Ae5Mf7Ng0Rb2"


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
        old = await r.state(key)
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
        assert isinstance(states[big], str) and "larger than 1 MiB" in states[big]
        assert states[link] == states[directory] == FileState(True, kind="other")
        exact_state = states[exact]
        assert isinstance(exact_state, FileState) and exact_state.content == bytes(1048576)


async def test_a_file_changed_since_it_was_read_is_not_overwritten(testbed: Testbed) -> None:
    (host,) = await testbed.start(1)
    key = ObjectKey("file", "/etc/motd")
    domain = ObjectKey("sysctl", "kernel.domainname")
    async with remote(host) as r:
        old = await r.state(key)
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
        old = await r.state(key)
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
        old = await r.state(key)
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
