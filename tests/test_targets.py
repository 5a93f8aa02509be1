"""The target language: parsing, canonical text, evaluation, errors, properties."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisor.core.errors import InvalidInput, NotFound
from provisor.core.nodeset import natural_key
from provisor.core.targets import (
    MAX_DEPTH,
    MAX_TARGET_LENGTH,
    AddressRef,
    DeploymentRef,
    Difference,
    Direct,
    FileRef,
    GroupRef,
    HostRef,
    Intersection,
    Name,
    NodeSet,
    Selection,
    TagRef,
    Target,
    Union,
    evaluate,
    parse_target,
)


def net(text: str) -> AddressRef:
    return AddressRef(ipaddress.ip_network(text))


def error(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_target(text)
    assert info.value.field == "target"
    return info.value


A, B, C, D = Name("a"), Name("b"), Name("c"), Name("d")

# ---------------------------------------------------------------------------
# Atoms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web01", Name("web01")),
        ("web-1.example.com", Name("web-1.example.com")),
        ("123", Name("123")),
        ("group", Name("group")),
        ("web*", Name("web*")),
        ("db?", Name("db?")),
        ("*", Name("*")),
        ("web[01-20]", NodeSet("web[01-20]")),
        ("rack[1-2]-n[01-04]", NodeSet("rack[1-2]-n[01-04]")),
        ("web[1-10/2]", NodeSet("web[1-10/2]")),
        ("web[1,3]", NodeSet("web[1,3]")),
        ("10.0.0.[1-9]", NodeSet("10.0.0.[1-9]")),
        ("group:web", GroupRef("web")),
        ("tag:env=prod", TagRef("env", "prod")),
        ("tag:env=", TagRef("env", "")),
        ('tag:env=""', TagRef("env", "")),
        ("tag:url=a=b:c@d", TagRef("url", "a=b:c@d")),
        ('tag:desc="web, db & (more)!"', TagRef("desc", "web, db & (more)!")),
        ('tag:q="a\\"b\\\\c"', TagRef("q", 'a"b\\c')),
        ("deployment:shop", DeploymentRef("shop")),
        ("10.1.0.0/24", net("10.1.0.0/24")),
        ("10.1.0.5", net("10.1.0.5/32")),
        ("10.1.0.5/32", net("10.1.0.5/32")),
        ("0.0.0.0/0", net("0.0.0.0/0")),
        ("fd00::/64", net("fd00::/64")),
        ("::1", net("::1/128")),
        ("[::1]", net("::1/128")),
        ("@/path/hosts.txt", FileRef("/path/hosts.txt")),
        ("@hosts", FileRef("hosts")),
        ('@"/my hosts, old.txt"', FileRef("/my hosts, old.txt")),
        ("user@10.0.0.5:2222", Direct("user", "10.0.0.5", 2222)),
        ("root@web7", Direct("root", "web7", None)),
        ("root@web7.example.com", Direct("root", "web7.example.com", None)),
        ("web7:2222", Direct(None, "web7", 2222)),
        ("10.0.0.5:22", Direct(None, "10.0.0.5", 22)),
        ("[::1]:2222", Direct(None, "::1", 2222)),
        ("root@[::1]:2222", Direct("root", "::1", 2222)),
        ("root@[::1]", Direct("root", "::1", None)),
        ("root@::1", Direct("root", "::1", None)),
        ("root@[0:0::1]", Direct("root", "::1", None)),
        ("deploy-user@host_1", Direct("deploy-user", "host_1", None)),
        ("alice@corp@web7", Direct("alice@corp", "web7", None)),
        ("1admin@web7", Direct("1admin", "web7", None)),
        ("  web01  ", Name("web01")),
    ],
)
def test_atoms(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


def test_node_set_names() -> None:
    node_set = parse_target("web[01-03]")
    assert isinstance(node_set, NodeSet)
    assert node_set.names == ("web01", "web02", "web03")


# ---------------------------------------------------------------------------
# Operators and precedence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b", Union((A, B))),
        ("a,b,c", Union((A, B, C))),
        ("a&b", Intersection((A, B))),
        ("a!b", Difference(A, B)),
        ("a&!b", Difference(A, B)),
        ("!b&a", Difference(A, B)),
        ("a!b!c", Difference(A, Union((B, C)))),
        ("a!(b,c)", Difference(A, Union((B, C)))),
        ("a&!b&!c", Difference(A, Union((B, C)))),
        # ',' binds loosest
        ("a,b&c", Union((A, Intersection((B, C))))),
        ("a&b,c", Union((Intersection((A, B)), C))),
        ("a!b,c", Union((Difference(A, B), C))),
        ("a,b!c", Union((A, Difference(B, C)))),
        # in a chain of '&' and '!', the positives are intersected, the rest excluded
        ("a&b!c", Difference(Intersection((A, B)), C)),
        ("a!b&c", Difference(Intersection((A, C)), B)),
        ("a!b&c!d", Difference(Intersection((A, C)), Union((B, D)))),
        # parentheses
        ("(a,b)&c", Intersection((Union((A, B)), C))),
        ("a&(b,c)", Intersection((A, Union((B, C))))),
        ("(a!b)!c", Difference(Difference(A, B), C)),
        ("a!(b!c)", Difference(A, Difference(B, C))),
        ("a&(b!c)", Intersection((A, Difference(B, C)))),
        ("((a))", A),
        ("(a,b),c", Union((Union((A, B)), C))),
        # whitespace
        (" a , b & ! c ", Union((A, Difference(B, C)))),
        (
            "group:web&!tag:env=dev",
            Difference(GroupRef("web"), TagRef("env", "dev")),
        ),
        ("group:web!web03", Difference(GroupRef("web"), Name("web03"))),
        ("web[1-2],db1", Union((NodeSet("web[1-2]"), Name("db1")))),
    ],
)
def test_operators(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a , b", "a,b"),
        ("a&!b", "a!b"),
        ("!b&a", "a!b"),
        ("a!(b,c)", "a!b!c"),
        ("a&b!c", "a&b!c"),
        ("a!b&c", "a&c!b"),
        ("(a,b)&c", "(a,b)&c"),
        ("(a!b)!c", "(a!b)!c"),
        ("a!(b&c)", "a!(b&c)"),
        ("a!(b!c)", "a!(b!c)"),
        ("((a,b)),c", "(a,b),c"),
        ("[::1]", "::1"),
        ("root@::1", "root@[::1]"),
        ("10.1.0.5/32", "10.1.0.5"),
        ("[0:0::1]:22", "[::1]:22"),
        ('tag:env="prod"', "tag:env=prod"),
        ("tag:env=", 'tag:env=""'),
        ("tag:x=a[1]", 'tag:x="a[1]"'),
        ('@"/etc/hosts"', "@/etc/hosts"),
        ("web7:022", "web7:22"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    target = parse_target(text)
    assert str(target) == canonical
    assert parse_target(canonical) == target


# ---------------------------------------------------------------------------
# Parse errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", 1, "empty target"),
        ("   ", 1, "empty target"),
        ("web01,", 7, "after ','"),
        (",web01", 1, "found ','"),
        ("web01,,web02", 7, "after ','"),
        ("web01&", 7, "after '&'"),
        ("web01!", 7, "after '!'"),
        ("web01 web02", 7, "separate hosts with ','"),
        ("(web01", 7, "expected ')' to close the '(' at column 1"),
        ("a&((b)", 7, "to close the '(' at column 3"),
        ("web01)", 6, "unexpected ')'"),
        ("a(b)", 2, "expected ',', '&', '!' or end of target, found '('"),
        ("()", 2, "after '('"),
        ("!web01", 1, "nothing to exclude from"),
        ("a,!b", 3, "nothing to exclude from"),
        ("a&(!b)", 4, "nothing to exclude from"),
        ("a!!b", 3, "cannot be doubled"),
        ("a&!!b", 4, "cannot be doubled"),
        ("10.1.0.0/33", 1, "invalid IP network"),
        ("a,10.1.0.5/24", 3, "did you mean 10.1.0.0/24"),
        ("10.1.300.5", 1, "invalid IP address"),
        ("fd00::/129", 1, "invalid IP network"),
        ("a:b:c", 1, "invalid IP address"),
        ("web7:0", 6, "invalid port '0'"),
        ("web7:65536", 6, "invalid port"),
        ("root@web7:99999999999", 11, "invalid port"),
        ("[::1]:0", 7, "invalid port"),
        ("[::1]x", 6, "expected ':PORT'"),
        ("[1.2.3.4]:22", 1, "invalid host"),
        ("tag:env", 8, "expected '='"),
        ("a,tag:env", 10, "expected '='"),
        ("tag:=prod", 5, "expected a tag key"),
        ("tag:9x=1", 5, "invalid tag"),
        ('tag:k="open', 7, "unterminated string"),
        ('tag:k="a"b', 10, "after the quoted tag value"),
        ('tag:k=a"b"', 8, "a quote may only open the tag value"),
        ("foo:bar", 1, "unknown prefix 'foo'"),
        ("web01,Group:web", 7, "unknown prefix 'Group'"),
        ("group:", 7, "expected a group name"),
        ("deployment:", 12, "expected a deployment name"),
        ("group:-web", 7, "invalid group name"),
        ("@", 2, "expected a file path"),
        ('@""', 2, "expected a file path"),
        ('"web"', 1, "quotes are only allowed"),
        ("web01@", 7, "expected a host"),
        ("bad user@web", 5, "separate hosts"),
        ("r%t@web", 1, "invalid user name"),
        ("-r@web", 1, "invalid user name"),
        ("root@10.0.0.300", 6, "invalid IP address"),
        ("root@-web", 6, "invalid host"),
        ("root@web[1-2]", 6, "invalid host"),
        ("web[1-3", 4, "unclosed '['"),
        ("a,web[1-3", 6, "unclosed '['"),
        ("web]", 4, "unexpected ']'"),
        ("web[1, 2]", 7, "whitespace inside brackets"),
        ("web[5-1]", 5, "reversed range"),
        ("a,web[x-y]", 7, "invalid range"),
        ("web[1-3]-", 1, "invalid name 'web1-'"),
        ("web*[1-2]", 1, "invalid name 'web*1'"),
        ("web#1", 1, "invalid name"),
        ("-web", 1, "invalid name"),
        ("web$*", 1, "invalid wildcard"),
        ("x[1-100000]y[1-2]", 1, "more than 100000"),
        ("x[1-60000],y[1-60000]", 12, "more than 100000"),
    ],
)
def test_parse_errors(text: str, column: int, message: str) -> None:
    exc = error(text)
    assert message in exc.message
    assert exc.column == column
    assert str(exc).startswith(f"target:1:{column}: ")


def test_too_long_and_too_deep() -> None:
    assert "too long" in error("a," * (MAX_TARGET_LENGTH // 2) + "a").message
    assert parse_target("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == A
    exc = error("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert "nested too deeply" in exc.message


@pytest.mark.parametrize(
    "build",
    [
        lambda: Union((A,)),
        lambda: Intersection(()),
        lambda: Name("a:b"),
        lambda: Name("10.0.0.1"),
        lambda: Name(""),
        lambda: NodeSet("web1"),
        lambda: NodeSet("web[1-2],db1"),
        lambda: NodeSet("web[2-1]"),
        lambda: GroupRef("a b"),
        lambda: TagRef("1x", "v"),
        lambda: DeploymentRef(""),
        lambda: FileRef(""),
        lambda: Direct(None, "web7", None),
        lambda: Direct("root", "web 7", None),
        lambda: Direct("root", "web7", 0),
        lambda: Direct("ro ot", "web7", None),
        lambda: Direct(None, "group", 22),
    ],
)
def test_constructors_validate(build: object) -> None:
    with pytest.raises(InvalidInput):
        build()  # type: ignore[operator]


def test_direct_normalizes_addresses() -> None:
    assert Direct("root", "0:0::1", None).host == "::1"
    assert Direct(None, "::1", 22).label == "[::1]:22"
    assert Direct("root", "web7", None).label == "web7"
    assert Direct("root", "web7", 2222).label == "web7:2222"


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def _inventory() -> list[HostRef]:
    hosts = [HostRef(f"web{i:02d}", f"10.0.1.{i}", 22) for i in range(1, 21)]
    hosts += [HostRef(f"db{i}", f"10.0.2.{i}", 2222, "postgres") for i in (1, 2, 10)]
    hosts += [HostRef("v6", "fd00::5"), HostRef("dns", "dns.example.com")]
    return hosts


class MemoryResolver:
    """An inventory in memory: groups, tags, deployments and files by name."""

    def __init__(
        self,
        hosts: list[HostRef],
        *,
        groups: dict[str, list[str]] | None = None,
        tags: dict[str, dict[str, str]] | None = None,
        deployments: dict[str, list[str]] | None = None,
        files: dict[str, list[HostRef]] | None = None,
    ) -> None:
        self.hosts = hosts
        self.by_name = {h.name: h for h in hosts}
        self.groups = groups or {}
        self.tags = tags or {}
        self.deployments = deployments or {}
        self.files = files or {}
        self.calls: list[str] = []

    def all_hosts(self) -> Iterable[HostRef]:
        self.calls.append("all_hosts")
        return iter(self.hosts)

    def group_members(self, name: str) -> Iterable[HostRef]:
        if name not in self.groups:
            raise NotFound(f"no group named {name!r}", field="group")
        return [self.by_name[n] for n in self.groups[name]]

    def tagged_hosts(self, key: str, value: str) -> Iterable[HostRef]:
        return [h for h in self.hosts if self.tags.get(h.name, {}).get(key) == value]

    def deployment_members(self, name: str) -> Iterable[HostRef]:
        if name not in self.deployments:
            raise NotFound(f"no deployment named {name!r}", field="deployment")
        return [self.by_name[n] for n in self.deployments[name]]

    def read_file(self, path: str) -> Iterable[HostRef]:
        if path not in self.files:
            raise NotFound(f"no file {path!r}")
        return self.files[path]


def resolver() -> MemoryResolver:
    return MemoryResolver(
        _inventory(),
        groups={
            "web": [f"web{i:02d}" for i in range(1, 21)],
            "db": ["db1", "db2", "db10"],
            "canary": ["web01", "web02"],
            "empty": [],
        },
        tags={
            **{f"web{i:02d}": {"env": "prod" if i <= 10 else "dev"} for i in range(1, 21)},
            "db1": {"env": "prod"},
        },
        deployments={"shop": ["web05", "db2"], "gone": []},
        files={
            "/hosts.txt": [HostRef("10.9.9.9", "10.9.9.9", 22, "root"), HostRef("db1", "10.0.2.1")],
            "/empty.txt": [],
        },
    )


def names(text: str) -> list[str]:
    return evaluate(text, resolver()).names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web01", ["web01"]),
        ("web[01-03]", ["web01", "web02", "web03"]),
        ("web[03,01]", ["web01", "web03"]),
        ("web1*", [f"web{i}" for i in range(10, 20)]),
        ("db?", ["db1", "db2"]),
        ("group:db", ["db1", "db2", "db10"]),
        ("tag:env=prod&db*", ["db1"]),
        ("deployment:shop", ["db2", "web05"]),
        ("10.0.2.0/24", ["db1", "db2", "db10"]),
        ("10.0.2.10", ["db10"]),
        ("10.0.1.[1-2]", ["web01", "web02"]),
        ("fd00::/64", ["v6"]),
        ("fd00::5", ["v6"]),
        ("@/hosts.txt", ["10.9.9.9", "db1"]),
        ("group:web&tag:env=dev&!web[12-20]", ["web11"]),
        ("group:web!web[02-20]", ["web01"]),
        ("group:web!tag:env=prod!web[12-20]", ["web11"]),
        ("group:web!(tag:env=prod,web[12-20])", ["web11"]),
        ("(group:db,group:canary)&tag:env=prod", ["db1", "web01", "web02"]),
        ("db10,db2,db1,db2", ["db1", "db2", "db10"]),
        ("group:db,group:empty", ["db1", "db2", "db10"]),
        ("*!group:web!group:db", ["dns", "v6"]),
        ("root@web7.example.com", ["web7.example.com"]),
        ("10.0.0.5:2222,web01", ["10.0.0.5:2222", "web01"]),
    ],
)
def test_evaluate(text: str, expected: list[str]) -> None:
    assert names(text) == expected


def test_selection_is_in_natural_order() -> None:
    selection = evaluate("db10,web02,db2,web01,db1", resolver())
    assert selection.names == ["db1", "db2", "db10", "web01", "web02"]
    assert str(selection) == "db[1-2,10],web[01-02]"
    assert len(selection) == 5
    assert selection[0].name == "db1"
    assert [h.name for h in selection[-2:]] == ["web01", "web02"]
    assert HostRef("web01", "10.0.1.1", 22) in selection
    assert isinstance(selection, Selection)


def test_selection_keeps_inventory_details() -> None:
    (db1,) = evaluate("db1", resolver())
    assert db1 == HostRef("db1", "10.0.2.1", 2222, "postgres")


def test_direct_hosts() -> None:
    selection = evaluate("user@10.0.0.5:2222,[::1]:22,root@web7.example.com", resolver())
    assert list(selection) == [
        HostRef("10.0.0.5:2222", "10.0.0.5", 2222, "user"),
        HostRef("[::1]:22", "::1", 22, None),
        HostRef("web7.example.com", "web7.example.com", None, "root"),
    ]
    assert str(selection) == "10.0.0.5:2222,web7.example.com,[::1]:22"


def test_direct_host_of_the_inventory_keeps_its_address() -> None:
    (host,) = evaluate("root@db1", resolver())
    assert host == HostRef("db1", "10.0.2.1", 2222, "root")
    (host,) = evaluate("db1:2200", resolver())
    assert host == HostRef("db1", "10.0.2.1", 2200, "postgres")


@pytest.mark.parametrize(
    "text", ["root@web01,group:canary", "group:canary,root@web01", "group:canary&root@web01"]
)
def test_direct_selection_wins_over_plain_one(text: str) -> None:
    selection = evaluate(text, resolver())
    assert selection[0] == HostRef("web01", "10.0.1.1", 22, "root")


def test_first_direct_selection_wins() -> None:
    (host,) = evaluate("alice@web01,bob@web01", resolver())
    assert host.user == "alice"


def test_excluding_a_direct_host() -> None:
    assert names("group:canary!root@web01") == ["web02"]


def test_evaluate_takes_a_parsed_target() -> None:
    target = parse_target("group:db!db2")
    assert evaluate(target, resolver()).names == ["db1", "db10"]


def test_inventory_is_read_once() -> None:
    r = resolver()
    evaluate("web01,web[02-03],web1*,10.0.1.0/24,10.0.2.1,root@db1,db2:22", r)
    assert r.calls == ["all_hosts"]


def test_inventory_is_not_read_when_not_needed() -> None:
    r = resolver()
    evaluate("group:web&tag:env=prod", r)
    assert r.calls == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web99", "no host named web99 (a host outside the inventory is written USER@HOST"),
        ("web01,web99", "no host named web99"),
        ("group:web!web99", "no host named web99"),
        ("web[18-25]", "no hosts named web[21-25]"),
        ("web99,db[3-4]", "no hosts named db[3-4],web99"),
        # A node set none of whose names is a host: as written, among the others in order
        ("zz9,dx[0-29999],dx[0-29999],x[7,5]", "no hosts named dx[0-29999],x[7,5],zz9 ("),
        ("dx[1-1]", "no host named dx[1-1] ("),
        ("10.0.0.1", "no host has the address 10.0.0.1"),
        ("10.0.9.[1-2]", "no host has the addresses 10.0.9.[1-2]"),
        ("web99,10.0.0.1", "no host named web99; no host has the address 10.0.0.1"),
        ("group:empty", "target 'group:empty' matches no host"),
        ("deployment:gone", "target 'deployment:gone' matches no host"),
        ("@/empty.txt", "target '@/empty.txt' matches no host"),
        ("nothing*", "target 'nothing*' matches no host"),
        ("192.168.0.0/16", "target '192.168.0.0/16' matches no host"),
        (
            "group:empty,deployment:gone,tag:env=qa",
            "target 'group:empty,deployment:gone,tag:env=qa' matches no host; "
            "group:empty matches no host; deployment:gone matches no host; "
            "tag:env=qa matches no host",
        ),
        ("group:web&group:db", "target 'group:web&group:db' matches no host"),
        ("group:canary!web[01-02]", "target 'group:canary!web[01-02]' matches no host"),
    ],
)
def test_evaluate_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(text, resolver())
    assert info.value.field == "target"
    assert info.value.message.startswith(message)


def test_unmatched_parts_are_reported() -> None:
    selection = evaluate("group:db,group:empty,nothing*,tag:env=qa", resolver())
    assert selection.names == ["db1", "db2", "db10"]
    assert selection.unmatched == ("group:empty", "nothing*", "tag:env=qa")


def test_resolver_errors_pass_through() -> None:
    with pytest.raises(NotFound, match="no group named 'nope'"):
        evaluate("web01,group:nope", resolver())
    with pytest.raises(NotFound, match="no file"):
        evaluate("@/missing", resolver())


def test_evaluate_large_inventory() -> None:
    hosts = [
        HostRef(f"n{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(20000)
    ]
    r = MemoryResolver(hosts)
    selection = evaluate("n[00000-19999]!n[00100-19999]", r)
    assert str(selection) == "n[00000-00099]"
    assert len(evaluate("10.0.0.0/16", r)) == 20000


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_PLAIN = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
_USERS = st.from_regex(r"[a-z0-9_][a-z0-9_.@-]{0,6}\$?", fullmatch=True)


@st.composite
def _node_sets(draw: st.DrawFn) -> NodeSet:
    start = draw(st.integers(0, 50))
    width = draw(st.integers(1, 3))
    stop = start + draw(st.integers(0, 20))
    return NodeSet(
        f"{draw(_PLAIN)}[{str(start).zfill(width)}-{stop}]{draw(st.sampled_from(['', '.x']))}"
    )


@st.composite
def _networks(draw: st.DrawFn) -> AddressRef:
    address = draw(st.ip_addresses())
    prefix = draw(st.integers(0, address.max_prefixlen))
    return AddressRef(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@st.composite
def _directs(draw: st.DrawFn) -> Direct:
    host = draw(st.one_of(_PLAIN, st.ip_addresses().map(str)))
    user = draw(st.one_of(st.none(), _USERS))
    port = draw(st.integers(1, 65535)) if user is None else draw(st.none() | st.integers(1, 65535))
    return Direct(user, host, port)


_ATOMS: st.SearchStrategy[Target] = st.one_of(
    _PLAIN.map(Name),
    st.from_regex(r"[a-z0-9]{0,3}[*?][a-z0-9*]{0,3}", fullmatch=True).map(Name),
    _node_sets(),
    _PLAIN.map(GroupRef),
    st.builds(
        TagRef, st.from_regex(r"[a-z_][a-z0-9_.-]{0,5}", fullmatch=True), st.text(max_size=8)
    ),
    _PLAIN.map(DeploymentRef),
    _networks(),
    st.text(min_size=1, max_size=8).map(FileRef),
    _directs(),
)

_TARGETS: st.SearchStrategy[Target] = st.recursive(
    _ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Union(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Intersection(tuple(xs))),
        st.tuples(inner, inner).map(lambda lr: Difference(*lr)),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(_TARGETS)
def test_canonical_text_parses_back(target: Target) -> None:
    text = str(target)
    again = parse_target(text)
    assert again == target
    assert str(again) == text


_TARGET_ALPHABET = 'abw01:[]-,&!()@/.="*? \\'
_FRAGMENTS = st.sampled_from(
    [
        "web",
        "01",
        "[",
        "]",
        "1-3",
        ",",
        "&",
        "!",
        "(",
        ")",
        "group:",
        "tag:",
        "=",
        "@",
        ":",
        "22",
        "/",
        "10.0.0.1",
        "::",
        '"',
        " ",
        "deployment:",
        "*",
        "root@",
        "[::1]",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet=_TARGET_ALPHABET, max_size=30),
        st.lists(_FRAGMENTS, max_size=12).map("".join),
    )
)
def test_parse_raises_only_invalid_input(text: str) -> None:
    try:
        target = parse_target(text)
    except InvalidInput as exc:
        assert exc.field == "target"
        assert exc.column is not None
        assert 1 <= exc.column <= len(text) + 1
        return
    assert parse_target(str(target)) == target
    try:
        selection = evaluate(target, resolver())
    except (InvalidInput, NotFound):
        return
    assert len(set(selection.names)) == len(selection)


# A small world where every operator can be checked against Python's sets.
_WORLD_NAMES = [f"h{i}" for i in range(1, 9)]
_WORLD = MemoryResolver(
    [HostRef(n, f"10.0.0.{i}") for i, n in enumerate(_WORLD_NAMES, 1)],
    groups={"odd": ["h1", "h3", "h5", "h7"], "low": ["h1", "h2", "h3", "h4"], "none": []},
    tags={n: {"t": str(i % 3)} for i, n in enumerate(_WORLD_NAMES, 1)},
)
_WORLD_ATOMS: st.SearchStrategy[Target] = st.one_of(
    st.sampled_from(_WORLD_NAMES).map(Name),
    st.sampled_from(["h[1-3]", "h[2,4,6-8]", "h[5-8]"]).map(NodeSet),
    st.sampled_from(["odd", "low", "none"]).map(GroupRef),
    st.sampled_from(["0", "1", "2", "9"]).map(lambda v: TagRef("t", v)),
    st.sampled_from(["10.0.0.0/30", "10.0.0.4/30", "10.0.0.7"]).map(net),
    st.just(Name("h*")),
)
_WORLD_TARGETS: st.SearchStrategy[Target] = st.recursive(
    _WORLD_ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Union(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Intersection(tuple(xs))),
        st.tuples(inner, inner).map(lambda lr: Difference(*lr)),
    ),
    max_leaves=10,
)


def _model(target: Target) -> set[str]:
    """The set a target stands for, computed the obvious way."""
    if isinstance(target, Union):
        return set().union(*(_model(t) for t in target.items))
    if isinstance(target, Intersection):
        return set.intersection(*(_model(t) for t in target.items))
    if isinstance(target, Difference):
        return _model(target.left) - _model(target.right)
    if isinstance(target, NodeSet):
        return set(target.names)
    if isinstance(target, Name):
        return set(_WORLD_NAMES) if target.pattern == "h*" else {target.pattern}
    if isinstance(target, GroupRef):
        return set(_WORLD.groups[target.name])
    if isinstance(target, TagRef):
        return {n for n in _WORLD_NAMES if _WORLD.tags[n]["t"] == target.value}
    assert isinstance(target, AddressRef)
    return {h.name for h in _WORLD.hosts if ipaddress.ip_address(h.address) in target.network}


@settings(max_examples=200, deadline=None)
@given(_WORLD_TARGETS)
def test_evaluate_matches_the_set_model(target: Target) -> None:
    expected = _model(target)
    if not expected:
        with pytest.raises(InvalidInput, match="matches no host"):
            evaluate(target, _WORLD)
        return
    selection = evaluate(target, _WORLD)
    assert selection.names == sorted(expected, key=natural_key)
    assert len(set(selection.names)) == len(selection)
    assert evaluate(str(target), _WORLD) == selection
