"""Reading pssh hosts files and Ansible INI inventories."""

from __future__ import annotations

import ipaddress
from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisor.core import hostfiles
from provisor.core.errors import InvalidInput, ParseErrors
from provisor.core.hostfiles import (
    MAX_HOSTS,
    GroupEntry,
    HostEntry,
    Inventory,
    detect_format,
    ipv6_host_name,
    parse_ansible_ini,
    parse_inventory,
    parse_pssh_hosts,
)


def ini(text: str) -> Inventory:
    return parse_ansible_ini(dedent(text), source="inv.ini")


def errors_of(parse: object, text: str) -> list[tuple[int, int | None, str]]:
    """(line, column, message) of every error; checks each is located in the source."""
    assert callable(parse)
    with pytest.raises(ParseErrors) as info:
        parse(dedent(text), source="f")
    assert info.value.source == "f"
    result: list[tuple[int, int | None, str]] = []
    for item in info.value.errors:
        assert isinstance(item, InvalidInput)
        assert item.source == "f"
        assert item.line is not None
        result.append((item.line, item.column, item.message))
    return result


def lines_of(parse: object, text: str) -> list[int]:
    return [line for line, _, _ in errors_of(parse, text)]


def hosts_by_name(inventory: Inventory) -> dict[str, HostEntry]:
    return {h.name: h for h in inventory.hosts}


# ---------------------------------------------------------------------------
# pssh
# ---------------------------------------------------------------------------

PSSH = """\
# production web tier
web1.example.com
root@web2.example.com:2222   # the odd one

   10.0.0.5   
deploy@10.0.0.6:22
[::1]:2200
fe80::1
admin@[2001:db8::5]
db1 postgres
#db2
"""  # noqa: W291


def test_pssh_good_file() -> None:
    inventory = parse_pssh_hosts(PSSH)
    assert inventory.format == "pssh"
    assert inventory.groups == ()
    got = [(h.name, h.address, h.port, h.user, h.line) for h in inventory.hosts]
    assert got == [
        ("web1.example.com", "web1.example.com", None, None, 2),
        ("web2.example.com", "web2.example.com", 2222, "root", 3),
        ("10.0.0.5", "10.0.0.5", None, None, 5),
        ("10.0.0.6", "10.0.0.6", 22, "deploy", 6),
        ("0--1", "::1", 2200, None, 7),
        ("fe80--1", "fe80::1", None, None, 8),
        ("2001-db8--5", "2001:db8::5", None, "admin", 9),
        ("db1", "db1", None, "postgres", 10),
    ]
    assert all(h.groups == () and dict(h.vars) == {} for h in inventory.hosts)


def test_pssh_line_endings_and_bom() -> None:
    inventory = parse_pssh_hosts("\ufeffweb1\r\n\r\nweb2\r\n")
    assert [(h.name, h.line) for h in inventory.hosts] == [("web1", 1), ("web2", 3)]
    assert parse_pssh_hosts("").hosts == ()
    assert parse_pssh_hosts("# nothing\n\n").hosts == ()


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("::1", "0--1"),
        ("::", "0--0"),
        ("fe80::", "fe80--0"),
        ("2001:db8::5", "2001-db8--5"),
        ("2001:DB8:0:0:0:0:0:5", "2001-db8--5"),
        ("fe80::1%eth0", "fe80--1.eth0"),
    ],
)
def test_ipv6_host_name(address: str, name: str) -> None:
    assert ipv6_host_name(address) == name


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("web1:99999", 6, "invalid port 99999"),
        ("web1:0", 6, "invalid port 0"),
        ("web1:ssh", 6, "invalid port 'ssh'"),
        ("web1:", 6, "invalid port ''"),
        ("web_1", 1, "invalid address 'web_1'"),
        ("-web", 1, "invalid address"),
        ("@web1", 1, "expected a user before '@'"),
        ("root@", 6, "expected a host"),
        ("web1 bad!user", 6, "invalid user 'bad!user'"),
        ("bad!user@web1", 1, "invalid user 'bad!user'"),
        ("[web]", 1, "brackets are only for IPv6"),
        ("[::1]x", 6, "after ']'"),
        ("[::1]:99999", 7, "invalid port"),
        ("::zz", 1, "not an IPv6 address"),
        ("web1 root extra", 11, "unexpected 'extra'"),
        ("root@web1 admin", 11, "user given twice"),
    ],
)
def test_pssh_errors(line: str, column: int, words: str) -> None:
    (error,) = errors_of(parse_pssh_hosts, f"# header\n{line}\n")
    assert error[0] == 2
    assert error[1] == column
    assert words in error[2]


def test_pssh_duplicate_names_the_first_line() -> None:
    errors = errors_of(parse_pssh_hosts, "web1\nweb2\n\nroot@web1:2222\nWEB2\n")
    assert [(line, msg) for line, _, msg in errors] == [
        (4, "duplicate host 'web1': already defined on line 1"),
        (5, "duplicate host 'WEB2': already defined on line 2"),
    ]


def test_pssh_reports_all_errors_and_returns_nothing() -> None:
    text = "web1:99999\nok1\nweb_2\nok2\n[x]\nok1\n"
    with pytest.raises(ParseErrors) as info:
        parse_pssh_hosts(text, source="hosts.txt")
    assert [e.line for e in info.value.errors] == [1, 3, 5, 6]
    assert str(info.value).splitlines()[0] == "hosts.txt:1:6: invalid port 99999: must be 1-65535"
    assert info.value.message.startswith("4 error(s)")


# ---------------------------------------------------------------------------
# Ansible INI
# ---------------------------------------------------------------------------

INVENTORY = """\
# hosts before any section belong to no group
lonely ansible_host=192.0.2.10

[web]
web[01:03].example.com ansible_user=deploy
web04 ansible_host=10.0.0.4 ansible_port=2222 role="front end"  # a comment
web05:2200 secret=pa#ss

[db]
db-[a:c] ansible_ssh_port=5022 ansible_ssh_host=db.internal
web01.example.com tier=both

[prod:children]
web
db

[prod:vars]
env=prod
ansible_user=ops
ansible_port=22

[web:vars]
env=web-env
motd = "welcome to web"   # a trailing comment
proxy=-o ProxyCommand="ssh -W %h:%p bastion"

[all:vars]
ntp=ntp.example.com

[dr:children]
ghost

[v6]
[2001:db8::7]:2200
fe80::9

[all]
in-all
"""


def test_ansible_good_file() -> None:
    inventory = parse_ansible_ini(INVENTORY)
    assert inventory.format == "ansible"
    assert inventory.groups == (
        GroupEntry("web", "prod", 4),
        GroupEntry("db", "prod", 9),
        GroupEntry("prod", None, 13),
        GroupEntry("dr", None, 30),
        GroupEntry("ghost", "dr", 31),  # only named as a child: defined, empty
        GroupEntry("v6", None, 33),
    )
    hosts = hosts_by_name(inventory)
    assert list(hosts) == [
        "lonely",
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "web04",
        "web05",
        "db-a",
        "db-b",
        "db-c",
        "2001-db8--7",
        "fe80--9",
        "in-all",
    ]
    web_vars = {
        "env": "web-env",
        "motd": "welcome to web",
        "proxy": '-o ProxyCommand="ssh -W %h:%p bastion"',
        "ntp": "ntp.example.com",
    }
    assert hosts["lonely"] == HostEntry(
        "lonely", "192.0.2.10", None, None, (), {"ntp": "ntp.example.com"}, 2
    )
    # a host in two groups: one entry, all groups, vars merged, line of first definition
    assert hosts["web01.example.com"] == HostEntry(
        "web01.example.com",
        "web01.example.com",
        22,
        "deploy",
        ("web", "db"),
        {**web_vars, "tier": "both"},
        5,
    )
    assert hosts["web04"] == HostEntry(
        "web04", "10.0.0.4", 2222, "ops", ("web",), {**web_vars, "role": "front end"}, 6
    )
    assert hosts["web05"].port == 2200
    assert hosts["web05"].vars["secret"] == "pa#ss"
    # legacy ansible_ssh_* names; group vars fill what the host lacks
    assert hosts["db-b"] == HostEntry(
        "db-b", "db.internal", 5022, "ops", ("db",), {"env": "prod", "ntp": "ntp.example.com"}, 10
    )
    assert hosts["2001-db8--7"].address == "2001:db8::7"
    assert hosts["2001-db8--7"].port == 2200
    assert hosts["fe80--9"].address == "fe80::9"
    assert hosts["in-all"].groups == ()


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("web[01:03]", ["web01", "web02", "web03"]),
        ("web[8:10]", ["web8", "web9", "web10"]),
        ("web[08:10]", ["web08", "web09", "web10"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[0:10:5]", ["n0", "n5", "n10"]),
        ("x[a:e:2].lab", ["xa.lab", "xc.lab", "xe.lab"]),
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
        ("[1:2].example.com", ["1.example.com", "2.example.com"]),
        ("10.0.0.[1:3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    ],
)
def test_ansible_ranges(pattern: str, names: list[str]) -> None:
    inventory = ini(f"[g]\n{pattern}\n")
    assert [h.name for h in inventory.hosts] == names
    assert all(h.address == h.name for h in inventory.hosts)


def test_ansible_group_var_precedence() -> None:
    inventory = ini(
        """\
        [all:vars]
        a=all
        b=all
        c=all
        [ungrouped:vars]
        u=ungrouped
        [parent:children]
        child
        [parent:vars]
        b=parent
        c=parent
        [child:vars]
        c=child
        [other:vars]
        c=other
        [child]
        h1 a=host
        [other]
        h1
        h2
        [all]
        h3
        """
    )
    hosts = hosts_by_name(inventory)
    # host > deeper group > shallower group (by name at equal depth) > all
    assert dict(hosts["h1"].vars) == {"a": "host", "b": "parent", "c": "child"}
    assert dict(hosts["h2"].vars) == {"a": "all", "b": "all", "c": "other"}
    assert dict(hosts["h3"].vars) == {"a": "all", "b": "all", "c": "all", "u": "ungrouped"}


def test_ansible_connection_vars_from_groups_only_when_host_has_none() -> None:
    inventory = ini(
        """\
        [g]
        a ansible_host=10.0.0.1 ansible_port=2222 ansible_user=alice
        b:2200
        c
        [g:vars]
        ansible_host=10.9.9.9
        ansible_port=22
        ansible_user=ops
        """
    )
    got = {h.name: (h.address, h.port, h.user, dict(h.vars)) for h in inventory.hosts}
    assert got == {
        "a": ("10.0.0.1", 2222, "alice", {}),
        "b": ("10.9.9.9", 2200, "ops", {}),
        "c": ("10.9.9.9", 22, "ops", {}),
    }


def test_ansible_same_values_twice_are_fine() -> None:
    inventory = ini(
        """\
        [a]
        h x=1 ansible_port=22
        [b]
        h x=1 ansible_ssh_port=22
        h:22
        """
    )
    (host,) = inventory.hosts
    assert (host.groups, host.port, dict(host.vars), host.line) == (("a", "b"), 22, {"x": "1"}, 2)


def test_ansible_children_defined_later_and_all_children() -> None:
    inventory = ini(
        """\
        [all:children]
        top
        [top:children]
        mid
        [mid]
        h1
        """
    )
    assert inventory.groups == (
        GroupEntry("top", None, 2),
        GroupEntry("mid", "top", 4),
    )
    assert inventory.hosts[0].groups == ("mid",)


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("[g]\nweb1:99999\n", 2, 6, "invalid port 99999"),
        ("[g]\nweb1 ansible_port=99999\n", 2, 6, "invalid port"),
        ("[g]\nweb1 foo\n", 2, 6, "expected key=value after the host, found 'foo'"),
        ("[g]\nweb1 =1\n", 2, 6, "expected a variable name"),
        ("[g]\nweb1 bad!key=1\n", 2, 6, "invalid tag or fact key"),
        ("[g]\nweb1 a=1 a=2\n", 2, 10, "a given twice with different values"),
        ("[g]\nweb1 ansible_host=bad_address\n", 2, 6, "invalid address 'bad_address'"),
        ("[g]\nweb1 ansible_user='a b'\n", 2, 6, "invalid user"),
        ('[g]\nweb1 x="open\n', 2, 8, 'unterminated " quote'),
        ("[g]\nweb_1\n", 2, 1, "no ansible_host and its name is not an IP address"),
        ("[g]\nweb!\n", 2, 1, "invalid name 'web!'"),
        ("[g]\nweb[01:]\n", 2, 4, "missing the end"),
        ("[g]\nweb[:5]\n", 2, 4, "missing the start"),
        ("[g]\nweb[01:100]\n", 2, 4, "same number of digits"),
        ("[g]\nweb[5:1]\n", 2, 4, "the start is after the end"),
        ("[g]\nweb[1:5:0]\n", 2, 4, "stride must be a positive number"),
        ("[g]\nweb[a:zz]\n", 2, 4, "single letters"),
        ("[g]\nweb[1-5]\n", 2, 4, "malformed host range [1-5]"),
        ("[g]\nweb[1:5\n", 2, 4, "unclosed '['"),
        ("[g]\nn[0:100000]\n", 2, 2, "more than 100,000 hosts"),
        ("[g]\nn[0:99999999999999999999999]\n", 2, 2, "more than 100,000 hosts"),
        ("[g]\nn[0:" + "9" * 5000 + "]\n", 2, 2, "numbers of at most 1000 digits"),
        ("[g]\nweb[1:3:\u00b2]\n", 2, 4, "stride must be a positive number"),
        ("[g]\nn[0:999][0:999]\n", 2, 1, "more than 100,000 hosts"),
        ("[g]\n[web]x\n", 2, 1, "malformed host range"),
        ("[x:foo]\nignored line\n", 1, 3, "unknown section suffix ':foo'"),
        ("[bad name]\n", 1, 2, "invalid name 'bad name'"),
        ("[web\n", 1, 1, "unclosed '['"),
        ("[web] extra\n", 1, 6, "unexpected text after the section header '[web]'"),
        ("[w]x]\n", 1, 1, "malformed section header"),
        ("[a b]\nh1\n", 1, 2, "invalid name"),
        ("[g:vars]\nnovalue\n", 2, 1, "expected key=value, found 'novalue'"),
        ("[g:vars]\n  =1\n", 2, 3, "expected a variable name"),
        ("[g:vars]\nbad key=1\n", 2, 1, "invalid tag or fact key"),
        ("[g:vars]\nansible_port=x\n", 2, 14, "invalid port 'x'"),
        ("[g:vars]\na=1\na = 2\n", 3, 5, "a is '1' on line 2 but '2' here"),
        ("[g:children]\nc d\n", 2, 3, "one group per line"),
        ("[g:children]\nbad!\n", 2, 1, "invalid name"),
        ("[g:children]\ng\n", 2, 1, "cannot be its own child"),
        ("[g:children]\nall\n", 2, 1, "special group 'all' cannot be a child"),
        ("[ungrouped:children]\ng\n", 1, 2, "'ungrouped' cannot have child groups"),
    ],
)
def test_ansible_errors(text: str, line: int, column: int, words: str) -> None:
    (error,) = errors_of(parse_ansible_ini, text)
    assert words in error[2]
    assert (error[0], error[1]) == (line, column), error[2]


def test_ansible_two_parents_is_an_error_naming_the_tree() -> None:
    errors = errors_of(
        parse_ansible_ini,
        """\
        [a:children]
        shared
        [b:children]
        shared
        [a:children]
        shared
        """,
    )
    assert errors == [
        (
            4,
            1,
            "group 'shared' already has parent 'a' (line 2); provisor groups form a tree, "
            "so a group has at most one parent",
        )
    ]


def test_ansible_cycles_are_errors() -> None:
    errors = errors_of(
        parse_ansible_ini,
        """\
        [a:children]
        b
        [b:children]
        c
        [c:children]
        a
        """,
    )
    cycle = "group cycle: a -> c -> b -> a (each a child of the next)"
    assert errors == [(6, None, f"{cycle}; provisor groups form a tree")]


def test_ansible_conflicting_host_vars_name_both_lines() -> None:
    errors = errors_of(
        parse_ansible_ini,
        """\
        [a]
        web[1:3] env=prod
        [b]
        web[2:4] env=dev other=1
        """,
    )
    message = "host 'web2': env is 'prod' on line 2 but 'dev' here; a host's variables must agree"
    assert errors == [(4, 10, message)]


def test_ansible_reports_all_errors() -> None:
    text = """\
    ok1
    [g]
    web1:99999
    ok2 a=1
    web2 foo bar=1 baz
    web[01:]
    [x:foo]
    whatever here
    [h:children]
    g
    [i:children]
    g
    [g:vars]
    novalue
    [ok]
    ok2 a=2
    """
    lines = lines_of(parse_ansible_ini, text)
    assert lines == [3, 5, 5, 6, 7, 12, 14, 16]


def test_too_many_hosts_in_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_HOSTS == 100_000
    monkeypatch.setattr(hostfiles, "MAX_HOSTS", 20)
    text = "[a]\nn[1:10]\n[b]\nm[1:10]\nn1\n[c]\nlast\nlast2\n"
    assert lines_of(parse_ansible_ini, text) == [7]
    text = "\n".join(f"h{i}" for i in range(25))
    assert lines_of(parse_pssh_hosts, text) == [21]


# ---------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web1\nroot@web2:22\n", "pssh"),
        ("[::1]:22\n[::1]\nfe80::1\n", "pssh"),
        ("web1 root\n", "pssh"),
        ("# [web]\nweb1\n", "pssh"),
        ("", "pssh"),
        ("[web]\nweb1\n", "ansible"),
        ("  [web:vars]  # comment\n", "ansible"),
        ("web1 ansible_host=10.0.0.1\n", "ansible"),
        ("web[01:10]\n", "ansible"),
    ],
)
def test_detect_format(text: str, expected: str) -> None:
    assert detect_format(text) == expected


def test_parse_inventory() -> None:
    assert parse_inventory("[g]\nweb1\n").format == "ansible"
    assert parse_inventory("web1\n").format == "pssh"
    assert parse_inventory("web1\n", format="ansible").format == "ansible"
    with pytest.raises(ParseErrors) as info:
        parse_inventory("[g]\nweb1\n", source="x.txt", format="pssh")
    assert info.value.errors[0].line == 1
    assert info.value.source == "x.txt"
    with pytest.raises(InvalidInput):
        parse_inventory("web1", format="yaml")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_LABEL = st.builds(
    lambda first, middle, last: first + (middle + last if middle else ""),
    st.sampled_from("abcxyz019"),
    st.text(alphabet="abz09-", max_size=5),
    st.sampled_from("a7q"),
)
_DNS = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)


@st.composite
def _host(draw: st.DrawFn) -> tuple[str, str, str, int | None, str | None]:
    """(how the host is written, expected name, expected address, port, user)."""
    kind = draw(st.sampled_from(["dns", "v4", "v6"]))
    port = draw(st.none() | st.integers(1, 65535))
    user = draw(st.none() | st.sampled_from(["root", "deploy", "a.b-c_d", "svc$"]))
    if kind == "dns":
        name = draw(_DNS)
        if _is_ip(name):
            kind = "v4"
    if kind == "v4":
        name = str(draw(st.ip_addresses(v=4)))
    if kind == "v6":
        address = str(draw(st.ip_addresses(v=6)))
        written = f"[{address}]" if port is not None or draw(st.booleans()) else address
        name = ipv6_host_name(address)
    else:
        address, written = name, name
    if port is not None:
        written += f":{port}"
    if user is not None:
        legacy = draw(st.booleans())  # pssh's `host user` form
        written = f"{written} {user}" if legacy else f"{user}@{written}"
    return written, name, address, port, user


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_host(), max_size=12, unique_by=lambda h: h[1].lower()),
    st.lists(st.sampled_from(["", "# comment", "   ", "\t# x"]), max_size=12),
    st.booleans(),
)
def test_pssh_round_trip(
    hosts: list[tuple[str, str, str, int | None, str | None]],
    fillers: list[str],
    trailing_comments: bool,
) -> None:
    lines: list[str] = []
    expected: list[tuple[str, str, int | None, str | None, int]] = []
    for i, (written, name, address, port, user) in enumerate(hosts):
        if i < len(fillers):
            lines.append(fillers[i])
        lines.append(f"  {written}  # host {i}" if trailing_comments else written)
        expected.append((name, address, port, user, len(lines)))
    inventory = parse_pssh_hosts("\n".join(lines) + "\n")
    assert [(h.name, h.address, h.port, h.user, h.line) for h in inventory.hosts] == expected
    assert parse_inventory("\n".join(lines)).format == "pssh"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(_DNS, st.lists(st.sampled_from(["web", "db", "prod"]), unique=True, max_size=3)),
        max_size=8,
        unique_by=lambda h: h[0].lower(),
    ).filter(lambda hosts: not any(_is_ip(name) for name, _ in hosts))
)
def test_ansible_group_membership_round_trip(hosts: list[tuple[str, list[str]]]) -> None:
    sections: dict[str, list[str]] = {"": []}
    for name, groups in hosts:
        for group in groups or [""]:
            sections.setdefault(group, []).append(name)
    text = "\n".join(
        (f"[{group}]\n" if group else "") + "\n".join(names) for group, names in sections.items()
    )
    inventory = parse_ansible_ini(text)
    got = {h.name: set(h.groups) for h in inventory.hosts}
    assert got == {name: set(groups) for name, groups in hosts}


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                ["[g]", "[g:children]", "[g:vars]", "[all:vars]", "web[01:03]", "a=1", "x",
                 "'q", "[::1]:22", "h:99999", "#c", " ", "\n", "ansible_port=2", "root@h"]
            ),
            max_size=20,
        ).map("".join),
    )
)  # fmt: skip
def test_parsers_raise_only_parse_errors(text: str) -> None:
    for parse in (parse_pssh_hosts, parse_ansible_ini, parse_inventory):
        try:
            parse(text)
        except ParseErrors as exc:
            assert exc.errors
            assert all(e.line is not None and e.line >= 1 for e in exc.errors)
