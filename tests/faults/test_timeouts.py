"""Every wait of a fleet job has a bound, and a host that hits one says which.

A command that never ends is killed at the configured command timeout; a host whose link
is stuck is given up at the connect timeout; a copy that stops moving is stopped after
`--stall-timeout` seconds without data, while a slow copy that keeps moving is never cut
short. The links are real TCP relays (provisor.testing.slowlink) in front of real sshd.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from provisor.machines import SandboxHost
from provisor.testing.pytest_plugin import Testbed
from provisor.testing.slowlink import SlowLink
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def entry(name: str, host: SandboxHost, address: str, port: int) -> str:
    return (
        f"{name} ansible_host={address} ansible_port={port} ansible_user={host.user} "
        f"ansible_ssh_private_key_file={host.client_key}"
    )


def with_inventory(tmp_path: Path, lines: list[str]) -> Provisor:
    cli = Provisor(tmp_path / "home")
    (tmp_path / "hosts.ini").write_text("[fleet]\n" + "\n".join(lines) + "\n")
    cli("hosts", "import", str(tmp_path / "hosts.ini"))
    return cli


def results(stdout: str) -> dict[str, dict[str, object]]:
    return {r["host"]: r for r in map(json.loads, stdout.splitlines())}


def test_a_hung_command_and_a_stuck_link_each_name_their_limit(
    testbed: Testbed, tmp_path: Path
) -> None:
    quick, hung, behind = testbed(3)
    with SlowLink((behind.address, behind.port), stall_after=0) as stuck:
        cli = with_inventory(
            tmp_path,
            [
                entry("quick", quick, quick.address, quick.port),
                entry("hung", hung, hung.address, hung.port),
                entry("stuck", behind, "127.0.0.1", stuck.port),
            ],
        )
        command = f'[ "$(hostname)" = "{hung.name}" ] && sleep 600; echo done'
        # No -t: the command timeout comes from the configuration.
        run = cli(
            "run",
            "group:fleet",
            "--connect-timeout",
            "2",
            "--output",
            "json",
            "--",
            command,
            check=False,
            env={"PROVISOR_COMMAND_TIMEOUT": "3s"},
        )
    assert run.returncode == 3, run.stderr  # a host could not be worked on
    found = results(run.stdout)
    assert (found["quick"]["outcome"], found["quick"]["stdout"]) == ("ok", "done\n")
    assert found["hung"]["outcome"] == "timeout"
    assert found["hung"]["details"] == {"limit": "command", "seconds": 3.0}
    assert found["hung"]["error"] == "command timeout: still running after 3s (-t); killed"
    assert found["stuck"]["outcome"] == "timeout"
    assert found["stuck"]["details"] == {"limit": "connect", "seconds": 2.0}
    assert found["stuck"]["error"] == (
        "connect timeout: no SSH handshake within 2s (--connect-timeout)"
    )
    # The hung command was killed on its host, not left running.
    left = cli("run", "quick", "--output", "json", "--", "true")  # the CLI still works
    assert left.returncode == 0
    check = cli("run", "hung", "--output", "json", "--", "pgrep -x sleep || true")
    assert results(check.stdout)["hung"]["stdout"] == ""


def test_run_help_shows_where_the_default_timeout_comes_from(tmp_path: Path) -> None:
    shown = Provisor(tmp_path / "home")("run", "--help").stdout
    words = " ".join(shown.replace("│", " ").split())  # as read, whatever the wrapping
    assert "[default: (command_timeout setting, 1h)]" in words
    assert "[default: (max_output setting, 1M)]" in words


def test_a_slow_copy_that_keeps_moving_is_not_cut_short(testbed: Testbed, tmp_path: Path) -> None:
    (host,) = testbed(1)
    payload = tmp_path / "big.bin"
    payload.write_bytes(bytes(range(256)) * (6 * 4096))  # 6 MiB
    # At 1 MiB/s the copy lasts at least 6 seconds, three times the stall timeout.
    with SlowLink((host.address, host.port), rate=1024 * 1024) as slow:
        cli = with_inventory(tmp_path, [entry("far", host, "127.0.0.1", slow.port)])
        copied = cli(
            "copy", "far", str(payload), "/tmp/big.bin", "--stall-timeout", "2s", "--output", "json"
        )
        assert slow.forwarded > payload.stat().st_size  # it all went through the slow link
        fetched = cli(
            "fetch",
            "far",
            "/tmp/big.bin",
            str(tmp_path / "back"),
            "--stall-timeout",
            "2s",
            "--output",
            "json",
        )
    assert results(copied.stdout)["far"]["outcome"] == "ok"
    assert results(fetched.stdout)["far"]["outcome"] == "ok"
    back = tmp_path / "back" / "far" / "big.bin"
    assert (
        hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
    )


def test_a_copy_whose_link_stops_moving_times_out_on_progress(
    testbed: Testbed, tmp_path: Path
) -> None:
    (host,) = testbed(1)
    payload = tmp_path / "big.bin"
    payload.write_bytes(b"x" * (8 * 1024 * 1024))
    # The link carries the SSH handshake and the first megabyte, then nothing more.
    with SlowLink((host.address, host.port), stall_after=1024 * 1024) as stuck:
        cli = with_inventory(tmp_path, [entry("far", host, "127.0.0.1", stuck.port)])
        copied = cli(
            "copy",
            "far",
            str(payload),
            "/tmp/big.bin",
            "--stall-timeout",
            "2s",
            "--output",
            "json",
            check=False,
        )
    assert copied.returncode == 1, copied.stderr
    result = results(copied.stdout)["far"]
    assert result["outcome"] == "timeout"
    assert result["details"]["limit"] == "progress" and result["details"]["seconds"] == 2.0
    assert result["error"] == (
        "no progress: no data moved for 2s (--stall-timeout); transfer stopped"
    )


def test_a_fetch_whose_link_stops_moving_times_out_on_progress(
    testbed: Testbed, tmp_path: Path
) -> None:
    (host,) = testbed(1)
    payload = tmp_path / "big.bin"
    payload.write_bytes(b"y" * (8 * 1024 * 1024))
    # The link brings the SSH handshake and the first megabyte back, then nothing more.
    with SlowLink((host.address, host.port), stall_after_received=1024 * 1024) as stuck:
        cli = with_inventory(
            tmp_path,
            [
                entry("near", host, host.address, host.port),
                entry("far", host, "127.0.0.1", stuck.port),
            ],
        )
        cli("copy", "near", str(payload), "/tmp/big.bin")
        fetched = cli(
            "fetch", "far", "/tmp/big.bin", str(tmp_path / "back"),
            "--stall-timeout", "2s", "--output", "json",
            check=False,
        )  # fmt: skip
    assert fetched.returncode == 1, fetched.stderr
    result = results(fetched.stdout)["far"]
    assert result["outcome"] == "timeout" and result["details"]["limit"] == "progress"
    # What came before the stall is not left behind under the file's own name.
    assert not (tmp_path / "back" / "far" / "big.bin").exists()
