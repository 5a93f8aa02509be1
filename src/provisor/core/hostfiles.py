"""Reading the host lists operators already have: pssh hosts files and Ansible INI inventories.

Parsing is all or nothing: every malformed line of the file is collected, and if
there is any, one `ParseErrors` lists them all (each an `InvalidInput` with the
source, line and column) and nothing is returned. The formats and how they map
to provisor hosts and groups are documented in docs/import.md.

Pure: the caller reads the file and passes its text. This module reads pssh
hosts files; `_hostfiles_ansible` reads Ansible INI inventories, and
`_hostfiles_base` holds what both share. Every public name is here.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Literal

from provisor.core._hostfiles_ansible import AnsibleParser
from provisor.core._hostfiles_base import (
    SECTION,
    Errors,
    Format,
    GroupEntry,
    HostEntry,
    Inventory,
    LineError,
    check_user,
    host_identity,
    ipv6_host_name,
    is_ipv6_address,
    lines,
    parse_port,
    split_host_port,
)
from provisor.core.errors import InvalidInput

__all__ = [
    "MAX_ERRORS",
    "MAX_HOSTS",
    "GroupEntry",
    "HostEntry",
    "Inventory",
    "detect_format",
    "ipv6_host_name",
    "parse_ansible_ini",
    "parse_inventory",
    "parse_pssh_hosts",
]

MAX_HOSTS = 100_000
"""The most hosts one file (or one host range) may define."""

MAX_ERRORS = 1000
"""Errors reported per file; a file with more is reported as such after these."""


# ---------------------------------------------------------------------------
# pssh hosts files
# ---------------------------------------------------------------------------


def parse_pssh_hosts(text: str, source: str = "<hosts>") -> Inventory:
    """Read a pssh hosts file: one `[user@]host[:port] [user]` per line.

    `#` starts a comment (whole line or trailing). IPv6 addresses are written
    bare (`::1`) or in brackets with a port (`[::1]:2222`).
    """
    errors = Errors(source, MAX_ERRORS)
    hosts: list[HostEntry] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines(text), start=1):
        content = raw.split("#", 1)[0]
        words = [(m.group(), m.start() + 1) for m in re.finditer(r"\S+", content)]
        if not words:
            continue
        try:
            entry = _pssh_entry(words, number)
        except LineError as exc:
            errors.add(exc.message, number, exc.column)
            continue
        key = entry.name.lower()
        if key in first_line:
            errors.add(
                f"duplicate host {entry.name!r}: already defined on line {first_line[key]}",
                number,
                words[0][1],
            )
            continue
        if len(hosts) >= MAX_HOSTS:
            errors.add(f"too many hosts: at most {MAX_HOSTS:,} per file", number, words[0][1])
            break
        first_line[key] = number
        hosts.append(entry)
    errors.raise_if_any()
    return Inventory(hosts=tuple(hosts), groups=(), format="pssh")


def _pssh_entry(words: list[tuple[str, int]], number: int) -> HostEntry:
    if len(words) > 2:
        word, column = words[2]
        raise LineError(f"unexpected {word!r}: expected [user@]host[:port] [user]", column)
    token, column = words[0]
    user: str | None = None
    if "@" in token:
        user, _, token = token.rpartition("@")
        if not user:
            raise LineError("expected a user before '@'", column)
        check_user(user, column)
        column += len(user) + 1
    if not token:
        raise LineError("expected a host", column)
    host, is_ipv6, port_text, port_column = split_host_port(token, column, ranges=False)
    port = None if port_text is None else parse_port(port_text, port_column)
    name, address = host_identity(host, is_ipv6, column)
    if len(words) == 2:
        second, second_column = words[1]
        if user is not None:
            raise LineError(f"user given twice: {user!r} and {second!r}", second_column)
        user = check_user(second, second_column)
    return HostEntry(
        name=name,
        address=address,
        port=port,
        user=user,
        groups=(),
        vars=MappingProxyType({}),
        line=number,
    )


# ---------------------------------------------------------------------------
# Ansible INI inventories
# ---------------------------------------------------------------------------


def parse_ansible_ini(text: str, source: str = "<inventory>") -> Inventory:
    """Read an Ansible INI inventory; see docs/import.md for what maps to what."""
    # The limits are read per call, so that they stay this module's to set.
    return AnsibleParser(source, max_hosts=MAX_HOSTS, max_errors=MAX_ERRORS).parse(text)


# ---------------------------------------------------------------------------
# Either
# ---------------------------------------------------------------------------


def detect_format(text: str) -> Format:
    """`ansible` if the text has `[section]` lines, `key=value` host variables or host
    ranges (`web[01:20]`); `pssh` otherwise. A file of plain host names reads the same
    either way."""
    for raw in lines(text):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        match = SECTION.fullmatch(stripped)
        if match and not is_ipv6_address(match.group(1)):
            return "ansible"
        words = stripped.split("#", 1)[0].split()
        if not words:
            continue
        if any("=" in word for word in words[1:]):
            return "ansible"
        host = words[0].rpartition("@")[2]
        if "[" in host[1:] and not host.startswith("["):
            return "ansible"
    return "pssh"


def parse_inventory(
    text: str,
    source: str = "<inventory>",
    format: Literal["auto", "pssh", "ansible"] = "auto",
) -> Inventory:
    """Parse a host list in the given format, or the one `detect_format` finds."""
    chosen = detect_format(text) if format == "auto" else format
    if chosen == "pssh":
        return parse_pssh_hosts(text, source)
    if chosen == "ansible":
        return parse_ansible_ini(text, source)
    raise InvalidInput(
        f"unknown inventory format {format!r}: use auto, pssh or ansible", field="format"
    )
