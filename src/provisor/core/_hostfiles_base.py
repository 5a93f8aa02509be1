"""What both host file formats share: the entries they make, located errors, hosts and ports.

Part of `provisor.core.hostfiles`, which re-exports the public names: import them
from there. The pssh format is read there, the Ansible INI format in
`_hostfiles_ansible`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.names import check_address, check_name, check_port

Format = Literal["pssh", "ansible"]

SECTION = re.compile(r"\[([^\]]*)\]\s*(?:[#;].*)?")
"""An Ansible section header, `[web]` or `[web:vars]`, with an optional comment."""

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}\$?")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class HostEntry:
    """A host read from a file. `line` is where it was first defined."""

    name: str
    address: str
    port: int | None
    user: str | None
    groups: tuple[str, ...]
    vars: Mapping[str, str]
    line: int


@dataclass(frozen=True)
class GroupEntry:
    """A group read from a file; `parent` makes the groups a tree."""

    name: str
    parent: str | None
    line: int


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[HostEntry, ...]
    groups: tuple[GroupEntry, ...]
    format: Format


# ---------------------------------------------------------------------------
# Errors and the syntax both formats share
# ---------------------------------------------------------------------------


class LineError(Exception):
    """A problem on the current line, at `column` (1-based) when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class Errors:
    """Collects located errors; raises them all at once."""

    def __init__(self, source: str, limit: int) -> None:
        self.source = source
        self.limit = limit  # the most errors kept; the rest are only counted as "too many"
        self.items: list[ProvisorError] = []
        self.truncated = False

    def add(self, message: str, line: int, column: int | None = None) -> None:
        if len(self.items) >= self.limit:
            self.truncated = True
            return
        self.items.append(InvalidInput(message, source=self.source, line=line, column=column))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda e: (e.line or 0, e.column or 0))
        if self.truncated:
            items.append(
                InvalidInput(
                    f"too many errors: only the first {self.limit} are shown",
                    source=self.source,
                    line=items[-1].line,
                )
            )
        raise ParseErrors(items, source=self.source)


def lines(text: str) -> list[str]:
    """The file's lines, numbered like an editor does (only \\n and \\r\\n end a line)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return [line.removesuffix("\r") for line in text.split("\n")]


def ipv6_host_name(address: str) -> str:
    """A host name for an IPv6 address: its compressed form with `:` replaced by `-`.

    A leading or trailing `-` gets a `0` so the name starts and ends with a
    digit or letter (`::1` -> `0--1`, `fe80::` -> `fe80--0`, `2001:db8::5` ->
    `2001-db8--5`); a zone (`%eth0`) becomes `.eth0`. Distinct addresses get
    distinct names.
    """
    name = str(ipaddress.IPv6Address(address)).replace(":", "-").replace("%", ".")
    if name.startswith("-"):
        name = "0" + name
    if name.endswith("-"):
        name += "0"
    return name


def parse_port(text: str, column: int) -> int:
    if not _PORT.fullmatch(text):
        raise LineError(f"invalid port {text!r}: must be a number 1-65535", column)
    try:
        return check_port(int(text))
    except InvalidInput as exc:
        raise LineError(exc.message, column) from None


def check_user(user: str, column: int) -> str:
    if not _USER.fullmatch(user):
        raise LineError(
            f"invalid user {user!r}: use letters, digits, '.', '_', '-' or '@' (at most 64)",
            column,
        )
    return user


def is_ipv6_address(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_host_port(token: str, column: int, *, ranges: bool) -> tuple[str, bool, str | None, int]:
    """Split `host[:port]`, `[v6]:port`, or a bare IPv6 address.

    Returns (host, is_ipv6, port text or None, column of the port). With
    `ranges`, brackets that are not an IPv6 address are host ranges.
    """
    if token.startswith("["):
        end = token.find("]")
        inside = token[1:end] if end > 0 else ""
        if end > 0 and is_ipv6_address(inside):
            rest = token[end + 1 :]
            if not rest:
                return inside, True, None, 0
            if rest.startswith(":"):
                return inside, True, rest[1:], column + end + 2
            raise LineError(
                f"unexpected {rest!r} after ']': expected ':PORT' or nothing", column + end + 1
            )
        if not ranges:
            raise LineError(
                f"invalid host {token!r}: brackets are only for IPv6 addresses, as [::1]:22",
                column,
            )
    colons = [i for i, c in enumerate(token) if c == ":" and _depth_at(token, i) == 0]
    if len(colons) >= 2:
        if not is_ipv6_address(token):
            raise LineError(
                f"invalid host {token!r}: not an IPv6 address "
                "(write an IPv6 address with a port as [::1]:22)",
                column,
            )
        return token, True, None, 0
    if colons:
        i = colons[0]
        return token[:i], False, token[i + 1 :], column + i + 1
    return token, False, None, 0


def _depth_at(token: str, index: int) -> int:
    """How many '[' are open at `index` of `token`."""
    return token.count("[", 0, index) - token.count("]", 0, index)


def host_identity(host: str, is_ipv6: bool, column: int) -> tuple[str, str]:
    """(name, address) of a host written as an IP address or a DNS name."""
    try:
        address = check_address(host)
    except InvalidInput as exc:
        raise LineError(exc.message, column) from None
    if is_ipv6:
        return checked_name(ipv6_host_name(address), column), address
    return checked_name(address if is_ip_address(address) else host, column), address


def checked_name(name: str, column: int) -> str:
    try:
        return check_name(name)
    except InvalidInput as exc:
        raise LineError(exc.message, column) from None


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
