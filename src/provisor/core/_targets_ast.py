"""The target language's vocabulary: its limits, its AST and the AST's canonical text.

Part of `provisor.core.targets`, which re-exports the public names: import them
from there. The parser is in `_targets_parse`, the evaluation in `targets`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias

from provisor.core._parsing import Syntax
from provisor.core.errors import InvalidInput
from provisor.core.names import check_address, check_name, check_port, check_tag_key
from provisor.core.nodeset import expand

MAX_TARGET_LENGTH = 65_536
"""The longest target text accepted, in characters."""

MAX_DEPTH = 32
"""How deeply parentheses may nest."""

PREFIXES = ("group", "tag", "deployment")
"""The words that may precede `:` in a target; host names never contain `:`."""

Network: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"
IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"

IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}\$?")  # as in pssh hosts files
_GLOB = re.compile(r"[A-Za-z0-9._*?-]{1,128}")
_SAFE_TEXT = re.compile(r"[A-Za-z0-9._/~+=:%@-]+")

SYNTAX = Syntax("target", max_length=MAX_TARGET_LENGTH, max_depth=MAX_DEPTH, quote_limit=40)
# This language's message helpers, under the short names its code uses.
_shorten = SYNTAX.shorten
_error = SYNTAX.error


# ---------------------------------------------------------------------------
# The AST
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A host of the inventory by name, or all whose names match a wildcard (`web*`).

    `*` matches any run of characters and `?` one character (case-sensitive).
    """

    pattern: str

    def __post_init__(self) -> None:
        if self.is_wildcard:
            if not _GLOB.fullmatch(self.pattern):
                raise _error(
                    f"invalid wildcard {_shorten(self.pattern)!r}: use letters, digits, "
                    "'.', '_', '-', '*' and '?'"
                )
            return
        check_name(self.pattern, field="target")
        if IPV4.fullmatch(self.pattern):
            raise _error(f"{self.pattern!r} is an address, not a name: use AddressRef")

    @property
    def is_wildcard(self) -> bool:
        return "*" in self.pattern or "?" in self.pattern

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True)
class NodeSet:
    """The hosts named by a node set such as `web[01-20]` (see provisor.core.nodeset).

    `names` is the expansion, in the order written. A name that is an IPv4
    address (`10.0.0.[1-9]`) and names no host selects the host with that address.
    """

    pattern: str
    names: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if "[" not in self.pattern or _top_level_comma(self.pattern):
            raise _error(
                f"invalid node set {_shorten(self.pattern)!r}: expected one pattern with brackets"
            )
        names = expand(self.pattern)
        for name in names:
            try:
                check_name(name, field="target")
            except InvalidInput:
                raise _error(
                    f"node set {_shorten(self.pattern)!r} makes the invalid name "
                    f"{_shorten(name)!r}: use letters, digits, '.', '_' or '-'"
                ) from None
        object.__setattr__(self, "names", tuple(names))

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True)
class GroupRef:
    """`group:NAME`: the hosts of a static or smart group."""

    name: str

    def __post_init__(self) -> None:
        check_name(self.name, field="target")

    def __str__(self) -> str:
        return f"group:{self.name}"


@dataclass(frozen=True)
class TagRef:
    """`tag:KEY=VALUE`: the hosts whose tag KEY is exactly VALUE."""

    key: str
    value: str

    def __post_init__(self) -> None:
        check_tag_key(self.key, field="target")

    def __str__(self) -> str:
        return f"tag:{self.key}={_text(self.value)}"


@dataclass(frozen=True)
class DeploymentRef:
    """`deployment:NAME`: the machines of a deployment."""

    name: str

    def __post_init__(self) -> None:
        check_name(self.name, field="target")

    def __str__(self) -> str:
        return f"deployment:{self.name}"


@dataclass(frozen=True)
class AddressRef:
    """`10.1.0.0/24` or `10.1.0.5`: the hosts whose address is in the network.

    A single address is a network of one (`/32`, `/128`).
    """

    network: Network

    @property
    def is_single(self) -> bool:
        return self.network.prefixlen == self.network.max_prefixlen

    def __str__(self) -> str:
        if self.is_single:
            return str(self.network.network_address)
        return str(self.network)


@dataclass(frozen=True)
class FileRef:
    """`@PATH`: the hosts listed in a pssh hosts file; the caller reads it."""

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise _error("a file path cannot be empty")

    def __str__(self) -> str:
        return f"@{_text(self.path)}"


@dataclass(frozen=True)
class Direct:
    """`USER@HOST`, `HOST:PORT`, `USER@HOST:PORT`, `[IPV6]:PORT`: a host addressed directly.

    HOST is a name of the inventory (then that host, as USER and on PORT), or
    an IP address or DNS name outside it. One of `user` and `port` is needed:
    without them the text would be a name or an address.
    """

    user: str | None
    host: str
    port: int | None = None

    def __post_init__(self) -> None:
        if self.user is None and self.port is None:
            raise _error(f"a direct host needs a user or a port: {self.host!r}")
        if self.user is not None and not USER.fullmatch(self.user):
            raise _error(f"invalid user name {_shorten(self.user)!r}")
        if self.port is not None:
            check_port(self.port, field="target")
        object.__setattr__(self, "host", check_host(self.host))
        if self.user is None and self.host in PREFIXES:
            raise _error(f"'{self.host}:{self.port}' reads as a prefix: give a user, as USER@HOST")

    @property
    def label(self) -> str:
        """The name of the host when it is not in the inventory: `HOST` or `HOST:PORT`."""
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = host if self.port is None else f"{host}:{self.port}"
        return text if self.user is None else f"{self.user}@{text}"


@dataclass(frozen=True)
class Union:
    """`A,B`: the hosts of any item (at least two)."""

    items: tuple[Target, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise _error("a union needs at least two items")

    def __str__(self) -> str:
        return _format(self)


@dataclass(frozen=True)
class Intersection:
    """`A&B`: the hosts of every item (at least two)."""

    items: tuple[Target, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise _error("an intersection needs at least two items")

    def __str__(self) -> str:
        return _format(self)


@dataclass(frozen=True)
class Difference:
    """`A!B` (or `A&!B`): the hosts of `left` that are not in `right`."""

    left: Target
    right: Target

    def __str__(self) -> str:
        return _format(self)


Target: TypeAlias = (
    "Name | NodeSet | GroupRef | TagRef | DeploymentRef | AddressRef | FileRef | Direct"
    " | Union | Intersection | Difference"
)
_ATOMS = (Name, NodeSet, GroupRef, TagRef, DeploymentRef, AddressRef, FileRef, Direct)


def check_host(host: str) -> str:
    """An IP address (normalized), or a host name or DNS name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if IPV4.fullmatch(host) or ":" in host:
        raise _error(f"invalid IP address {_shorten(host)!r}")
    try:
        return check_name(host, field="target")
    except InvalidInput:
        pass
    try:
        return check_address(host, field="target")
    except InvalidInput:
        raise _error(f"invalid host {_shorten(host)!r}: not a host name or address") from None


def _top_level_comma(pattern: str) -> bool:
    depth = 0
    for char in pattern:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            return True
    return False


# ---------------------------------------------------------------------------
# Canonical text
# ---------------------------------------------------------------------------


def _text(value: str) -> str:
    """A tag value or file path as written in a target: bare if safe, else quoted."""
    if _SAFE_TEXT.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _primary(target: Target) -> str:
    """`target` written so that it parses as one operand: compound ones in parentheses."""
    if isinstance(target, _ATOMS):
        return str(target)
    return f"({_format(target)})"


def _format(target: Target) -> str:
    if isinstance(target, Union):
        # An item that is itself a union needs parentheses, or it would be flattened.
        return ",".join(
            f"({_format(item)})" if isinstance(item, Union) else _format(item)
            for item in target.items
        )
    if isinstance(target, Intersection):
        return "&".join(_primary(item) for item in target.items)
    if isinstance(target, Difference):
        left = target.left
        # A&B!C reads (A&B)!C, so an intersection on the left needs no parentheses.
        text = _format(left) if isinstance(left, Intersection) else _primary(left)
        right = target.right
        # A!B!C reads A!(B,C): a union on the right is written as a chain.
        excluded = right.items if isinstance(right, Union) else (right,)
        return text + "".join(f"!{_primary(item)}" for item in excluded)
    return str(target)
