"""The sandbox host record, its on-disk state and the checks on what a caller asks for."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from provisor.core.errors import InvalidInput

Isolation = Literal["namespaces", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("namespaces", "process")
MountKind = Literal["bind", "loop"]
MOUNT_KINDS: tuple[MountKind, ...] = ("bind", "loop")

# Directories each namespace-mode host sees through its own copy-on-write overlay.
OVERLAID_DIRS: tuple[str, ...] = (
    "/etc",
    "/root",
    "/home",
    "/var",
    "/usr",
    "/opt",
    "/srv",
    "/tmp",  # noqa: S108 - overlaid, not used as a temporary directory
)

STATE_FILE = "host.json"
# Output of the host's init script (namespace mode), appended at every boot.
CONSOLE_LOG = "console.log"
INIT_SCRIPT = "init.sh"
# Process mode (kept here so that importing the package does not import _userhost,
# which runs as `python -m provisor.machines._userhost`).
USERHOST_LOG = "userhost.log"
USERHOST_PID_FILE = "userhost.pid"
USERHOST_ENV_MARKER = "PROVISOR_SANDBOX_HOST"  # in the environment of every session
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
HOSTNAME_MAX = 64  # the kernel's limit on a UTS nodename
# Paths go into overlayfs mount options, where ',' ':' '\' and spaces have meanings.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@/-]+$")


@dataclass(frozen=True)
class Mount:
    """A filesystem mounted inside a namespace-mode host at every boot.

    `bind`: the directory `source` appears at `target`; `loop`: the file `source`, an
    ext4 image, is loop-mounted at `target`. Only the host sees it (its own mount
    namespace); `target` is created in the host's copy-on-write layer when missing.
    """

    source: Path
    target: str
    kind: MountKind = "bind"

    def to_json(self) -> dict[str, str]:
        return {"source": str(self.source), "target": self.target, "kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mount:
        kind = data.get("kind", "bind")
        if kind not in MOUNT_KINDS:
            raise ValueError(f"unknown mount kind {kind!r}")
        return cls(Path(data["source"]), str(data["target"]), cast(MountKind, kind))


@dataclass(frozen=True)
class SandboxHost:
    """One running (or stopped) sandbox host and how to reach it."""

    name: str
    address: str
    port: int
    user: str
    directory: Path
    isolation: Isolation
    client_key: Path
    host_public_key: str
    pid: int
    hostname: str = ""  # what `hostname` answers on the host; "" means `name`
    mounts: tuple[Mount, ...] = ()  # namespace mode: mounted at every boot
    cgroup: Path | None = None  # namespace mode: the cgroup the host's processes join
    # Namespace mode: root of the host is an unprivileged uid of the machine (its own user
    # namespace); False on a kernel without user namespaces or idmapped mounts.
    contained: bool = False
    # Contained hosts: the network they share with the hosts of the same name (see
    # `provisor.machines.start`), their published ports, the endpoints relayed into it.
    network: str = ""
    publish: tuple[int, ...] = ()
    relays: tuple[tuple[str, int], ...] = ()
    # Namespace mode: sshd also takes passwords (not root's: root logs in with keys only).
    password_login: bool = False

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.name

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["client_key"] = str(self.client_key)
        data["mounts"] = [m.to_json() for m in self.mounts]
        data["cgroup"] = str(self.cgroup) if self.cgroup is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxHost:
        isolation = data["isolation"]
        if isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {isolation!r}")
        return cls(
            name=str(data["name"]),
            address=str(data["address"]),
            port=int(data["port"]),
            user=str(data["user"]),
            directory=Path(data["directory"]),
            isolation=cast(Isolation, isolation),
            client_key=Path(data["client_key"]),
            host_public_key=str(data["host_public_key"]),
            pid=int(data["pid"]),
            hostname=str(data.get("hostname") or ""),
            mounts=tuple(Mount.from_json(m) for m in data.get("mounts") or ()),
            cgroup=Path(data["cgroup"]) if data.get("cgroup") else None,
            contained=bool(data.get("contained", False)),
            network=str(data.get("network") or ""),
            publish=tuple(int(p) for p in data.get("publish") or ()),
            relays=tuple((str(h), int(p)) for h, p in data.get("relays") or ()),
            password_login=bool(data.get("password_login", False)),
        )


@dataclass(frozen=True)
class BootOptions:
    """What makes a host more than a bare sshd: see `provisor.machines.start`."""

    hostname: str
    authorized_keys: tuple[str, ...] = ()  # first boot only
    mounts: tuple[Mount, ...] = ()
    cgroup: Path | None = None
    init_script: str | None = None  # None: keep the host's current one, if any
    contain: bool = False  # its own user namespace, where the kernel can
    network: str = ""  # contained: the network namespace shared by hosts of this name
    publish: tuple[int, ...] = ()  # contained, in a network: TCP ports opened here
    relays: tuple[tuple[str, int], ...] = ()  # contained, in a network: endpoints of here
    password_login: bool = False  # sshd takes passwords too (root: keys only)


def default_isolation() -> Isolation:
    return "namespaces" if os.geteuid() == 0 else "process"


def default_base_dir() -> Path:
    env = os.environ.get("PROVISOR_SANDBOX_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/provisor/sandbox")
    import platformdirs  # only needed here; keeps import of the package cheap

    return Path(platformdirs.user_data_dir("provisor")) / "sandbox"


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            f"invalid sandbox host name {name!r}: use 1-63 lowercase letters, digits "
            "and '-', not starting or ending with '-' (it becomes the hostname)",
            field="name",
        )
    return name


def validate_hostname(hostname: str) -> str:
    """A hostname the kernel and DNS accept: dot-separated labels, at most 64 characters."""
    if len(hostname) > HOSTNAME_MAX or not _HOSTNAME.match(hostname):
        raise InvalidInput(
            f"invalid hostname {hostname!r}: use dot-separated labels of letters, digits "
            f"and '-' (not at either end of a label), at most {HOSTNAME_MAX} characters",
            field="hostname",
        )
    return hostname


def validate_mount(mount: Mount) -> Mount:
    """A mount an fstab line can carry: absolute, normalized, plain characters."""
    for what, path in (("source", str(mount.source)), ("target", mount.target)):
        if (
            not path.startswith("/")
            or os.path.normpath(path) != path
            or path == "/"
            or not _SAFE_PATH.match(path)
        ):
            raise InvalidInput(
                f"invalid mount {what} {path!r}: expected a normalized absolute path other "
                "than / made of letters, digits and . _ + @ / -",
                field="mounts",
            )
    if mount.kind not in MOUNT_KINDS:
        raise InvalidInput(f"unknown mount kind {mount.kind!r}", field="mounts")
    return mount


def validate_address(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInput(
            f"invalid address {address!r}: expected an IPv4 address in 127.0.0.0/8",
            field="address",
        ) from None
    if not isinstance(ip, ipaddress.IPv4Address) or ip not in LOOPBACK:
        raise InvalidInput(
            f"address {address} is not in 127.0.0.0/8: sandbox hosts only ever listen "
            "on loopback addresses",
            field="address",
        )
    if ip in (LOOPBACK.network_address, LOOPBACK.broadcast_address):
        raise InvalidInput(
            f"address {address} is the network or broadcast address of 127.0.0.0/8",
            field="address",
        )
    return str(ip)


MAX_PUBLISHED = 100  # ports a host publishes; each is a listening socket of its top process
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_network(
    network: str, publish: Sequence[int], relays: Sequence[tuple[str, int]]
) -> None:
    if network and not _NETWORK.match(network):
        raise InvalidInput(
            f"invalid network name {network!r}: use 1-64 letters, digits, '.', '_' and '-'",
            field="network",
        )
    if (publish or relays) and not network:
        raise InvalidInput("publish and relays need a network", field="network")
    if len(publish) > MAX_PUBLISHED:
        raise InvalidInput(
            f"{len(publish)} ports to publish: a sandbox host publishes at most {MAX_PUBLISHED}",
            field="publish",
        )
    for port in publish:
        validate_port(port)
    for host, port in relays:
        validate_address(host)
        validate_port(port)


def validate_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"invalid port {port}: expected 1-65535", field="port")
    return port


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_namespace_base_dir(base_dir: Path) -> Path:
    """Refuse a base dir whose overlay upper dirs would sit inside an overlaid tree.

    overlayfs rejects an upper/work dir inside one of its lower dirs on the same
    filesystem ("overlapping layers", ELOOP); say so before any mount is tried.
    """
    known = _CHECKED_BASE_DIRS.get(Path(base_dir))
    if known is not None:  # checked before in this process: every start asks again
        return known
    real = Path(os.path.realpath(base_dir))
    if not _SAFE_PATH.match(str(real)):
        raise InvalidInput(
            f"sandbox base dir {real} contains characters overlayfs mount options cannot "
            "carry; use only letters, digits and . _ + @ / -",
            field="base_dir",
        )
    dev = _existing_ancestor(real).stat().st_dev
    for overlaid in OVERLAID_DIRS:
        lower = Path(os.path.realpath(overlaid))
        if not lower.is_dir() or not (real == lower or lower in real.parents):
            continue
        if lower.stat().st_dev == dev:
            raise InvalidInput(
                f"sandbox base dir {real} is inside {overlaid}, which every namespace-mode "
                f"host overlays; overlayfs refuses upper dirs inside their lower dir on the "
                f"same filesystem (ELOOP, overlapping layers). Use a directory outside "
                f"{' '.join(OVERLAID_DIRS)}, e.g. /run/provisor/sandbox",
                field="base_dir",
            )
    _CHECKED_BASE_DIRS[Path(base_dir)] = real
    return real


_CHECKED_BASE_DIRS: dict[Path, Path] = {}  # base dirs that passed, as given -> real path


def write_state(host: SandboxHost) -> None:
    """Write the host record atomically, so a concurrent `load` never sees half of it."""
    path = host.directory / STATE_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(host.to_json(), indent=2) + "\n")
    tmp.replace(path)


def read_state(directory: Path) -> SandboxHost | None:
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"unreadable sandbox host state: {exc}", source=str(directory)) from exc
    try:
        return SandboxHost.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"malformed sandbox host state: {exc}", source=str(directory / STATE_FILE)
        ) from exc


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"
