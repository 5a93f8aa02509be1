"""The target expression language: which hosts a command, job or change applies to.

A target names hosts in many ways and combines them::

    web01                       a host of the inventory, by name
    web[01-20]   web*           a node set; a wildcard over names
    group:web                   the hosts of a group
    tag:env=prod                the hosts with a tag
    deployment:shop             the machines of a deployment
    10.1.0.0/24   10.1.0.5      the hosts whose address is in a network / is this one
    @/etc/hosts.txt             the hosts listed in a pssh hosts file
    root@web7   10.0.0.5:2222   a host addressed directly, with a user or a port
    group:web&tag:env=prod      intersection
    group:web,group:db          union
    group:web!web03             exclusion (also written group:web&!web03)
    (group:web,group:api)&tag:env=prod

`parse_target(text)` turns the text into an immutable `Target` AST whose
`str()` is a canonical text that parses back to an equal AST. `evaluate(target,
resolver)` selects the hosts; every lookup that needs the inventory or a file
goes through the caller's `Resolver`, so this module does no I/O. The grammar
and the semantics are documented in docs/targets.md.

The tokenizer and the recursive-descent parser are written by hand, on the
scaffolding of `provisor.core._parsing`; every parse error is an `InvalidInput`
with `field="target"` and the 1-based column of the offending text.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, overload

from provisor.core._parsing import END, Parser, Syntax, Token
from provisor.core.errors import InvalidInput
from provisor.core.names import check_address, check_name, check_port, check_tag_key
from provisor.core.nodeset import expand, fold, natural_key

__all__ = [
    "MAX_DEPTH",
    "MAX_NAMES",
    "MAX_TARGET_LENGTH",
    "PREFIXES",
    "AddressRef",
    "DeploymentRef",
    "Difference",
    "Direct",
    "FileRef",
    "GroupRef",
    "HostRef",
    "Intersection",
    "Name",
    "NodeSet",
    "Resolver",
    "Selection",
    "TagRef",
    "Target",
    "Union",
    "evaluate",
    "parse_target",
]

MAX_TARGET_LENGTH = 65_536
"""The longest target text accepted, in characters."""

MAX_DEPTH = 32
"""How deeply parentheses may nest."""

MAX_NAMES = 100_000
"""The most names the node sets of one target may stand for, all together."""

PREFIXES = ("group", "tag", "deployment")
"""The words that may precede `:` in a target; host names never contain `:`."""

Network: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"
IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"

_OPERATORS = frozenset(",&!()")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_GLOB = re.compile(r"[A-Za-z0-9._*?-]{1,128}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}\$?")  # as in pssh hosts files
_PORT = re.compile(r"[0-9]+")
_SAFE_TEXT = re.compile(r"[A-Za-z0-9._/~+=:%@-]+")
_SPACE = re.compile(r"\s+")
_NAMES_HINT = "a host outside the inventory is written USER@HOST or HOST:PORT"

_SYNTAX = Syntax("target", max_length=MAX_TARGET_LENGTH, max_depth=MAX_DEPTH, quote_limit=40)
_shorten = _SYNTAX.shorten
_error = _SYNTAX.error


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
        if _IPV4.fullmatch(self.pattern):
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
        if self.user is not None and not _USER.fullmatch(self.user):
            raise _error(f"invalid user name {_shorten(self.user)!r}")
        if self.port is not None:
            check_port(self.port, field="target")
        object.__setattr__(self, "host", _check_host(self.host))
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


def _check_host(host: str) -> str:
    """An IP address (normalized), or a host name or DNS name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _IPV4.fullmatch(host) or ":" in host:
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


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def _tokenize(text: str) -> list[Token]:
    """Operators `, & ! ( )` and words; brackets and quotes keep their content in the word."""
    tokens: list[Token] = []  # kinds "word", "op" and END
    pos = 0
    while pos < len(text):
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        char = text[pos]
        if char in _OPERATORS:
            tokens.append(Token("op", char, pos + 1))
            pos += 1
            continue
        end = _read_word(text, pos)
        tokens.append(Token("word", text[pos:end], pos + 1))
        pos = end
    tokens.append(Token(END, "", len(text) + 1))
    return tokens


def _read_word(text: str, start: int) -> int:
    """The end of the word at `start`: up to whitespace or an operator outside brackets."""
    pos = start
    opened: int | None = None  # the '[' we are inside
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            if opened is not None:
                raise _error("unexpected whitespace inside brackets", pos + 1)
            break
        if opened is None:
            if char in _OPERATORS:
                break
            if char == '"':
                pos = _read_quoted(text, pos)[1]
                continue
            if char == "]":
                raise _error("unexpected ']' without a matching '['", pos + 1)
            if char == "[":
                opened = pos
        elif char == "[":
            raise _error("unexpected '[' inside brackets", pos + 1)
        elif char == "]":
            opened = None
        pos += 1
    if opened is not None:
        raise _error("unclosed '['", opened + 1)
    return pos


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at `start` and the position after it.

    A backslash makes the next character literal (`\\"`, `\\\\`).
    """
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _error("unterminated string: no closing '\"' before end of target", start + 1)


# ---------------------------------------------------------------------------
# Atoms: what one word means
# ---------------------------------------------------------------------------


def _outside_brackets(word: str) -> str:
    """`web[1-3]:22` -> `web[]:22`, to look for separators outside node set brackets."""
    return re.sub(r"\[[^\]]*\]", "[]", word)


def _unquote(raw: str, column: int, what: str) -> str:
    """A tag value or file path: bare text, or one quoted string."""
    if raw.startswith('"'):
        value, end = _read_quoted(raw, 0)
        if end != len(raw):
            raise _error(f"unexpected text after the quoted {what}", column + end)
        return value
    quote = raw.find('"')
    if quote >= 0:
        raise _error(f"a quote may only open the {what}", column + quote)
    return raw


class _Atoms:
    """Reads one word into an atom; counts the names of node sets across the target."""

    def __init__(self) -> None:
        self.names = 0

    def read(self, token: Token) -> Target:
        word, column = token.text, token.column
        try:
            return self._read(word, column)
        except InvalidInput as exc:
            if exc.column is None:  # from a constructor or check: point at the word
                raise _error(exc.message, column) from None
            raise

    def _read(self, word: str, column: int) -> Target:
        if word.startswith("@"):
            path = _unquote(word[1:], column + 1, "file path")
            if not path:
                raise _error("expected a file path after '@'", column + 1)
            return FileRef(path)
        head, sep, rest = word.partition(":")
        if sep and head in PREFIXES:
            return self._prefixed(head, rest, column + len(head) + 1)
        outside = _outside_brackets(word)
        quote = outside.find('"')
        if quote >= 0:
            raise _error(
                "quotes are only allowed around a tag value or a file path", column + quote
            )
        if "@" in outside:
            # Host names never contain '@', user names may (`alice@corp@web7`).
            user, _, hostport = word.rpartition("@")
            if not _USER.fullmatch(user):
                raise _error(f"invalid user name {_shorten(user)!r}", column)
            host, port = _host_port(hostport, column + len(user) + 1)
            return Direct(user, host, port)
        if word.startswith("[") and ":" in word.partition("]")[0]:
            host, port = _host_port(word, column)
            if port is None:
                return AddressRef(ipaddress.ip_network(host))
            return Direct(None, host, port)
        if ":" in outside:
            return self._colon(word, outside, column)
        if "/" in outside or _IPV4.fullmatch(word):
            return _network(word, column)
        if "[" in word:
            return self._node_set(word, column)
        return Name(word)

    def _prefixed(self, prefix: str, rest: str, column: int) -> Target:
        if prefix == "tag":
            key, sep, raw = rest.partition("=")
            if not key:
                raise _error("expected a tag key after 'tag:' (write tag:KEY=VALUE)", column)
            if not sep:
                raise _error(
                    f"expected '=' after the tag key {_shorten(key)!r} (write tag:KEY=VALUE)",
                    column + len(rest),
                )
            try:
                check_tag_key(key, field="target")
            except InvalidInput as exc:
                raise _error(exc.message, column) from None
            return TagRef(key, _unquote(raw, column + len(key) + 1, "tag value"))
        if not rest:
            raise _error(f"expected a {prefix} name after '{prefix}:'", column)
        try:
            check_name(rest, field="target")
        except InvalidInput:
            raise _error(
                f"invalid {prefix} name {_shorten(rest)!r}: use letters, digits, '.', '_' or '-'",
                column,
            ) from None
        return GroupRef(rest) if prefix == "group" else DeploymentRef(rest)

    def _colon(self, word: str, outside: str, column: int) -> Target:
        if outside.count(":") >= 2 or "/" in outside:
            return _network(word, column)  # an IPv6 address or network
        host, _, port = word.partition(":")
        if _PORT.fullmatch(port):
            if not host:
                raise _error("expected a host before ':'", column)
            return Direct(None, _check_host(host), _port(port, column + len(host) + 1))
        raise _error(
            f"unknown prefix {_shorten(host)!r}: expected {', '.join(p + ':' for p in PREFIXES)}"
            " or HOST:PORT (host names never contain ':')",
            column,
        )

    def _node_set(self, word: str, column: int) -> NodeSet:
        try:
            node_set = NodeSet(word)
        except InvalidInput as exc:  # expand() gives the column within the word
            raise _error(exc.message, column + (exc.column or 1) - 1) from None
        self.names += len(node_set.names)
        if self.names > MAX_NAMES:
            raise _error(f"the target names more than {MAX_NAMES} hosts", column)
        return node_set


def _port(text: str, column: int) -> int:
    if not _PORT.fullmatch(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise _error(f"invalid port {_shorten(text)!r}: must be 1-65535", column)
    return int(text)


def _host_port(text: str, column: int) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address."""
    port: int | None = None
    if text.startswith("["):
        inner, sep, after = text[1:].partition("]")
        if not sep:
            raise _error("unclosed '['", column)
        try:
            address = ipaddress.ip_address(inner)
        except ValueError:
            raise _error(f"expected an IPv6 address in brackets, found {inner!r}", column) from None
        if address.version != 6:
            raise _error("only IPv6 addresses are written in brackets", column)
        if after:
            if not after.startswith(":"):
                raise _error("expected ':PORT' after ']'", column + len(inner) + 2)
            port = _port(after[1:], column + len(inner) + 3)
        return str(address), port
    host = text
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, column + len(host) + 1)
    if not host:
        raise _error("expected a host", column)
    try:
        return _check_host(host), port
    except InvalidInput as exc:
        raise _error(exc.message, column) from None


def _network(word: str, column: int) -> AddressRef:
    """An address or a network: `10.1.0.5`, `10.1.0.0/24`, `::1`, `fd00::/64`."""
    try:
        network = ipaddress.ip_network(word, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(word, strict=False)
            raise _error(
                f"{_shorten(word)} is not a network address: did you mean {loose}?", column
            ) from None
        kind = "network" if "/" in word else "address"
        raise _error(f"invalid IP {kind} {_shorten(word)!r}", column) from None
    return AddressRef(network)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


class _Parser(Parser[Token]):
    """Recursive descent over the token list; see docs/targets.md for the grammar."""

    def __init__(self, tokens: list[Token]) -> None:
        super().__init__(tokens, _SYNTAX)
        self.atoms = _Atoms()

    def at_op(self, text: str) -> bool:
        return self.at("op", text)

    # target = union END
    def parse(self) -> Target:
        if self.token.kind == END:
            raise _error("empty target", 1)
        target = self.union()
        token = self.token
        if self.at_op(")"):
            raise _error("unexpected ')' without a matching '('", token.column)
        if token.kind != END:
            hint = " (separate hosts with ',')" if token.kind == "word" else ""
            raise _error(
                f"expected ',', '&', '!' or end of target, found {self.describe(token)}{hint}",
                token.column,
            )
        return target

    # union = chain { "," chain }
    def union(self) -> Target:
        items = [self.chain()]
        while self.at_op(","):
            self.advance()
            items.append(self.chain())
        return items[0] if len(items) == 1 else Union(tuple(items))

    # chain = [ "!" ] primary { ( "&" [ "!" ] | "!" ) primary }
    def chain(self) -> Target:
        included: list[Target] = []
        excluded: list[Target] = []
        first_not: Token | None = None
        negate = False
        if self.at_op("!"):
            first_not = self.advance()
            negate = True
        while True:
            operand = self.primary()
            (excluded if negate else included).append(operand)
            if self.at_op("&"):
                self.advance()
                negate = False
                if self.at_op("!"):
                    self.advance()
                    negate = True
            elif self.at_op("!"):
                self.advance()
                negate = True
            else:
                break
            if negate and self.at_op("!"):
                raise _error("unexpected '!': '!' cannot be doubled", self.token.column)
        if not included:
            assert first_not is not None
            raise _error(
                "nothing to exclude from: '!' takes hosts away from what it follows; "
                "write A!B or A&!B",
                first_not.column,
            )
        left = included[0] if len(included) == 1 else Intersection(tuple(included))
        if not excluded:
            return left
        right = excluded[0] if len(excluded) == 1 else Union(tuple(excluded))
        return Difference(left, right)

    # primary = atom | "(" union ")"
    def primary(self) -> Target:
        token = self.token
        if self.at_op("("):
            self.advance()
            self.enter(token)
            target = self.union()
            self.expect("op", ")", f"to close the '(' at column {token.column}")
            self.leave()
            return target
        if token.kind == "word":
            self.advance()
            return self.atoms.read(token)
        after = f" after '{self.tokens[self.pos - 1].text}'" if self.pos > 0 else ""
        raise _error(
            f"expected a host or a target{after}, found {self.describe(token)}", token.column
        )


def parse_target(text: str) -> Target:
    """Parse a target; raise `InvalidInput(field="target", column=N)` if malformed."""
    _SYNTAX.check_length(text)
    return _Parser(_tokenize(text)).parse()


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRef:
    """A host a target selects: how to name it and how to reach it.

    `port` and `user` None mean the transport's defaults. For an inventory
    host `name` is its name; for a direct host outside the inventory it is
    `HOST` or `HOST:PORT` (`[IPV6]:PORT`), the user never being part of it.
    """

    name: str
    address: str
    port: int | None = None
    user: str | None = None


class Resolver(Protocol):
    """What `evaluate` needs from the caller, who does the I/O.

    The methods may raise the caller's own errors (a `NotFound` for an unknown
    group or deployment, an `OSError` for an unreadable file); `evaluate` lets
    them through.
    """

    def all_hosts(self) -> Iterable[HostRef]:
        """Every host of the inventory (called at most once per evaluation)."""
        ...

    def group_members(self, name: str) -> Iterable[HostRef]:
        """The hosts of a static or smart group."""
        ...

    def tagged_hosts(self, key: str, value: str) -> Iterable[HostRef]:
        """The hosts whose tag `key` is exactly `value`."""
        ...

    def deployment_members(self, name: str) -> Iterable[HostRef]:
        """The hosts (machines) of a deployment."""
        ...

    def read_file(self, path: str) -> Iterable[HostRef]:
        """The hosts listed in a pssh hosts file."""
        ...


@dataclass(frozen=True)
class Selection(Sequence[HostRef]):
    """The hosts a target selects: no two with the same name, in natural name order.

    `unmatched` lists, in canonical text, the parts of the target that matched
    no host although others did (`group:db` in `group:web,group:db`), for the
    caller to warn about.
    """

    hosts: tuple[HostRef, ...]
    unmatched: tuple[str, ...] = ()

    @overload
    def __getitem__(self, index: int) -> HostRef: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[HostRef, ...]: ...

    def __getitem__(self, index: int | slice) -> HostRef | tuple[HostRef, ...]:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[HostRef]:
        return iter(self.hosts)

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def __str__(self) -> str:
        """The names as a node set: `db1,web[01-03]` (`[::1]:22` style names listed as they are)."""
        foldable = [name for name in self.names if "[" not in name]
        return ",".join(filter(None, [fold(foldable), *(n for n in self.names if "[" in n)]))


def evaluate(target: Target | str, resolver: Resolver) -> Selection:
    """The hosts `target` selects (text is parsed first).

    Raises `InvalidInput(field="target")` when a plain name, a node set or a
    single address names no host of the inventory, and when the whole target
    matches no host; the message lists the parts that matched nothing.
    """
    if isinstance(target, str):
        target = parse_target(target)
    evaluator = _Evaluator(resolver)
    found = evaluator.evaluate(target)
    evaluator.check(target, found)
    hosts = sorted(found.values(), key=lambda host: natural_key(host.name))
    return Selection(tuple(hosts), tuple(evaluator.unmatched))


_Hosts: TypeAlias = "dict[str, HostRef]"  # by name, in the order first selected


def _by_name(hosts: Iterable[HostRef]) -> _Hosts:
    result: _Hosts = {}
    for host in hosts:
        result.setdefault(host.name, host)
    return result


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class _Evaluator:
    """Evaluates one target; asks the resolver for the inventory once, lazily.

    When the same host is selected twice, the first one wins, except that one
    selected directly (`root@web7`) wins over one selected otherwise (`web7`,
    `group:web`), so that its user and port are kept.
    """

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._names: _Hosts | None = None
        self._addresses: dict[IPAddress, list[HostRef]] | None = None
        self.direct_hosts: set[HostRef] = set()
        self.missing_names: list[str] = []
        self.missing_addresses: list[str] = []
        self.unmatched: list[str] = []

    @property
    def names(self) -> _Hosts:
        if self._names is None:
            self._names = _by_name(self.resolver.all_hosts())
        return self._names

    @property
    def addresses(self) -> dict[IPAddress, list[HostRef]]:
        if self._addresses is None:
            self._addresses = {}
            for host in self.names.values():
                address = _parse_ip(host.address)
                if address is not None:
                    self._addresses.setdefault(address, []).append(host)
        return self._addresses

    def evaluate(self, target: Target) -> _Hosts:
        if isinstance(target, Union):
            result: _Hosts = {}
            for item in target.items:
                for name, host in self.evaluate(item).items():
                    result[name] = self.prefer(result.get(name), host)
            return result
        if isinstance(target, Intersection):
            first, *others = (self.evaluate(item) for item in target.items)
            result = {}
            for name, host in first.items():
                if all(name in other for other in others):
                    for other in others:
                        host = self.prefer(host, other[name])
                    result[name] = host
            return result
        if isinstance(target, Difference):
            left = self.evaluate(target.left)
            right = self.evaluate(target.right)
            return {n: h for n, h in left.items() if n not in right}
        found = self.atom(target)
        if not found and not self.strict(target):
            self.unmatched.append(str(target))
        return found

    def prefer(self, first: HostRef | None, second: HostRef) -> HostRef:
        """Of two selections of the same host: the first, unless only the second is direct."""
        if first is None or (second in self.direct_hosts and first not in self.direct_hosts):
            return second
        return first

    @staticmethod
    def strict(target: Target) -> bool:
        """Whether the atom names hosts one by one; those report each missing host."""
        if isinstance(target, Name):
            return not target.is_wildcard
        if isinstance(target, AddressRef):
            return target.is_single
        return isinstance(target, NodeSet | Direct)

    def atom(self, target: Target) -> _Hosts:
        if isinstance(target, Name):
            if target.is_wildcard:
                return {
                    n: h for n, h in self.names.items() if fnmatch.fnmatchcase(n, target.pattern)
                }
            return self.lookup([target.pattern])
        if isinstance(target, NodeSet):
            return self.lookup(target.names)
        if isinstance(target, GroupRef):
            return _by_name(self.resolver.group_members(target.name))
        if isinstance(target, TagRef):
            return _by_name(self.resolver.tagged_hosts(target.key, target.value))
        if isinstance(target, DeploymentRef):
            return _by_name(self.resolver.deployment_members(target.name))
        if isinstance(target, FileRef):
            return _by_name(self.resolver.read_file(target.path))
        if isinstance(target, AddressRef):
            return self.network(target)
        if isinstance(target, Direct):
            return self.direct(target)
        raise TypeError(f"not a target: {target!r}")  # pragma: no cover

    def lookup(self, names: Iterable[str]) -> _Hosts:
        """Hosts by name, or by address for names that are IP addresses."""
        result: _Hosts = {}
        for name in names:
            host = self.names.get(name)
            if host is not None:
                result.setdefault(host.name, host)
                continue
            address = _parse_ip(name) if _IPV4.fullmatch(name) else None
            if address is None:
                self.missing_names.append(name)
                continue
            hosts = self.addresses.get(address, [])
            if not hosts:
                self.missing_addresses.append(name)
            for host in hosts:
                result.setdefault(host.name, host)
        return result

    def network(self, target: AddressRef) -> _Hosts:
        network = target.network
        if target.is_single:
            hosts = self.addresses.get(network.network_address, [])
            if not hosts:
                self.missing_addresses.append(str(network.network_address))
            return _by_name(hosts)
        return _by_name(
            host
            for address, hosts in self.addresses.items()
            if address.version == network.version and address in network
            for host in hosts
        )

    def direct(self, target: Direct) -> _Hosts:
        known = self.names.get(target.host)
        if known is not None:
            host = dataclasses.replace(
                known,
                user=target.user if target.user is not None else known.user,
                port=target.port if target.port is not None else known.port,
            )
        else:
            host = HostRef(target.label, target.host, target.port, target.user)
        self.direct_hosts.add(host)
        return {host.name: host}

    def check(self, target: Target, found: _Hosts) -> None:
        problems: list[str] = []
        if self.missing_names:
            names = fold(self.missing_names)
            many = len(set(self.missing_names)) > 1
            problems.append(f"no host{'s' if many else ''} named {names}")
        if self.missing_addresses:
            addresses = fold(self.missing_addresses)
            many = len(set(self.missing_addresses)) > 1
            problems.append(f"no host has the address{'es' if many else ''} {addresses}")
        if problems:
            raise _error("; ".join(problems) + f" ({_NAMES_HINT})")
        if not found:
            text = str(target)
            parts = "".join(f"; {p} matches no host" for p in self.unmatched if p != text)
            raise _error(f"target {_shorten(text, 200)!r} matches no host{parts}")
