"""`provisor hosts gather`: the facts script's output parsed (pure, hostile output too),
and the command end to end against real testbed hosts: facts kept per host, a host that
fails reported and left as it was, a smart group over a gathered fact."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import pytest

from provisor import machines
from provisor.core.gather import GATHERED, SCRIPT, UnreadableFacts, parse_facts, summary
from provisor.core.nodeset import fold
from provisor.testing.pytest_plugin import Testbed
from provisor_cli import Provisor
from test_fleet import inventory

# What the script printed on a Debian 12 VM (ip -o addr show lines shortened).
DEBIAN = """\
@provisor-facts 1
@os-release
|PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
|NAME="Debian GNU/Linux"
|VERSION_ID="12"
|ID=debian
@uname
Linux
6.1.0-18-amd64
x86_64
@long-bit
64
@cpus
8
@cpu-model
model name\t: AMD EPYC 7B13

@memory
MemTotal:       16369944 kB
@disks
loop0 0
sda 1048576000
sr0 2097151
dm-0 1040000000
nvme0n1 3907029168
@addresses
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever
2: eth0    inet6 2001:db8::5/64 scope global \\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
@virt
kvm
@dmi
sys_vendor=QEMU
product_name=Standard PC (Q35 + ICH9, 2009)
@cpu-flags
hypervisor
@container
@end
"""


def test_the_scripts_answer_becomes_facts() -> None:
    facts = parse_facts(DEBIAN)
    assert facts == {
        "os": "debian",
        "os_version": "12",
        "os_name": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "bits": 64,
        "cpu": {"count": 8, "model": "AMD EPYC 7B13"},
        "memory": {"total_bytes": 16369944 * 1024},
        "disks": {
            "sda": {"size_bytes": 1048576000 * 512},
            "nvme0n1": {"size_bytes": 3907029168 * 512},
        },
        "addresses": ["10.0.0.5", "2001:db8::5"],
        "virtualization": "kvm",
    }
    assert set(facts) < set(GATHERED)
    assert summary(facts) == (
        "debian 12; kernel 6.1.0-18-amd64; x86_64 (64-bit); 8 CPUs; 15.61 GiB memory; "
        "disks sda 500 GiB, nvme0n1 1863 GiB; virtualization kvm"
    )


@pytest.mark.parametrize(
    ("replace", "virtualization"),
    [
        ({"kvm\n": ""}, "qemu"),  # no systemd-detect-virt: DMI says QEMU
        ({"kvm\n": "none\n", "hypervisor\n": ""}, "none"),
        ({"kvm\n": "", "QEMU": "Dell Inc.", "Standard PC (Q35 + ICH9, 2009)": "R740"}, "vm"),
        ({"kvm\n": "", "QEMU": "", "Standard PC": "", "hypervisor\n": ""}, "none"),
        ({"kvm\n": "", "@container\n": "@container\ndocker\n"}, "docker"),
        ({"kvm\n": "", "QEMU": "innotek GmbH", "Standard PC": "VirtualBox"}, "oracle"),
    ],
)
def test_virtualization_without_systemd_detect_virt(
    replace: dict[str, str], virtualization: str
) -> None:
    text = DEBIAN
    for old, new in replace.items():
        text = text.replace(old, new)
    assert parse_facts(text)["virtualization"] == virtualization


def test_32_bit_hosts_and_hosts_without_os_release_or_ip() -> None:
    text = (
        "@provisor-facts 1\n@uname\nLinux\n4.19.0-6-686-pae\ni686\n@long-bit\n32\n"
        "@addresses\n192.0.2.7\n2001:db8::7\n127.0.0.1\nnot-an-address\n@end\n"
    )
    facts = parse_facts(text)
    assert (facts["os"], facts["arch"], facts["bits"]) == ("linux", "i686", 32)
    assert facts["addresses"] == ["192.0.2.7", "2001:db8::7"]  # `hostname -I`, one a line
    assert "os_version" not in facts and "cpu" not in facts and "disks" not in facts
    armv7 = parse_facts("@provisor-facts 1\n@uname\nLinux\n6.1.21-v7+\narmv7l\n")
    assert armv7["bits"] == 32  # no getconf: from the architecture


def test_hostile_output_is_bounded_and_never_misread() -> None:
    """A host may print anything: each value is checked, cleaned and bounded; a file's
    line cannot pass for a section; nothing raises but a missing header."""
    text = "\n".join(
        [
            "@provisor-facts 1",
            "@os-release",
            '|ID="evil;reboot"',
            '|VERSION_ID="12\x1b[31m\x07"',
            '|PRETTY_NAME="' + "A" * 5000 + '"',
            "@uname",  # a second uname section: ignored, the first counts
            "Linux",
            "6.1.0\x00evil",
            "x86_64",
            "@uname",
            "Evil",
            "@long-bit",
            "128",
            "@cpus",
            "99999999999999999999999",
            "@memory",
            "MemTotal: -5 kB",
            "@disks",
            *[f"sd{i} 100" for i in range(1000)],
            "bad/name 100",
            "sdz 1e9",
            "@addresses",
            "2: eth0 inet 999.1.1.1/24 scope global",
            "2: eth0 inet6 ::1/128 scope host",
            "@virt",
            "not a word!",
            "\udcff\ufffd" * 100,
        ]
    )
    facts = parse_facts(text)
    assert facts["os"] == "linux"  # the ID is not a word: the kernel's name instead
    assert facts["os_version"] == "12[31m" and len(facts["os_name"]) == 256
    assert (facts["kernel"], facts["arch"]) == ("6.1.0evil", "x86_64")
    assert facts["bits"] == 64  # 128 is no answer: from the architecture
    assert "cpu" not in facts and "memory" not in facts
    assert len(facts["disks"]) == 256 and "sdz" not in facts["disks"]
    assert facts["addresses"] == [] and facts["virtualization"] == "none"
    with pytest.raises(UnreadableFacts, match="POSIX sh"):
        parse_facts("Welcome to the bastion!\n" * 10 + "@provisor-facts 1\n")
    with pytest.raises(UnreadableFacts):
        parse_facts("")


def test_the_script_only_reads() -> None:
    """Every redirection goes to /dev/null, every file it names is read; its output is
    cut on the host."""
    assert set(re.findall(r"\d?>\s*([^\s;]+)", SCRIPT)) == {"/dev/null"}
    assert not re.search(r"\b(rm|mv|cp|tee|dd|mkdir|touch|chmod|chown|kill)\b", SCRIPT)
    assert SCRIPT.rstrip().endswith("| head -c 65536")


def _local_disks() -> dict[str, dict[str, int]]:
    disks = {}
    for device in sorted(Path("/sys/block").iterdir()):
        size = int((device / "size").read_text())
        skip = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
        if size and not device.name.startswith(skip):
            disks[device.name] = {"size_bytes": size * 512}
    return disks


@pytest.mark.testbed
def test_gather_keeps_each_hosts_facts_and_reports_the_one_that_fails(
    testbed: Testbed, tmp_path: Path
) -> None:
    hosts = testbed(2)
    odd = hosts[1]
    # tb02's os-release is hostile: an ID that is no word, control characters, a huge
    # name, and a line that tries to start a section of its own
    release = machines.host_file(odd, "/etc/os-release")
    release.unlink()
    release.write_text(
        'ID="evil;reboot"\nVERSION_ID="1\x1b[2J"\nPRETTY_NAME="' + "N" * 3000 + '"\n@uname\nX\n'
    )
    cli = Provisor(tmp_path / "home")
    file = tmp_path / "tb.ini"
    # an imported fact of the operator's stays; one in gather's namespace is replaced
    lines = inventory(hosts, "tb").splitlines()
    lines[1] += " rack=7 cpu.count=99"
    file.write_text("\n".join([*lines, "down ansible_host=127.0.0.1 ansible_port=9", ""]))
    cli("hosts", "import", str(file))

    gathered = cli(
        "hosts", "gather", "group:tb", "-p", "2", "-t", "30s", "--output", "fold", check=False
    )
    assert gathered.returncode == 3  # a host could not be reached
    assert "unreachable: down" in gathered.stderr
    assert f"facts kept for 2 hosts ({fold([h.name for h in hosts])})" in gathered.stdout
    assert f"{hosts[0].name} (1): ok" in gathered.stdout  # tb02's OS differs: two folds

    listed = {h["name"]: h for h in json.loads(cli("hosts", "list", "--output", "json").stdout)}
    facts = listed[hosts[0].name]["facts"]
    local = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if line
    )
    assert facts["os"] == local["ID"].strip('"')
    assert facts["os_version"] == local["VERSION_ID"].strip('"')
    assert (facts["kernel"], facts["arch"]) == (platform.release(), platform.machine())
    assert facts["bits"] == (64 if platform.architecture()[0] == "64bit" else 32)
    assert facts["cpu"]["count"] == os.sysconf("SC_NPROCESSORS_ONLN")
    meminfo = Path("/proc/meminfo").read_text().split()
    assert facts["memory"] == {"total_bytes": int(meminfo[1]) * 1024}
    assert facts["disks"] == _local_disks()
    assert isinstance(facts["virtualization"], str) and facts["virtualization"]
    assert facts["rack"] == 7 and facts["gathered"]["job"] >= 1
    hostile = listed[odd.name]["facts"]
    assert hostile["os"] == "linux" and hostile["kernel"] == platform.release()
    assert hostile["os_version"] == "1[2J" and len(hostile["os_name"]) == 256
    assert listed["down"]["facts"] == {}  # the failed host keeps what it had

    cli("groups", "add", "cpus", "--rule", "facts.cpu.count >= 1 and facts.bits >= 32")
    members = json.loads(cli("hosts", "list", "group:cpus", "--output", "json").stdout)
    assert [h["name"] for h in members] == [h.name for h in hosts]

    again = cli("hosts", "gather", hosts[0].name, "--output", "json")
    report = json.loads(again.stdout)
    assert report["job"]["kind"] == "gather" and report["failed"] == {}
    assert report["gathered"][hosts[0].name]["cpu"] == facts["cpu"]
