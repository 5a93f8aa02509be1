"""The smart-group rule language: parsing, evaluation, errors, round trips; and the facts
it reads (`core.facts`): dotted names nested, conflicts refused, older flat keys read."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from provisor.core.errors import InvalidInput
from provisor.core.facts import (
    apply_changes,
    drop,
    fact_path,
    lossless_value,
    nest,
    readable,
    typed_value,
)
from provisor.core.rules import (
    FIELDS,
    MAX_DEPTH,
    MAX_RULE_LENGTH,
    And,
    Compare,
    Expr,
    Field,
    Not,
    Or,
    Regex,
    Rule,
    Truthy,
    Value,
    parse_rule,
)

HOST: dict[str, Any] = {
    "name": "web01",
    "address": "10.0.0.5",
    "port": 22,
    "user": None,
    "state": "active",
    "facts": {
        "os": "debian",
        "version": "12",
        "cpu": {"count": 8, "model": "EPYC"},
        "memory_gb": 31.5,
        "kernel": "6.1.0",
        "virtual": False,
        "empty": "",
        "zero": 0,
        "disks": ["sda", "sdb"],
        "ports": [22, 80],
        "mounts": {"/": {}, "/var": {}},
        "a.b": "dotted",
        "nothing": None,
    },
    "tags": {"env": "prod", "role": "web", "my-key": "x", "a.b": "y", "count": "7"},
}


def match(text: str, host: dict[str, Any] | None = None) -> bool:
    return parse_rule(text).matches(HOST if host is None else host)


def error(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_rule(text)
    assert info.value.field == "rule"
    return info.value


# ---------------------------------------------------------------------------
# Operators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ==, !=
        ('facts.os == "debian"', True),
        ('facts.os == "Debian"', False),
        ("port == 22", True),
        ("port == 22.0", True),
        ('port == "22"', False),
        ('facts.version == "12"', True),
        ("facts.version == 12", False),
        ("facts.virtual == false", True),
        ("facts.zero == false", False),
        ("facts.virtual == 0", False),
        ("user == null", True),
        ("facts.nothing == null", True),
        ('facts.disks == ["sda", "sdb"]', True),
        ('facts.disks == ["sdb", "sda"]', False),
        ('facts.os != "debian"', False),
        ('facts.os != "ubuntu"', True),
        ("user != null", False),
        # ordering
        ("facts.cpu.count >= 8", True),
        ("facts.cpu.count > 8", False),
        ("facts.cpu.count < 8.5", True),
        ("facts.cpu.count <= 7", False),
        ("facts.memory_gb > 31", True),
        ("port > -1", True),
        ('facts.os < "fedora"', True),
        ('facts.os >= "fedora"', False),
        ("facts.cpu.count > 1e0", True),
        # in / not in
        ('tags.role in ["web", "api"]', True),
        ('tags.role in ["db"]', False),
        ("tags.role in []", False),
        ('tags.role not in ["web", "api"]', False),
        ('tags.role not in ["db"]', True),
        ("port in [22, 2222]", True),
        ("user in [null]", True),
        # =~
        ('name =~ "^web[0-9]+$"', True),
        ('name =~ "^db"', False),
        ('name =~ "eb0"', True),
        ('address =~ "^10\\\\."', True),
        ('address =~ "^10\\."', True),
        ('name =~ "^web\\d+$"', True),
        ('port =~ "22"', False),
        # contains
        ('name contains "eb"', True),
        ('name contains "db"', False),
        ('facts.disks contains "sdb"', True),
        ('facts.disks contains "sdc"', False),
        ("facts.ports contains 80", True),
        ("facts.ports contains 80.0", True),
        ('facts.ports contains "80"', False),
        ('facts.mounts contains "/var"', True),
        ('facts.mounts contains "/home"', False),
        ("port contains 2", False),
        # truthy
        ("facts.kernel", True),
        ("facts.virtual", False),
        ("facts.empty", False),
        ("facts.zero", False),
        ("facts.nothing", False),
        ("facts.missing", False),
        ("user", False),
        ("name", True),
        ("tags.env", True),
        ("tags.owner", False),
        # keys written in brackets
        ('tags["my-key"] == "x"', True),
        ('tags["a.b"] == "y"', True),
        ('facts["a.b"] == "dotted"', True),
        ('facts["cpu"].count == 8', True),
        ("facts.a.b", False),
        # and / or / not
        ('facts.os == "debian" and tags.env == "prod"', True),
        ('facts.os == "debian" and tags.env == "dev"', False),
        ('facts.os == "arch" or tags.env == "prod"', True),
        ('facts.os == "arch" or tags.env == "dev"', False),
        ('not facts.os == "arch"', True),
        ("not facts.kernel", False),
        ('tags.role in ["web", "api"] and not (state == "retired")', True),
        ('tags.env != "prod" or address =~ "^10\\\\."', True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert match(text) is expected


def test_keywords_are_case_insensitive_fields_are_not() -> None:
    assert match('NOT facts.os == "arch" AND tags.env In ["prod"] Or port == TRUE')
    assert match("facts.virtual == FALSE and user == Null")
    assert error('Name == "x"').column == 1


def test_keys_keep_their_case_and_may_be_keywords() -> None:
    rule = parse_rule('tags.in == "x" and facts.AND.Or == 1')
    assert rule.fields() == {"tags.in", "facts.AND.Or"}
    assert rule.matches({"tags": {"in": "x"}, "facts": {"AND": {"Or": 1}}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # not > and > or
        ('tags.env == "dev" and facts.os == "debian" or name == "web01"', True),
        ('name == "web01" or tags.env == "dev" and facts.os == "arch"', True),
        ('(name == "web01" or tags.env == "dev") and facts.os == "arch"', False),
        ('not tags.env == "dev" and facts.os == "arch"', False),
        ('not (tags.env == "dev" and facts.os == "arch")', True),
        ('not tags.env == "prod" or name == "web01"', True),
        ("not not facts.kernel", True),
    ],
)
def test_precedence(text: str, expected: bool) -> None:
    assert match(text) is expected


def test_precedence_shapes_the_tree() -> None:
    a, b, c = (Compare(Field("port"), "==", n) for n in (1, 2, 3))
    assert parse_rule("port == 1 or port == 2 and port == 3").expr == Or((a, And((b, c))))
    assert parse_rule("(port == 1 or port == 2) and port == 3").expr == And((Or((a, b)), c))
    assert parse_rule("not port == 1 and port == 2").expr == And((Not(a), b))
    assert parse_rule("port == 1 and port == 2 and port == 3").expr == And((a, b, c))


# ---------------------------------------------------------------------------
# Missing values and mismatched types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("facts.missing == null", True),
        ('facts.missing == "x"', False),
        ('facts.missing != "x"', True),
        ("facts.missing < 1", False),
        ("facts.missing >= 1", False),
        ('facts.missing >= ""', False),
        ('facts.missing in ["a"]', False),
        ('facts.missing not in ["a"]', True),
        ('facts.missing =~ ".*"', False),
        ('facts.missing contains "a"', False),
        ("facts.os.deeper == null", True),  # a path through a string is missing
        ("facts.disks.first == null", True),
        ('tags.owner != "bob"', True),
        # string fact vs number literal, number vs string: false, never an error
        ("facts.version > 1", False),
        ("facts.version < 100", False),
        ('port > "1"', False),
        ('facts.disks < "z"', False),
        ("facts.virtual < 1", False),  # booleans are not numbers
        ("facts.cpu > 1", False),
    ],
)
def test_missing_and_mismatched(text: str, expected: bool) -> None:
    assert match(text) is expected


def test_missing_top_level_and_odd_shapes() -> None:
    assert parse_rule('name == "x" or tags.env == "prod"').matches({}) is False
    assert parse_rule("name == null and port == null").matches({}) is True
    odd = {"facts": "not a dict", "tags": ["env"], "port": "22", "name": 5}
    assert parse_rule("facts.os == null and tags.env == null").matches(odd) is True
    assert parse_rule('port > 1 or name =~ "5" or name contains "5"').matches(odd) is False


def test_fields() -> None:
    rule = parse_rule('facts.cpu.count >= 8 and (tags["my-key"] or name =~ "x") and not port')
    assert rule.fields() == {"facts.cpu.count", 'tags["my-key"]', "name", "port"}


# ---------------------------------------------------------------------------
# Canonical text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("facts.os=='debian'", 'facts.os == "debian"'),
        ("NOT (port == 1)", "not port == 1"),
        ("not (port == 1 and port == 2)", "not (port == 1 and port == 2)"),
        ("(port == 1 and port == 2) and port == 3", "(port == 1 and port == 2) and port == 3"),
        ("port == 1 or (port == 2 and port == 3)", "port == 1 or port == 2 and port == 3"),
        (
            "tags['my-key'] in [1,2.5,'a',[true,null]]",
            'tags["my-key"] in [1, 2.5, "a", [true, null]]',
        ),
        ('facts["cpu"]["count"] > 1e3', "facts.cpu.count > 1000.0"),
        ("name == 'a\"b\\\\'", 'name == "a\\"b\\\\"'),
        ('name == "tab\\there"', 'name == "tab\\there"'),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    rule = parse_rule(text)
    assert str(rule) == canonical
    assert parse_rule(canonical) == rule


def test_string_escapes() -> None:
    cmp = parse_rule(r'name == "a\"b\'c\\d\ne\tf\qg"').expr
    assert isinstance(cmp, Compare)
    assert cmp.value == "a\"b'c\\d\ne\tf\\qg"


def test_ast_constructors_refuse_what_cannot_round_trip() -> None:
    with pytest.raises(InvalidInput):
        Field("bogus")
    with pytest.raises(InvalidInput):
        Field("tags", ("bad key",))
    with pytest.raises(InvalidInput):
        Field("facts")
    with pytest.raises(InvalidInput):
        Compare(Field("port"), "<", [1])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Compare(Field("port"), "==", float("inf"))
    with pytest.raises(InvalidInput):
        Compare(Field("port"), "in", 1)
    with pytest.raises(InvalidInput):
        Regex(Field("name"), "(")
    with pytest.raises(InvalidInput):
        And((Truthy(Field("name")),))


# ---------------------------------------------------------------------------
# Errors and their positions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ('name == "web', 9, "unterminated string"),
        ("name == 'web\\'", 9, "unterminated string"),
        ("name ==", 8, "expected a value after '==', found end of rule"),
        ("name == and port == 1", 9, "expected a value after '==', found 'and'"),
        ('name == "a" and', 16, "expected a field"),
        ('foo == "x"', 1, "unknown field 'foo'"),
        ("port == 1 and bogus.x == 1", 15, "unknown field 'bogus'"),
        ('name =~ "web[0-"', 13, "invalid regular expression"),
        ('port == 1 or name =~ "("', 23, "invalid regular expression"),
        ("name =~ 5", 9, "expected a quoted pattern after '=~', found number 5"),
        ('(name == "a"', 13, "expected ')' to close the '(' at column 1, found end of rule"),
        ('((name == "a")', 15, "expected ')' to close the '(' at column 1"),
        ('name == "a")', 12, "found ')'"),
        ('name == "a" port == 1', 13, "expected 'and', 'or' or end of rule, found 'port'"),
        ('name == "a" "b"', 13, 'found string "b"'),
        ("", 1, "expected a field"),
        ("   ", 4, "found end of rule"),
        ("()", 2, "expected a field"),
        ("port in 22", 9, "expected a list [...] after 'in', found number 22"),
        ("port not in 22", 13, "expected a list [...] after 'not in'"),
        ("port not 22", 10, "expected 'in' after 'not', found number 22"),
        ("port in [1, ]", 13, "expected a value after ','"),
        ("port in [1 2]", 12, "expected ']' to close the '[' at column 9, found number 2"),
        ("port < [1]", 8, "'<' compares numbers or strings, found a list"),
        ("port >= true", 9, "found true"),
        ("port < null", 8, "found null"),
        ('name = "x"', 6, "use '=='"),
        ("name == 1 & port == 2", 11, "unexpected character '&'"),
        ("tags.my-key", 8, "in brackets"),
        ("tags.a.b == 1", 7, "tag keys are not nested"),
        ('tags["bad key"] == 1', 6, "invalid tag or fact key"),
        ("tags." + "k" * 64, 6, "invalid tag or fact key"),
        ('facts[""] == 1', 7, "cannot be empty"),
        ("facts.0 == 1", 7, "expected a key after '.', found number 0"),
        ("facts == 1", 7, "expected '.' or '[' and a key after 'facts'"),
        ("facts[1] == 1", 7, "expected a quoted key after '['"),
        ('facts["a" == 1', 11, "expected ']' after the key"),
        ("port == 1e999", 9, "out of range"),
    ],
)
def test_error_positions(text: str, column: int, words: str) -> None:
    exc = error(text)
    assert words in exc.message
    assert exc.column == column, exc.message


def test_limits() -> None:
    exc = error("name == " + '"' + "x" * MAX_RULE_LENGTH + '"')
    assert "too long" in exc.message
    assert exc.column == MAX_RULE_LENGTH + 1
    deep = "(" * (MAX_DEPTH + 1) + "port == 1" + ")" * (MAX_DEPTH + 1)
    exc = error(deep)
    assert "nested too deeply" in exc.message
    assert exc.column == MAX_DEPTH + 1
    exc = error("not " * (MAX_DEPTH + 1) + "port")
    assert "nested too deeply" in exc.message
    exc = error("port in " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert "nested too deeply" in exc.message
    # just inside the limits is fine
    ok = "(" * MAX_DEPTH + "port == 1" + ")" * MAX_DEPTH
    assert parse_rule(ok).matches(HOST) is False
    long_chain = " or ".join(["port == 1"] * 300)
    assert len(long_chain) < MAX_RULE_LENGTH
    assert parse_rule(long_chain).matches({"port": 1}) is True


def test_error_str_names_the_column() -> None:
    exc = error("name ==")
    assert exc.location.endswith("8")
    assert str(exc).endswith("8: expected a value after '==', found end of rule")


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_TAG_KEYS = st.builds(
    str.__add__,
    st.sampled_from("aZ_"),
    st.text(alphabet="az09_.-", max_size=6),
)
_FACT_KEYS = st.one_of(
    st.sampled_from(["os", "cpu", "count", "in", "AND", "a.b", "my-key", "x y"]),
    st.text(min_size=1, max_size=6),
)


def _fields() -> st.SearchStrategy[Field]:
    scalar = st.sampled_from([f for f in FIELDS if f not in ("facts", "tags")]).map(Field)
    facts = st.lists(_FACT_KEYS, min_size=1, max_size=3).map(lambda p: Field("facts", tuple(p)))
    tags = _TAG_KEYS.map(lambda k: Field("tags", (k,)))
    return st.one_of(scalar, facts, tags)


_SCALARS: st.SearchStrategy[Value] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_VALUES: st.SearchStrategy[Value] = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6
)
_ORDERABLE: st.SearchStrategy[Value] = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
_PATTERNS = st.one_of(
    st.sampled_from(["^web[0-9]+$", r"\.", "a|b", "(x)?y*", r"\d", ""]),
    st.text(alphabet="abc. -", max_size=6),
)


@st.composite
def _comparisons(draw: st.DrawFn) -> Expr:
    target = draw(_fields())
    kind = draw(st.sampled_from(["eq", "order", "in", "contains", "regex", "truthy"]))
    if kind == "eq":
        return Compare(target, draw(st.sampled_from(["==", "!="])), draw(_VALUES))
    if kind == "order":
        return Compare(target, draw(st.sampled_from(["<", "<=", ">", ">="])), draw(_ORDERABLE))
    if kind == "in":
        items = draw(st.lists(_VALUES, max_size=3))
        return Compare(target, draw(st.sampled_from(["in", "not in"])), tuple(items))
    if kind == "contains":
        return Compare(target, "contains", draw(_VALUES))
    if kind == "regex":
        return Regex(target, draw(_PATTERNS))
    return Truthy(target)


_EXPRS: st.SearchStrategy[Expr] = st.recursive(
    _comparisons(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=8,
)


def _depth(expr: Expr) -> int:
    if isinstance(expr, And | Or):
        return 1 + max(_depth(e) for e in expr.operands)
    if isinstance(expr, Not):
        return 1 + _depth(expr.operand)
    if isinstance(expr, Compare):
        return 1 + _value_depth(expr.value)
    return 1


def _value_depth(value: Value) -> int:
    if isinstance(value, tuple):
        return 1 + max((_value_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(_EXPRS)
def test_canonical_text_parses_back(expr: Expr) -> None:
    assume(_depth(expr) < MAX_DEPTH)
    rule = Rule(expr)
    text = str(rule)
    assume(len(text) <= MAX_RULE_LENGTH)
    again = parse_rule(text)
    assert again == rule
    assert str(again) == text  # also catches 1 == 1.0 == true style equalities


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinities too: json.loads accepts them
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["os", "cpu", "count", "a.b", "x"]), inner, max_size=3),
    ),
    max_leaves=10,
)
_HOSTS = st.dictionaries(st.sampled_from(FIELDS), _JSON, max_size=len(FIELDS))


@settings(max_examples=100, deadline=None)
@given(_EXPRS, _HOSTS)
def test_matches_never_raises(expr: Expr, host: dict[str, Any]) -> None:
    assert Rule(expr).matches(host) in (True, False)


_FRAGMENTS = st.sampled_from(
    [
        "name", "port", "facts", "tags", ".", "os", "[", "]", "(", ")", ",", "==", "!=", "<",
        ">=", "=~", "in", "not", "and", "or", "contains", '"x"', "'y", "1", "-2.5e3", "true",
        "null", '"\\', "=", "!", "1e999", '"("', "tags.env", "facts.cpu.count",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(_FRAGMENTS, max_size=12).map(" ".join)))
def test_parse_raises_only_invalid_input(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidInput as exc:
        assert exc.column is not None
        assert 1 <= exc.column <= len(text) + 1
    else:
        assert parse_rule(str(rule)) == rule
        assert rule.matches(HOST) in (True, False)


# ---------------------------------------------------------------------------
# Facts as rules read them: dotted names are nested (core.facts)
# ---------------------------------------------------------------------------


def _host(facts: dict[str, Any]) -> dict[str, Any]:
    return {**HOST, "facts": readable(facts)}


def test_dotted_names_are_nested_and_rules_read_them() -> None:
    facts = nest({"cpu.count": 8, "cpu.model": "EPYC", "os": "debian"})
    assert facts == {"cpu": {"count": 8, "model": "EPYC"}, "os": "debian"}
    assert parse_rule("facts.cpu.count >= 8").matches(_host(facts))
    assert parse_rule('facts["cpu"].count == 8 and facts.cpu contains "model"').matches(
        _host(facts)
    )
    # an object value merges with dotted names beside it, in either order
    assert nest({"cpu": {"count": 8}, "cpu.model": "x"}) == {"cpu": {"count": 8, "model": "x"}}
    assert nest({"cpu.model": "x", "cpu": {"count": 8}}) == {"cpu": {"model": "x", "count": 8}}


@pytest.mark.parametrize(
    ("stored", "changes", "words"),
    [
        ({"cpu": 4}, {"cpu.count": 8}, "fact 'cpu.count': 'cpu' is 4, not an object of facts"),
        ({"a": {"b": "x"}}, {"a.b.c": 1}, "fact 'a.b.c': 'a.b' is \"x\""),
        ({"cpu": {"count": 8}}, {"cpu": 4}, "fact 'cpu' holds cpu.count"),
        ({}, {"cpu": 4, "cpu.count": 8}, "--fact cpu= on the command line"),
    ],
)
def test_a_fact_in_the_way_is_an_error_naming_it(
    stored: dict[str, Any], changes: dict[str, Any], words: str
) -> None:
    before = copy.deepcopy(stored)
    with pytest.raises(InvalidInput) as caught:
        apply_changes(stored, changes)
    assert caught.value.field == "facts" and words in caught.value.message
    assert stored == before  # the facts given are never changed, whatever happens


def test_changes_set_merge_and_remove_in_order() -> None:
    stored = {"cpu": {"count": 8, "model": "EPYC"}, "os": "debian"}
    changed = apply_changes(stored, {"cpu.count": 16, "disk.sda": 500, "os": None})
    assert changed == {"cpu": {"count": 16, "model": "EPYC"}, "disk": {"sda": 500}}
    assert stored == {"cpu": {"count": 8, "model": "EPYC"}, "os": "debian"}
    # removing the last fact inside an object removes the empty object too
    assert apply_changes(changed, {"disk.sda": None}) == {"cpu": {"count": 16, "model": "EPYC"}}
    # removing, then setting: a fact in the way goes first, when asked
    assert apply_changes({"cpu": 4}, {"cpu": None, "cpu.count": 8}) == {"cpu": {"count": 8}}
    assert apply_changes(stored, {"nothing.here": None}) == stored
    # an object merges into an object; a value replaces a value
    assert apply_changes(stored, {"cpu": {"cores": 4}})["cpu"] == {
        "count": 8,
        "model": "EPYC",
        "cores": 4,
    }
    assert apply_changes(stored, {"os": "ubuntu"})["os"] == "ubuntu"


def test_flat_dotted_keys_stored_before_are_read_nested_and_superseded() -> None:
    legacy = {"cpu.count": 8, "os": "debian", "net.if.eth0": "up"}
    view = readable(legacy)
    assert view["cpu"] == {"count": 8} and view["cpu.count"] == 8  # both spellings read
    assert view["net"] == {"if": {"eth0": "up"}}
    for rule in ("facts.cpu.count >= 8", 'facts["cpu.count"] == 8', "facts.net.if.eth0"):
        assert parse_rule(rule).matches(_host(legacy)), rule
    assert legacy == {"cpu.count": 8, "os": "debian", "net.if.eth0": "up"}  # not rewritten
    # a nested fact wins over a flat key that disagrees
    assert readable({"cpu": {"count": 4}, "cpu.count": 8})["cpu"] == {"count": 4}
    assert readable({"cpu": 4, "cpu.count": 8})["cpu"] == 4
    # writing the name replaces the flat key; removing a name removes the flat keys under it
    assert apply_changes(legacy, {"cpu.count": 16}) == {
        "os": "debian",
        "net.if.eth0": "up",
        "cpu": {"count": 16},
    }
    assert apply_changes(legacy, {"net": None, "cpu.count": None}) == {"os": "debian"}
    assert drop({"cpu": {"count": 1}, "cpu.model": "x", "rack": 7}, ["cpu"]) == {"rack": 7}


@pytest.mark.parametrize("name", ["", ".cpu", "cpu.", "cpu..count", "x" * 256, ".".join("a" * 17)])
def test_bad_fact_names(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        fact_path(name)
    assert caught.value.field == "facts"


@pytest.mark.parametrize(
    ("raw", "typed", "lossless"),
    [
        ("8", 8, 8),
        ("-3", -3, -3),
        ("0.5", 0.5, 0.5),
        ("true", True, True),
        ("12.10", 12.1, "12.10"),  # the version stays the text it is on import
        ("007", "007", "007"),
        ("1e3", 1000.0, "1e3"),
        ("null", None, "null"),
        ("[1, 2]", [1, 2], "[1, 2]"),
        ("debian", "debian", "debian"),
        ("1" * 30, int("1" * 30), "1" * 30),
    ],
)
def test_values_typed_as_fact_and_as_import(raw: str, typed: Any, lossless: Any) -> None:
    assert typed_value(raw) == typed and lossless_value(raw) == lossless
    assert type(lossless_value(raw)) is type(lossless)


_NAMES = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)
_SCALARS = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_NAMES, st.one_of(_SCALARS, st.none()), max_size=6))
def test_changes_either_apply_or_name_the_fact(changes: dict[str, Any]) -> None:
    """Whatever the changes, they apply or fail with an error naming a fact; once
    applied, every name set reads back its value (through the rule language too)."""
    try:
        facts = apply_changes({"a": {"b": 1}, "c": 2}, changes)
    except InvalidInput as exc:
        assert exc.field == "facts" and "fact '" in exc.message
        return
    names = list(changes)
    for at, name in enumerate(names):
        if any(_touches(name, later) for later in names[at + 1 :]):
            continue  # a later change decides what is there
        found = Field("facts", fact_path(name)).resolve({"facts": readable(facts)})
        assert found == changes[name], (name, facts)  # a removed fact reads as null


def _touches(one: str, other: str) -> bool:
    return one == other or one.startswith(other + ".") or other.startswith(one + ".")
