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

The language lives in three modules, all re-exported here: `_targets_ast` (the
limits, the AST and its canonical text), `_targets_parse` (the tokenizer and
the parser) and this one (evaluation).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, overload

from provisor.core._targets_ast import (
    IPV4,
    MAX_DEPTH,
    MAX_TARGET_LENGTH,
    PREFIXES,
    SYNTAX,
    AddressRef,
    DeploymentRef,
    Difference,
    Direct,
    FileRef,
    GroupRef,
    Intersection,
    IPAddress,
    Name,
    NodeSet,
    TagRef,
    Target,
    Union,
)
from provisor.core._targets_parse import MAX_NAMES, parse_target
from provisor.core.nodeset import fold, natural_key

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

_NAMES_HINT = "a host outside the inventory is written USER@HOST or HOST:PORT"

# This language's message helpers, under the short names its code uses.
_shorten = SYNTAX.shorten
_error = SYNTAX.error


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
        self.missing_sets: list[NodeSet] = []  # node sets none of whose names is a host
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
            missing = len(self.missing_names), len(self.missing_addresses)
            found = self.lookup(target.names)
            if not found and len(self.missing_addresses) == missing[1]:
                # Said as written: folding 100,000 names back would cost more than the lookup.
                del self.missing_names[missing[0] :]
                self.missing_sets.append(target)
            return found
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
            address = _parse_ip(name) if IPV4.fullmatch(name) else None
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
        if self.missing_names or self.missing_sets:
            written = {s.pattern: min(s.names, key=natural_key) for s in self.missing_sets}
            names = fold(self.missing_names, written.items())
            many = len(set(self.missing_names).union(*(s.names for s in self.missing_sets))) > 1
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
