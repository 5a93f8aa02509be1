"""What `provisor hosts gather` asks each host, and how its answer becomes facts.

`SCRIPT` is the one POSIX shell script a host runs: it only reads (files under /etc,
/proc and /sys, and `uname`, `getconf`, `ip`, `systemd-detect-virt`), prints one
section per question (a file's own lines prefixed, so that none passes for a section
marker), and its whole output is cut at `MAX_OUTPUT` bytes on the host.
`parse_facts(text)` turns that output into facts; it trusts nothing in it: every value
is checked, cleaned of control characters and bounded, and a section that is missing
or unreadable just gives no fact. The facts it returns are the keys of `GATHERED`
(documented in docs/concepts.md, "Gathered facts"):

    os, os_version, os_name      /etc/os-release: ID, VERSION_ID, PRETTY_NAME
    kernel, arch, bits           uname -r, uname -m; 32 or 64 (getconf LONG_BIT)
    cpu.count, cpu.model         online CPUs; the first model line of /proc/cpuinfo
    memory.total_bytes           MemTotal
    disks.NAME.size_bytes        whole disks of /sys/block (no loop, ram, zram, dm, md, sr)
    addresses                    global addresses, IPv4 and IPv6 (no loopback, link-local)
    virtualization               systemd-detect-virt, else DMI and /proc/cpuinfo hints

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from provisor.core.sizes import format_size

__all__ = [
    "GATHERED",
    "MAX_OUTPUT",
    "SCRIPT",
    "UnreadableFacts",
    "parse_facts",
    "summary",
]

MAX_OUTPUT = 65536
"""Bytes of the script's output a host sends at most (cut on the host)."""

GATHERED = (
    "os",
    "os_version",
    "os_name",
    "kernel",
    "arch",
    "bits",
    "cpu",
    "memory",
    "disks",
    "addresses",
    "virtualization",
    "gathered",
)
"""The top-level facts gather owns: each gather replaces them all (`gathered` says when
and by which job), and leaves every other fact as it was."""

_HEADER = "@provisor-facts 1"
_SECTIONS = frozenset(
    {
        "os-release",
        "uname",
        "long-bit",
        "cpus",
        "cpu-model",
        "memory",
        "disks",
        "addresses",
        "virt",
        "dmi",
        "cpu-flags",
        "container",
        "end",
    }
)
_MAX_TEXT = 256  # characters of any one text fact
_MAX_ITEMS = 256  # disks, addresses
_MAX_CPUS = 1_000_000
_MAX_BYTES = 2**63 - 1

# Read-only, each probe silenced; the output is cut on the host, so a host with a
# thousand disks or a huge os-release still sends at most MAX_OUTPUT bytes.
SCRIPT = f"""LC_ALL=C; export LC_ALL
{{
echo '{_HEADER}'
echo '@os-release'
{{ head -c 8192 /etc/os-release || head -c 8192 /usr/lib/os-release; }} | sed 's/^/|/'
echo '@uname'
uname -s; uname -r; uname -m
echo '@long-bit'
getconf LONG_BIT
echo '@cpus'
getconf _NPROCESSORS_ONLN || nproc || grep -c '^processor' /proc/cpuinfo
echo '@cpu-model'
grep -m 1 -E '^(model name|Hardware|cpu model|Processor|cpu)[[:space:]]*:' /proc/cpuinfo \
| head -c 512
echo
echo '@memory'
grep -m 1 '^MemTotal:' /proc/meminfo
echo '@disks'
for d in /sys/block/*; do [ -r "$d/size" ] && echo "${{d##*/}} $(head -c 32 "$d/size")"; done \
| head -n 1024
echo '@addresses'
if command -v ip >/dev/null; then ip -o addr show | head -n 1024
else hostname -I | tr ' ' '\\n' | head -n 1024; fi
echo '@virt'
if command -v systemd-detect-virt >/dev/null; then systemd-detect-virt; fi
echo '@dmi'
for f in sys_vendor product_name; do
echo "$f=$(head -c 256 /sys/class/dmi/id/$f | tr '\n' ' ')"; done
echo '@cpu-flags'
grep -m 1 -o -w hypervisor /proc/cpuinfo
echo '@container'
[ -e /.dockerenv ] && echo docker
[ -e /run/.containerenv ] && echo podman
echo '@end'
}} 2>/dev/null | head -c {MAX_OUTPUT}
"""


class UnreadableFacts(ValueError):
    """The host's answer is not the script's (a shell that is not POSIX sh, a banner
    where the output should be, nothing at all)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WORD = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_OS_RELEASE_LINE = re.compile(r"([A-Z][A-Z0-9_]{0,63})=(.*)")
_DISK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_NOT_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
_BITS = {
    "x86_64": 64,
    "amd64": 64,
    "aarch64": 64,
    "arm64": 64,
    "ppc64": 64,
    "ppc64le": 64,
    "s390x": 64,
    "riscv64": 64,
    "mips64": 64,
    "loongarch64": 64,
    "sparc64": 64,
    "i386": 32,
    "i486": 32,
    "i586": 32,
    "i686": 32,
    "armv6l": 32,
    "armv7l": 32,
    "armv8l": 32,
    "ppc": 32,
    "s390": 32,
    "mips": 32,
    "riscv32": 32,
}
# What DMI's vendor and product say about the hypervisor, in systemd-detect-virt's words.
_DMI_HINTS = (
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("virtualbox", "oracle"),
    ("innotek", "oracle"),
    ("xen", "xen"),
    ("amazon ec2", "amazon"),
    ("google compute engine", "google"),
    ("bochs", "bochs"),
    ("parallels", "parallels"),
    ("bhyve", "bhyve"),
    ("openstack", "kvm"),
    ("microsoft corporation virtual machine", "microsoft"),
)


def _text(value: str, limit: int = _MAX_TEXT) -> str:
    """One line of text as a fact: control characters out, spaces trimmed, bounded."""
    return _CONTROL.sub("", value).strip()[:limit]


def _sections(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    if _HEADER not in (line.strip() for line in lines[:5]):
        raise UnreadableFacts(
            "the host did not answer as the facts script does (is the login shell a "
            "POSIX sh? does the login print a banner on standard output?)"
        )
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("@") and stripped[1:] in _SECTIONS:
            name = stripped[1:]
            # The first of each section counts: a later copy is not the script's.
            current = None if name in sections else sections.setdefault(name, [])
            continue
        if current is not None:
            current.append(line)
    return sections


def _unquote(value: str) -> str:
    """An os-release value: shell-quoted or bare."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == '"':
            inner = re.sub(r"\\([\\\"$`])", r"\1", inner)
        return inner
    return value


def _os_release(lines: list[str]) -> dict[str, str]:
    """The file's lines come prefixed with `|`, so none of them can pass for a section."""
    found: dict[str, str] = {}
    for line in lines:
        if not line.startswith("|"):
            continue
        match = _OS_RELEASE_LINE.fullmatch(line[1:].strip())
        if match and match.group(1) not in found:
            found[match.group(1)] = _text(_unquote(match.group(2)))
    return found


def _number(text: str, *, low: int = 0, high: int = _MAX_BYTES) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if low <= value <= high else None


def _first(lines: list[str] | None) -> str:
    for line in lines or []:
        if line.strip():
            return line
    return ""


def _disks(lines: list[str]) -> dict[str, dict[str, int]]:
    disks: dict[str, dict[str, int]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not _DISK_NAME.fullmatch(parts[0]):
            continue
        name, sectors = parts[0], _number(parts[1], low=1, high=_MAX_BYTES // 512)
        if sectors is None or name.startswith(_NOT_DISKS) or name in disks:
            continue
        disks[name] = {"size_bytes": sectors * 512}  # /sys/block sizes are 512-byte units
        if len(disks) >= _MAX_ITEMS:
            break
    return disks


def _address(word: str) -> str | None:
    try:
        interface = ipaddress.ip_interface(word)
    except ValueError:
        return None
    address = interface.ip
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return None
    if address.is_multicast:
        return None
    return str(address)


def _addresses(lines: list[str]) -> list[str]:
    """From `ip -o addr show` lines (`2: eth0 inet 10.0.0.5/24 ... scope global ...`) or
    from `hostname -I`, one address a line."""
    found: list[str] = []
    for line in lines:
        words = line.split()
        if "inet" in words or "inet6" in words:
            at = words.index("inet") if "inet" in words else words.index("inet6")
            candidate = words[at + 1] if at + 1 < len(words) else ""
        elif len(words) == 1:
            candidate = words[0]
        else:
            continue
        address = _address(candidate)
        if address is not None and address not in found:
            found.append(address)
            if len(found) >= _MAX_ITEMS:
                break
    return found


def _virtualization(sections: dict[str, list[str]]) -> str:
    """What runs the host: systemd-detect-virt's word when it has one, else a hint from
    container marker files, DMI's vendor and product, the CPU's hypervisor flag (`vm`:
    some hypervisor), else `none`."""
    said = _text(_first(sections.get("virt"))).lower()
    if _WORD.fullmatch(said):
        return said
    container = _text(_first(sections.get("container"))).lower()
    if container in ("docker", "podman"):
        return container
    dmi = " ".join(
        _text(line.partition("=")[2]).lower() for line in sections.get("dmi", []) if "=" in line
    )
    for hint, name in _DMI_HINTS:
        if hint in dmi:
            return name
    if _text(_first(sections.get("cpu-flags"))) == "hypervisor":
        return "vm"
    return "none"


def parse_facts(text: str) -> dict[str, Any]:
    """The facts in the output of `SCRIPT`; raises `UnreadableFacts` when it is not that
    output at all."""
    sections = _sections(text)
    facts: dict[str, Any] = {}
    release = _os_release(sections.get("os-release", []))
    uname = [_text(line) for line in sections.get("uname", []) if line.strip()]
    os_id = release.get("ID", "").lower()
    if _WORD.fullmatch(os_id):
        facts["os"] = os_id
    elif uname and _WORD.fullmatch(uname[0].lower()):
        facts["os"] = uname[0].lower()  # no os-release: the kernel's name (linux, freebsd)
    if release.get("VERSION_ID"):
        facts["os_version"] = release["VERSION_ID"]
    name = release.get("PRETTY_NAME") or release.get("NAME")
    if name:
        facts["os_name"] = name
    if len(uname) >= 2 and uname[1]:
        facts["kernel"] = uname[1]
    arch = uname[2] if len(uname) >= 3 else ""
    if arch:
        facts["arch"] = arch
    bits = _number(_first(sections.get("long-bit")), low=8, high=128)
    if bits in (32, 64):
        facts["bits"] = bits
    elif arch in _BITS:
        facts["bits"] = _BITS[arch]
    cpu: dict[str, Any] = {}
    count = _number(_first(sections.get("cpus")), low=1, high=_MAX_CPUS)
    if count is not None:
        cpu["count"] = count
    model = _text(_first(sections.get("cpu-model")).partition(":")[2])
    if model:
        cpu["model"] = model
    if cpu:
        facts["cpu"] = cpu
    memory = _first(sections.get("memory")).split()
    if len(memory) == 3 and memory[0] == "MemTotal:" and memory[2] == "kB":
        kilobytes = _number(memory[1], high=_MAX_BYTES // 1024)
        if kilobytes is not None:
            facts["memory"] = {"total_bytes": kilobytes * 1024}
    if "disks" in sections:
        facts["disks"] = _disks(sections["disks"])
    if "addresses" in sections:
        facts["addresses"] = _addresses(sections["addresses"])
    facts["virtualization"] = _virtualization(sections)
    return facts


def summary(facts: dict[str, Any]) -> str:
    """One line that says what a host is, without what differs on every host (its
    addresses), so that hosts alike fold together in `--output fold`."""
    parts = []
    os_text = " ".join(str(facts[k]) for k in ("os", "os_version") if facts.get(k))
    if os_text:
        parts.append(os_text)
    if facts.get("kernel"):
        parts.append(f"kernel {facts['kernel']}")
    if facts.get("arch"):
        bits = f" ({facts['bits']}-bit)" if facts.get("bits") else ""
        parts.append(f"{facts['arch']}{bits}")
    cpu = facts.get("cpu") or {}
    if "count" in cpu:
        parts.append(f"{cpu['count']} CPU{'s' if cpu['count'] != 1 else ''}")
    memory = facts.get("memory") or {}
    if "total_bytes" in memory:
        parts.append(f"{format_size(memory['total_bytes'])} memory")
    disks = facts.get("disks")
    if disks:
        listed = ", ".join(
            f"{name} {format_size(disk['size_bytes'])}" for name, disk in list(disks.items())[:8]
        )
        more = f" and {len(disks) - 8} more" if len(disks) > 8 else ""
        parts.append(f"disks {listed}{more}")
    if facts.get("virtualization"):
        parts.append(f"virtualization {facts['virtualization']}")
    return "; ".join(parts) or "no facts found"
