"""Reading Ansible INI inventories: sections, host ranges, variables, the group tree.

Part of `provisor.core.hostfiles`, which re-exports the public names: import them
from there (`parse_ansible_ini`). See docs/import.md for what maps to what.
"""

from __future__ import annotations

import itertools
import re
import shlex
import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from provisor.core._hostfiles_base import (
    SECTION,
    Errors,
    GroupEntry,
    HostEntry,
    Inventory,
    LineError,
    check_user,
    checked_name,
    host_identity,
    is_ip_address,
    is_ipv6_address,
    lines,
    parse_port,
    split_host_port,
)
from provisor.core.errors import InvalidInput
from provisor.core.names import check_address, check_name, check_tag_key
from provisor.core.nodeset import NumberRange

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


class AnsibleParser:
    """Reads one file; `max_hosts` and `max_errors` are `hostfiles`' limits, passed per call."""

    def __init__(self, source: str, *, max_hosts: int, max_errors: int) -> None:
        self.max_hosts = max_hosts
        self.errors = Errors(source, max_errors)
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, _Host] = {}  # by lowercased name
        self.special_vars: dict[str, dict[str, _Var]] = {"all": {}, "ungrouped": {}}
        self.section = _Section("ungrouped", "hosts")
        self.too_many_reported = False

    # -- lines ---------------------------------------------------------------

    def parse(self, text: str) -> Inventory:
        for number, raw in enumerate(lines(text), start=1):
            stripped = raw.strip()
            if not stripped or stripped[0] in "#;":
                continue
            try:
                self.line(raw, number)
            except LineError as exc:
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
            match = SECTION.fullmatch(stripped)
            if match and not is_ipv6_address(match.group(1)):
                self.header(match.group(1), number, indent + 2)
                return
            first = stripped.split()[0]
            if match is None and not is_ipv6_address(first[1:-1]):
                if first.endswith("]") and first != stripped:
                    raise LineError(
                        f"unexpected text after the section header {first!r}",
                        indent + len(first) + 1,
                    )
                if stripped.endswith("]"):
                    raise LineError(f"malformed section header {stripped!r}", indent + 1)
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
                raise LineError(
                    f"unknown section suffix ':{suffix}' (expected ':children' or ':vars')",
                    column + len(name),
                )
            kind = "children" if suffix == "children" else "vars"
        self.section = _Section(name, kind, broken=True)
        try:
            check_name(name, field="group")
        except InvalidInput as exc:
            raise LineError(exc.message, column) from None
        if name == "ungrouped" and kind == "children":
            raise LineError("the special group 'ungrouped' cannot have child groups", column)
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
        problems: list[LineError] = []
        for word, word_column in words[1:]:
            try:
                key, value = _key_value(word, word_column)
                self.set_var(line_vars, key, value, number, word_column)
            except LineError as exc:
                problems.append(exc)
        try:
            names, default_address = self.expand_host(pattern, column, line_vars, number)
        except LineError as exc:
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
        host, is_ipv6, port_text, port_column = split_host_port(pattern, column, ranges=True)
        if port_text is not None:
            port = parse_port(port_text, port_column)
            self.set_var(line_vars, "ansible_port", str(port), number, port_column)
        if is_ipv6 or is_ip_address(host):
            name, address = host_identity(host, is_ipv6, column)
            return [name], address
        names = _expand_ranges(host, column, self.max_hosts)
        for name in names:
            checked_name(name, column)
        return names, None

    def host(self, name: str, number: int, column: int, address: str | None) -> _Host | None:
        key = name.lower()
        host = self.hosts.get(key)
        if host is None:
            if len(self.hosts) >= self.max_hosts:
                if not self.too_many_reported:
                    self.too_many_reported = True
                    self.errors.add(
                        f"too many hosts: at most {self.max_hosts:,} per file", number, column
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
            raise LineError(f"{key} given twice with different values", column)
        target[key] = (value, number, column)

    # -- [group:children] ----------------------------------------------------

    def children_line(self, raw: str, number: int) -> None:
        words = _split_words(raw)
        if not words:
            return
        name, column = words[0]
        if len(words) > 1:
            raise LineError(
                f"unexpected {words[1][0]!r}: a :children section lists one group per line",
                words[1][1],
            )
        try:
            check_name(name, field="group")
        except InvalidInput as exc:
            raise LineError(exc.message, column) from None
        if name in _SPECIAL_GROUPS:
            raise LineError(f"the special group {name!r} cannot be a child group", column)
        if self.section.broken:
            return
        parent = self.section.group
        if name == parent:
            raise LineError(f"group {name!r} cannot be its own child", column)
        child = self.define(name, number)
        if parent == "all":
            return
        if child.parent is None:
            child.parent, child.parent_line = parent, number
        elif child.parent != parent:
            raise LineError(
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
            raise LineError(f"expected key=value, found {found!r}", column)
        if not key:
            raise LineError("expected a variable name before '='", column)
        value_column = len(key_part) + 2 + len(rest) - len(rest.lstrip())
        try:
            check_tag_key(key, field="vars")
        except InvalidInput as exc:
            raise LineError(exc.message, column) from None
        value = _vars_value(rest)
        if self.section.broken:
            return
        group = self.section.group
        target = self.special_vars[group] if group in _SPECIAL_GROUPS else self.groups[group].vars
        try:
            self.set_var(target, key, value, number, value_column)
        except LineError as exc:
            if "given twice" in exc.message:
                previous = target[_CONNECTION_VARS.get(key, key)]
                raise LineError(
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
            raise LineError(exc.message, column) from None
    if key == "ansible_port":
        return str(parse_port(value, column))
    if key == "ansible_user":
        return check_user(value, column)
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
            raise LineError(f"unterminated {quote} quote", quote_start + 1)
        try:
            (word,) = shlex.split(raw[start:pos])
        except ValueError as exc:
            raise LineError(f"cannot read {raw[start:pos]!r}: {exc}", start + 1) from None
        words.append((word, start + 1))
    return words


def _key_value(word: str, column: int) -> tuple[str, str]:
    key, equals, value = word.partition("=")
    if not equals:
        raise LineError(f"expected key=value after the host, found {word!r}", column)
    if not key:
        raise LineError(f"expected a variable name before '=' in {word!r}", column)
    try:
        check_tag_key(key, field="vars")
    except InvalidInput as exc:
        raise LineError(exc.message, column) from None
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
        except LineError:
            return value
        if len(words) == 1:
            return words[0][0]
    return value


def _expand_ranges(pattern: str, column: int, max_hosts: int) -> list[str]:
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
            raise LineError("unclosed '[' in host range", column + start)
        parts.append([pattern[pos:start]])
        values = _range_values(pattern[start + 1 : end], column + start, max_hosts)
        parts.append(values)
        count *= len(values)
        if count > max_hosts:
            raise LineError(
                f"host range {pattern!r} expands to more than {max_hosts:,} hosts", column
            )
        pos = end + 1
    return ["".join(combo) for combo in itertools.product(*parts)]


_MAX_DIGITS = 1000  # beyond any host count, below what int() refuses to read (4,300)


def _range_values(body: str, column: int, max_hosts: int) -> list[str]:
    """The values of one `[start:end(:stride)]`, as Ansible writes them."""
    match = _RANGE_BODY.fullmatch(body)
    if match is None:
        raise LineError(
            f"malformed host range [{body}]: expected [start:end] or [start:end:stride]", column
        )
    first, last, stride_text = match.group(1), match.group(2), match.group(3)
    if max(len(first), len(last), len(stride_text or "")) > _MAX_DIGITS:
        raise LineError(
            f"malformed host range [{body[:40]}...]: numbers of at most {_MAX_DIGITS} digits",
            column,
        )
    if not first:
        raise LineError(f"malformed host range [{body}]: missing the start", column)
    if not last:
        raise LineError(f"malformed host range [{body}]: missing the end", column)
    stride = 1
    if stride_text is not None:
        if not (stride_text.isascii() and stride_text.isdigit()) or int(stride_text) < 1:
            raise LineError(
                f"malformed host range [{body}]: the stride must be a positive number", column
            )
        stride = int(stride_text)
    if first.isdigit() and last.isdigit() and first.isascii() and last.isascii():
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        if width and len(last) != width:
            raise LineError(
                f"malformed host range [{body}]: with leading zeros, start and end "
                "must have the same number of digits",
                column,
            )
        numbers = NumberRange(int(first), int(last), stride, width)
        if numbers.start > numbers.stop:
            raise LineError(f"malformed host range [{body}]: the start is after the end", column)
        if numbers.size > max_hosts:
            raise LineError(f"host range [{body}] expands to more than {max_hosts:,} hosts", column)
        return list(numbers.texts())
    letters = string.ascii_letters
    if len(first) == 1 and len(last) == 1 and first in letters and last in letters:
        low, high = letters.index(first), letters.index(last)
        if low > high:
            raise LineError(f"malformed host range [{body}]: the start is after the end", column)
        return list(letters[low : high + 1 : stride])
    raise LineError(
        f"malformed host range [{body}]: use numbers [01:20] or single letters [a:f]", column
    )
