"""Patching, the pure part: package names, what a package manager says is missing, and the
fleet summary (`hello-provisor 1.0-1 -> 2.0-1: 3 hosts (tb[01-03])`)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from provisor.core.errors import InvalidInput
from provisor.core.nodeset import fold, natural_key

# Debian policy (lower case, digits, + - .) widened to what RPM allows (upper case, _),
# and nothing a shell or a package manager would read as an option or a pattern.
# An architecture may follow (`libc6:i386`).
PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,127}(?::[a-z0-9][a-z0-9_-]{0,31})?")
MAX_PACKAGES = 1000


class RebootPolicy(StrEnum):
    never = "never"
    if_needed = "if-needed"  # the host says so (/var/run/reboot-required, needs-restarting)
    always = "always"


def check_packages(names: Iterable[str], *, field: str = "packages") -> tuple[str, ...]:
    """The names, each checked: a bad one is refused naming it and its position."""
    checked: list[str] = []
    for position, name in enumerate(names, start=1):
        if not PACKAGE_NAME.fullmatch(name):
            raise InvalidInput(
                f"package {position} {name[:200]!r} is not a package name: letters, digits "
                "and + . _ - only, starting with a letter or digit, at most 128 characters "
                "(and an optional :ARCH)",
                field=field,
            )
        if name not in checked:
            checked.append(name)
    if len(checked) > MAX_PACKAGES:
        raise InvalidInput(f"at most {MAX_PACKAGES} packages at once", field=field)
    return tuple(checked)


def split_packages(text: str | None, *, field: str = "packages") -> tuple[str, ...]:
    """`a,b c` (commas or spaces) as checked names; none for None or blank."""
    if text is None:
        return ()
    return check_packages([p for p in re.split(r"[,\s]+", text) if p], field=field)


@dataclass(frozen=True)
class Update:
    """One package a host could upgrade."""

    package: str
    installed: str
    candidate: str
    security: bool = False
    origin: str = ""  # where the candidate comes from, as the package manager says it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Update:
        return cls(
            package=str(data["package"]),
            installed=str(data["installed"]),
            candidate=str(data["candidate"]),
            security=bool(data.get("security", False)),
            origin=str(data.get("origin", "")),
        )


def is_security(origin: str) -> bool:
    """Debian-Security:12/stable-security, bookworm-security, Ubuntu's jammy-security..."""
    return "security" in origin.lower()


# `apt-get -s` lines: `Inst NAME [OLD] (NEW ORIGIN[, ORIGIN...] [ARCH])`, optionally
# followed by ` []` when the package breaks others. A new package has no `[OLD]`.
_APT_INST = re.compile(
    r"^Inst (?P<name>\S+) \[(?P<old>[^\]]+)\] "
    r"\((?P<new>\S+)(?: (?P<origin>.*?))? \[(?P<arch>[^\]]+)\]\)"
)


def parse_apt_simulation(text: str) -> list[Update]:
    """The upgrades in `apt-get -s dist-upgrade`'s output (new packages it would pull in
    and removals are not updates of what is installed)."""
    found: dict[str, Update] = {}
    for line in text.splitlines():
        match = _APT_INST.match(line)
        if match is None:
            continue
        origin = (match["origin"] or "").strip()
        found[match["name"]] = Update(
            package=match["name"],
            installed=match["old"],
            candidate=match["new"],
            security=is_security(origin),
            origin=origin,
        )
    return sorted(found.values(), key=lambda u: u.package)


def parse_dnf(check_update: str, security: str, installed: str) -> list[Update]:
    """Updates from `dnf -q check-update` (`NAME.ARCH  VERSION  REPO`), marked security
    when `dnf -q updateinfo list --security --updates` names them (`ID TYPE NEVRA`), with
    installed versions from `rpm -qa --qf '%{NAME}.%{ARCH} %{VERSION}-%{RELEASE}\\n'`."""
    have: dict[str, str] = {}
    for line in installed.splitlines():
        parts = line.split()
        if len(parts) == 2:
            have[parts[0]] = parts[1]
    secured: set[str] = set()
    for line in security.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            nevra = parts[-1]
            name_arch = _dnf_name_arch(nevra)
            if name_arch:
                secured.add(name_arch)
    found: dict[str, Update] = {}
    for line in check_update.splitlines():
        parts = line.split()
        if len(parts) != 3 or "." not in parts[0] or line.startswith(" "):
            continue  # headers, "Obsoleting Packages", wrapped lines
        name_arch, version, repo = parts
        name = name_arch.rsplit(".", 1)[0]
        found[name] = Update(
            package=name,
            installed=have.get(name_arch, ""),
            candidate=version.split(":", 1)[-1],
            security=name_arch in secured or is_security(repo),
            origin=repo,
        )
    return sorted(found.values(), key=lambda u: u.package)


def _dnf_name_arch(nevra: str) -> str | None:
    """`openssl-libs-1:3.0.7-25.el9.x86_64` -> `openssl-libs.x86_64`."""
    head, _, arch = nevra.rpartition(".")
    parts = head.rsplit("-", 2)
    if len(parts) != 3 or not arch:
        return None
    return f"{parts[0]}.{arch}"


@dataclass(frozen=True)
class Missing:
    """One update and the hosts that miss it."""

    package: str
    installed: str
    candidate: str
    security: bool
    hosts: tuple[str, ...]

    @property
    def text(self) -> str:
        mark = " [security]" if self.security else ""
        count = len(self.hosts)
        return (
            f"{self.package} {self.installed} -> {self.candidate}{mark}: "
            f"{count} host{'s' if count != 1 else ''} ({fold(self.hosts)})"
        )


def summarize(
    catalog: Mapping[str, Sequence[Update]], *, security_only: bool = False
) -> list[Missing]:
    """Who misses what: one entry per (package, installed, candidate), most hosts first."""
    hosts: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    for host, updates in catalog.items():
        for update in updates:
            if security_only and not update.security:
                continue
            hosts[(update.package, update.installed, update.candidate, update.security)].append(
                host
            )
    missing = [
        Missing(package, installed, candidate, security, tuple(sorted(names, key=natural_key)))
        for (package, installed, candidate, security), names in hosts.items()
    ]
    missing.sort(key=lambda m: (-len(m.hosts), m.package, m.installed, m.candidate))
    return missing


def up_to_date(
    catalog: Mapping[str, Sequence[Update]], *, security_only: bool = False
) -> list[str]:
    """The hosts that miss nothing (nothing of security, with `security_only`)."""
    return sorted(
        (
            host
            for host, updates in catalog.items()
            if not any(u.security or not security_only for u in updates)
        ),
        key=natural_key,
    )


__all__ = [
    "MAX_PACKAGES",
    "PACKAGE_NAME",
    "Missing",
    "RebootPolicy",
    "Update",
    "check_packages",
    "is_security",
    "parse_apt_simulation",
    "parse_dnf",
    "split_packages",
    "summarize",
    "up_to_date",
]
