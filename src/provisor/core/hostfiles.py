"""Reading the host lists operators already have: pssh hosts files and Ansible INI inventories.

Parsing is all or nothing: every malformed line of the file is collected, and if
there is any, one `ParseErrors` lists them all (each an `InvalidInput` with the
source, line and column) and nothing is returned. The formats and how they map
to provisor hosts and groups are documented in docs/import.md.

Pure: the caller reads the file and passes its text.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.names import check_address, check_name, check_port, check_tag_key
from provisor.core.nodeset import NumberRange

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

Format = Literal["pssh", "ansible"]

MAX_HOSTS = 100_000
"""The most hosts one file (or one host range) may define."""

MAX_ERRORS = 1000
"""Errors reported per file; a file with more is reported as such after these."""

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}\$?")
_PORT = re.compile(r"[0-9]{1,5}")
_SECTION = re.compile(r"\[([^\]]*)\]\s*(?:[#;].*)?")
_RANGE_BODY = re.compile(r"([^:]*):([^:]*)(?::([^:]*))?")
_SPECIAL_GROUPS = ("all", "ungrouped")
_CONNECTION_VARS = {
    "ansible_host": "ansible_host",
    "ansible_ssh_host": "ansible_host",
    "ansible_port": "ansible_port",
    "ansible_ssh_port": "ansible_port",
    "ansible_user": "ansible_user",
    "ansible_ssh_user": "ansible_user",
}


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
# Shared helpers
# ---------------------------------------------------------------------------


class _LineError(Exception):
    """A problem on the current line, at `column` (1-based) when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class _Errors:
    """Collects located errors; raises them all at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[ProvisorError] = []
        self.truncated = False

    def add(self, message: str, line: int, column: int | None = None) -> None:
        if len(self.items) >= MAX_ERRORS:
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
                    f"too many errors: only the first {MAX_ERRORS} are shown",
                    source=self.source,
                    line=items[-1].line,
                )
            )
        raise ParseErrors(items, source=self.source)


def _lines(text: str) -> list[str]:
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


def _parse_port(text: str, column: int) -> int:
    if not _PORT.fullmatch(text):
        raise _LineError(f"invalid port {text!r}: must be a number 1-65535", column)
    try:
        return check_port(int(text))
    except InvalidInput as exc:
        raise _LineError(exc.message, column) from None


def _check_user(user: str, column: int) -> str:
    if not _USER.fullmatch(user):
        raise _LineError(
            f"invalid user {user!r}: use letters, digits, '.', '_', '-' or '@' (at most 64)",
            column,
        )
    return user


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split_host_port(token: str, column: int, *, ranges: bool) -> tuple[str, bool, str | None, int]:
    """Split `host[:port]`, `[v6]:port`, or a bare IPv6 address.

    Returns (host, is_ipv6, port text or None, column of the port). With
    `ranges`, brackets that are not an IPv6 address are host ranges.
    """
    if token.startswith("["):
        end = token.find("]")
        inside = token[1:end] if end > 0 else ""
        if end > 0 and _is_ipv6(inside):
            rest = token[end + 1 :]
            if not rest:
                return inside, True, None, 0
            if rest.startswith(":"):
                return inside, True, rest[1:], column + end + 2
            raise _LineError(
                f"unexpected {rest!r} after ']': expected ':PORT' or nothing", column + end + 1
            )
        if not ranges:
            raise _LineError(
                f"invalid host {token!r}: brackets are only for IPv6 addresses, as [::1]:22",
                column,
            )
    colons = [i for i, c in enumerate(token) if c == ":" and _depth_at(token, i) == 0]
    if len(colons) >= 2:
        if not _is_ipv6(token):
            raise _LineError(
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


def _host_identity(host: str, is_ipv6: bool, column: int) -> tuple[str, str]:
    """(name, address) of a host written as an IP address or a DNS name."""
    try:
        address = check_address(host)
    except InvalidInput as exc:
        raise _LineError(exc.message, column) from None
    if is_ipv6:
        return _checked_name(ipv6_host_name(address), column), address
    return _checked_name(address if _is_ip(address) else host, column), address


def _checked_name(name: str, column: int) -> str:
    try:
        return check_name(name)
    except InvalidInput as exc:
        raise _LineError(exc.message, column) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------
# pssh hosts files
# ---------------------------------------------------------------------------


def parse_pssh_hosts(text: str, source: str = "<hosts>") -> Inventory:
    """Read a pssh hosts file: one `[user@]host[:port] [user]` per line.

    `#` starts a comment (whole line or trailing). IPv6 addresses are written
    bare (`::1`) or in brackets with a port (`[::1]:2222`).
    """
    errors = _Errors(source)
    hosts: list[HostEntry] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(_lines(text), start=1):
        content = raw.split("#", 1)[0]
        words = [(m.group(), m.start() + 1) for m in re.finditer(r"\S+", content)]
        if not words:
            continue
        try:
            entry = _pssh_entry(words, number)
        except _LineError as exc:
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
        raise _LineError(f"unexpected {word!r}: expected [user@]host[:port] [user]", column)
    token, column = words[0]
    user: str | None = None
    if "@" in token:
        user, _, token = token.rpartition("@")
        if not user:
            raise _LineError("expected a user before '@'", column)
        _check_user(user, column)
        column += len(user) + 1
    if not token:
        raise _LineError("expected a host", column)
    host, is_ipv6, port_text, port_column = _split_host_port(token, column, ranges=False)
    port = None if port_text is None else _parse_port(port_text, port_column)
    name, address = _host_identity(host, is_ipv6, column)
    if len(words) == 2:
        second, second_column = words[1]
        if user is not None:
            raise _LineError(f"user given twice: {user!r} and {second!r}", second_column)
        user = _check_user(second, second_column)
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

_Var = tuple[str, int, int | None]  # value, line, column


@dataclass
class _Group:
    name: str
    line: int
    parent: str | None = None
    parent_line: int = 0
    vars: dict[str, _Var] = field(default_factory=dict)


@dataclass
class _Host:
    name: str
    line: int
    column: int
    address: str | None  # the address the name stands for (IP hosts), if any
    groups: list[str] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)


@dataclass(frozen=True)
class _Section:
    group: str  # a group name, "all" or "ungrouped"
    kind: Literal["hosts", "children", "vars", "unknown"]
    broken: bool = False  # a bad header: check the lines, apply nothing


class _AnsibleParser:
    def __init__(self, source: str) -> None:
        self.errors = _Errors(source)
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, _Host] = {}  # by lowercased name
        self.special_vars: dict[str, dict[str, _Var]] = {"all": {}, "ungrouped": {}}
        self.section = _Section("ungrouped", "hosts")
        self.too_many_reported = False

    # -- lines ---------------------------------------------------------------

    def parse(self, text: str) -> Inventory:
        for number, raw in enumerate(_lines(text), start=1):
            stripped = raw.strip()
            if not stripped or stripped[0] in "#;":
                continue
            try:
                self.line(raw, number)
            except _LineError as exc:
                self.errors.add(exc.message, number, exc.column)
        self.check_tree()
        hosts = self.resolve()
        self.errors.raise_if_any()
        groups = tuple(GroupEntry(g.name, g.parent, g.line) for g in self.groups.values())
        return Inventory(hosts=hosts, groups=groups, format="ansible")

    def line(self, raw: str, number: int) -> None:
        indent = len(raw) - len(raw.lstrip())
        stripped = raw.strip()
        if stripped.startswith("["):
            match = _SECTION.fullmatch(stripped)
            if match and not _is_ipv6(match.group(1)):
                self.header(match.group(1), number, indent + 2)
                return
            first = stripped.split()[0]
            if match is None and not _is_ipv6(first[1:-1]):
                if first.endswith("]") and first != stripped:
                    raise _LineError(
                        f"unexpected text after the section header {first!r}",
                        indent + len(first) + 1,
                    )
                if stripped.endswith("]"):
                    raise _LineError(f"malformed section header {stripped!r}", indent + 1)
        if self.section.kind == "vars":
            self.vars_line(raw, number)
        elif self.section.kind == "children":
            self.children_line(raw, number)
        elif self.section.kind == "hosts":
            self.host_line(raw, number)
        # lines of a section with an unknown suffix are skipped: it was reported

    def header(self, content: str, number: int, column: int) -> None:
        name, colon, suffix = content.partition(":")
        kind: Literal["hosts", "children", "vars"] = "hosts"
        if colon:
            if suffix not in ("children", "vars"):
                self.section = _Section(name, "unknown", broken=True)
                raise _LineError(
                    f"unknown section suffix ':{suffix}' (expected ':children' or ':vars')",
                    column + len(name),
                )
            kind = "children" if suffix == "children" else "vars"
        self.section = _Section(name, kind, broken=True)
        try:
            check_name(name, field="group")
        except InvalidInput as exc:
            raise _LineError(exc.message, column) from None
        if name == "ungrouped" and kind == "children":
            raise _LineError("the special group 'ungrouped' cannot have child groups", column)
        if name not in _SPECIAL_GROUPS:
            self.define(name, number)
        self.section = _Section(name, kind)

    def define(self, name: str, number: int) -> _Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(name, number)
        return group

    # -- [group] -------------------------------------------------------------

    def host_line(self, raw: str, number: int) -> None:
        words = _split_words(raw)
        if not words:
            return
        pattern, column = words[0]
        line_vars: dict[str, _Var] = {}
        problems: list[_LineError] = []
        for word, word_column in words[1:]:
            try:
                key, value = _key_value(word, word_column)
                self.set_var(line_vars, key, value, number, word_column)
            except _LineError as exc:
                problems.append(exc)
        try:
            names, default_address = self.expand_host(pattern, column, line_vars, number)
        except _LineError as exc:
            problems.insert(0, exc)
        for problem in problems:
            self.errors.add(problem.message, number, problem.column)
        if problems or self.section.broken:
            return
        group = self.section.group
        conflicts: set[str] = set()
        for name in names:
            host = self.host(name, number, column, default_address)
            if host is None:
                return
            if group not in _SPECIAL_GROUPS and group not in host.groups:
                host.groups.append(group)
            for key, var in line_vars.items():
                previous = host.vars.get(key)
                if previous is None:
                    host.vars[key] = var
                elif previous[0] != var[0] and key not in conflicts:
                    conflicts.add(key)
                    self.errors.add(
                        f"host {host.name!r}: {key} is {previous[0]!r} on line {previous[1]} "
                        f"but {var[0]!r} here; a host's variables must agree",
                        number,
                        var[2],
                    )

    def expand_host(
        self, pattern: str, column: int, line_vars: dict[str, _Var], number: int
    ) -> tuple[list[str], str | None]:
        host, is_ipv6, port_text, port_column = _split_host_port(pattern, column, ranges=True)
        if port_text is not None:
            port = _parse_port(port_text, port_column)
            self.set_var(line_vars, "ansible_port", str(port), number, port_column)
        if is_ipv6 or _is_ip(host):
            name, address = _host_identity(host, is_ipv6, column)
            return [name], address
        names = _expand_ranges(host, column)
        for name in names:
            _checked_name(name, column)
        return names, None

    def host(self, name: str, number: int, column: int, address: str | None) -> _Host | None:
        key = name.lower()
        host = self.hosts.get(key)
        if host is None:
            if len(self.hosts) >= MAX_HOSTS:
                if not self.too_many_reported:
                    self.too_many_reported = True
                    self.errors.add(
                        f"too many hosts: at most {MAX_HOSTS:,} per file", number, column
                    )
                return None
            host = self.hosts[key] = _Host(name, number, column, address)
        return host

    def set_var(
        self, target: dict[str, _Var], key: str, value: str, number: int, column: int
    ) -> None:
        key = _CONNECTION_VARS.get(key, key)
        value = _check_connection_var(key, value, column)
        previous = target.get(key)
        if previous is not None and previous[0] != value:
            raise _LineError(f"{key} given twice with different values", column)
        target[key] = (value, number, column)

    # -- [group:children] ----------------------------------------------------

    def children_line(self, raw: str, number: int) -> None:
        words = _split_words(raw)
        if not words:
            return
        name, column = words[0]
        if len(words) > 1:
            raise _LineError(
                f"unexpected {words[1][0]!r}: a :children section lists one group per line",
                words[1][1],
            )
        try:
            check_name(name, field="group")
        except InvalidInput as exc:
            raise _LineError(exc.message, column) from None
        if name in _SPECIAL_GROUPS:
            raise _LineError(f"the special group {name!r} cannot be a child group", column)
        if self.section.broken:
            return
        parent = self.section.group
        if name == parent:
            raise _LineError(f"group {name!r} cannot be its own child", column)
        child = self.define(name, number)
        if parent == "all":
            return
        if child.parent is None:
            child.parent, child.parent_line = parent, number
        elif child.parent != parent:
            raise _LineError(
                f"group {name!r} already has parent {child.parent!r} (line {child.parent_line}); "
                "provisor groups form a tree, so a group has at most one parent",
                column,
            )

    # -- [group:vars] --------------------------------------------------------

    def vars_line(self, raw: str, number: int) -> None:
        key_part, equals, rest = raw.partition("=")
        key = key_part.strip()
        column = len(key_part) - len(key_part.lstrip()) + 1
        if not equals:
            found = _strip_comment(raw).strip()
            if not found:
                return
            raise _LineError(f"expected key=value, found {found!r}", column)
        if not key:
            raise _LineError("expected a variable name before '='", column)
        value_column = len(key_part) + 2 + len(rest) - len(rest.lstrip())
        try:
            check_tag_key(key, field="vars")
        except InvalidInput as exc:
            raise _LineError(exc.message, column) from None
        value = _vars_value(rest)
        if self.section.broken:
            return
        group = self.section.group
        target = self.special_vars[group] if group in _SPECIAL_GROUPS else self.groups[group].vars
        try:
            self.set_var(target, key, value, number, value_column)
        except _LineError as exc:
            if "given twice" in exc.message:
                previous = target[_CONNECTION_VARS.get(key, key)]
                raise _LineError(
                    f"{key} is {previous[0]!r} on line {previous[1]} but {value!r} here",
                    value_column,
                ) from None
            raise

    # -- the whole file ------------------------------------------------------

    def check_tree(self) -> None:
        """A group may not be its own ancestor."""
        done: set[str] = set()
        for start in self.groups.values():
            path: list[str] = []
            current: _Group | None = start
            while current is not None and current.name not in done:
                if current.name in path:
                    cycle = path[path.index(current.name) :]
                    self.errors.add(
                        f"group cycle: {' -> '.join([*cycle, cycle[0]])} (each a child of the "
                        "next); provisor groups form a tree",
                        max(self.groups[name].parent_line for name in cycle),
                    )
                    break
                path.append(current.name)
                current = self.groups.get(current.parent) if current.parent else None
            done.update(path)

    def ancestry(self, name: str) -> list[str]:
        """The group and its ancestors, nearest first (stops at a cycle)."""
        chain: list[str] = []
        current: str | None = name
        while current is not None and current not in chain:
            chain.append(current)
            current = self.groups[current].parent
        return chain

    def group_vars(self, groups: tuple[str, ...]) -> dict[str, _Var]:
        """The variables hosts of these groups get from `all`, the groups and their ancestors.

        Like Ansible: `all` first, then shallower groups before deeper ones (by name
        at equal depth); a later one overrides an earlier one.
        """
        merged: dict[str, _Var] = dict(self.special_vars["all"])
        if not groups:
            merged.update(self.special_vars["ungrouped"])
        related = {g for name in groups for g in self.ancestry(name)}
        for name in sorted(related, key=lambda g: (len(self.ancestry(g)), g)):
            merged.update(self.groups[name].vars)
        return merged

    def resolve(self) -> tuple[HostEntry, ...]:
        entries: list[HostEntry] = []
        cache: dict[tuple[str, ...], dict[str, _Var]] = {}
        for host in self.hosts.values():
            groups = tuple(host.groups)
            if groups not in cache:
                cache[groups] = self.group_vars(groups)
            merged = {**cache[groups], **host.vars}
            address = merged["ansible_host"][0] if "ansible_host" in merged else host.address
            if address is None:
                try:
                    address = check_address(host.name)
                except InvalidInput:
                    self.errors.add(
                        f"host {host.name!r} has no ansible_host and its name is not an "
                        "IP address or DNS name; give it ansible_host=ADDRESS",
                        host.line,
                        host.column,
                    )
                    continue
            port = merged.get("ansible_port")
            user = merged.get("ansible_user")
            variables = {
                k: v[0] for k, v in sorted(merged.items()) if k not in _CONNECTION_VARS.values()
            }
            entries.append(
                HostEntry(
                    name=host.name,
                    address=address,
                    port=int(port[0]) if port else None,
                    user=user[0] if user else None,
                    groups=groups,
                    vars=MappingProxyType(variables),
                    line=host.line,
                )
            )
        return tuple(entries)


def _check_connection_var(key: str, value: str, column: int) -> str:
    if key == "ansible_host":
        try:
            return check_address(value, field=key)
        except InvalidInput as exc:
            raise _LineError(exc.message, column) from None
    if key == "ansible_port":
        return str(_parse_port(value, column))
    if key == "ansible_user":
        return _check_user(value, column)
    return value


def _split_words(raw: str) -> list[tuple[str, int]]:
    """Shell-like words of a line with their columns, unquoted by `shlex`.

    `#` starts a comment only at the beginning of a word, so `pass#1` is a value.
    """
    words: list[tuple[str, int]] = []
    pos, size = 0, len(raw)
    while pos < size:
        if raw[pos].isspace():
            pos += 1
            continue
        if raw[pos] == "#":
            break
        start = pos
        quote: str | None = None
        while pos < size and (quote is not None or not raw[pos].isspace()):
            char = raw[pos]
            if quote is None and char in "'\"":
                quote, quote_start = char, pos
            elif char == quote:
                quote = None
            elif char == "\\" and quote != "'":
                pos += 1
            pos += 1
        if quote is not None:
            raise _LineError(f"unterminated {quote} quote", quote_start + 1)
        try:
            (word,) = shlex.split(raw[start:pos])
        except ValueError as exc:
            raise _LineError(f"cannot read {raw[start:pos]!r}: {exc}", start + 1) from None
        words.append((word, start + 1))
    return words


def _key_value(word: str, column: int) -> tuple[str, str]:
    key, equals, value = word.partition("=")
    if not equals:
        raise _LineError(f"expected key=value after the host, found {word!r}", column)
    if not key:
        raise _LineError(f"expected a variable name before '=' in {word!r}", column)
    try:
        check_tag_key(key, field="vars")
    except InvalidInput as exc:
        raise _LineError(exc.message, column) from None
    return key, value


def _strip_comment(text: str) -> str:
    """`text` without a trailing comment: `#` at the start or after a space, outside quotes."""
    for quote_aware in (True, False):
        quote: str | None = None
        for i, char in enumerate(text):
            if quote is not None:
                if char == quote:
                    quote = None
            elif quote_aware and char in "'\"":
                quote = char
            elif char == "#" and (i == 0 or text[i - 1].isspace()):
                return text[:i]
        if quote is None:
            break
    return text


def _vars_value(rest: str) -> str:
    """A `[group:vars]` value: the rest of the line; one quoted word is unquoted."""
    value = _strip_comment(rest).strip()
    if value[:1] in ("'", '"'):
        try:
            words = _split_words(value)
        except _LineError:
            return value
        if len(words) == 1:
            return words[0][0]
    return value


def _expand_ranges(pattern: str, column: int) -> list[str]:
    """Expand Ansible host ranges: `web[01:03]`, `db-[a:c]`, `n[0:10:5]`, several in one name."""
    parts: list[list[str]] = []
    count = 1
    pos = 0
    while True:
        start = pattern.find("[", pos)
        if start < 0:
            parts.append([pattern[pos:]])
            break
        end = pattern.find("]", start)
        if end < 0:
            raise _LineError("unclosed '[' in host range", column + start)
        parts.append([pattern[pos:start]])
        values = _range_values(pattern[start + 1 : end], column + start)
        parts.append(values)
        count *= len(values)
        if count > MAX_HOSTS:
            raise _LineError(
                f"host range {pattern!r} expands to more than {MAX_HOSTS:,} hosts", column
            )
        pos = end + 1
    return ["".join(combo) for combo in itertools.product(*parts)]


def _range_values(body: str, column: int) -> list[str]:
    """The values of one `[start:end(:stride)]`, as Ansible writes them."""
    match = _RANGE_BODY.fullmatch(body)
    if match is None:
        raise _LineError(
            f"malformed host range [{body}]: expected [start:end] or [start:end:stride]", column
        )
    first, last, stride_text = match.group(1), match.group(2), match.group(3)
    if not first:
        raise _LineError(f"malformed host range [{body}]: missing the start", column)
    if not last:
        raise _LineError(f"malformed host range [{body}]: missing the end", column)
    stride = 1
    if stride_text is not None:
        if not stride_text.isdigit() or int(stride_text) < 1:
            raise _LineError(
                f"malformed host range [{body}]: the stride must be a positive number", column
            )
        stride = int(stride_text)
    if first.isdigit() and last.isdigit() and first.isascii() and last.isascii():
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        if width and len(last) != width:
            raise _LineError(
                f"malformed host range [{body}]: with leading zeros, start and end "
                "must have the same number of digits",
                column,
            )
        numbers = NumberRange(int(first), int(last), stride, width)
        if numbers.start > numbers.stop:
            raise _LineError(f"malformed host range [{body}]: the start is after the end", column)
        if numbers.size > MAX_HOSTS:
            raise _LineError(
                f"host range [{body}] expands to more than {MAX_HOSTS:,} hosts", column
            )
        return list(numbers.texts())
    letters = string.ascii_letters
    if len(first) == 1 and len(last) == 1 and first in letters and last in letters:
        low, high = letters.index(first), letters.index(last)
        if low > high:
            raise _LineError(f"malformed host range [{body}]: the start is after the end", column)
        return list(letters[low : high + 1 : stride])
    raise _LineError(
        f"malformed host range [{body}]: use numbers [01:20] or single letters [a:f]", column
    )


def parse_ansible_ini(text: str, source: str = "<inventory>") -> Inventory:
    """Read an Ansible INI inventory; see docs/import.md for what maps to what."""
    return _AnsibleParser(source).parse(text)


# ---------------------------------------------------------------------------
# Either
# ---------------------------------------------------------------------------


def detect_format(text: str) -> Format:
    """`ansible` if the text has `[section]` lines, `key=value` host variables or host
    ranges (`web[01:20]`); `pssh` otherwise. A file of plain host names reads the same
    either way."""
    for raw in _lines(text):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        match = _SECTION.fullmatch(stripped)
        if match and not _is_ipv6(match.group(1)):
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
