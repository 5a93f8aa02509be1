"""Node sets: expansion, folding, natural order, errors, round trips."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisor.core.errors import InvalidInput
from provisor.core.nodeset import MAX_NAMES, NumberRange, expand, fold, natural_key

# ---------------------------------------------------------------------------
# expand
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web01", ["web01"]),
        ("web[1-3]", ["web1", "web2", "web3"]),
        ("web[01-03]", ["web01", "web02", "web03"]),
        ("db[1-3,7]", ["db1", "db2", "db3", "db7"]),
        ("web[01-10/3]", ["web01", "web04", "web07", "web10"]),
        ("web[1-6/2]", ["web1", "web3", "web5"]),
        ("web[9-11]", ["web9", "web10", "web11"]),
        ("web[08-11]", ["web08", "web09", "web10", "web11"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("n[1,01,001]", ["n1", "n01", "n001"]),
        ("[1-2]x", ["1x", "2x"]),
        ("x[1-2].example.com", ["x1.example.com", "x2.example.com"]),
        (
            "rack[1-2]-n[01-02]",
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"],
        ),
        ("a[1-2]b[3]c", ["a1b3c", "a2b3c"]),
        ("web[1-2],db1", ["web1", "web2", "db1"]),
        ("web[1-2], db1 ,x", ["web1", "web2", "db1", "x"]),
        ("web[1-3],web[2-4]", ["web1", "web2", "web3", "web4"]),  # duplicates dropped
        ("web[3,1,2]", ["web3", "web1", "web2"]),  # the order written
        ("10.0.0.[1-2]", ["10.0.0.1", "10.0.0.2"]),
        ("web[0]", ["web0"]),
    ],
)
def test_expand(pattern: str, expected: list[str]) -> None:
    assert expand(pattern) == expected


def test_expand_large_range() -> None:
    names = expand("web[00001-20000]")
    assert len(names) == 20000
    assert names[0] == "web00001"
    assert names[-1] == "web20000"


def test_number_range() -> None:
    assert list(NumberRange(8, 11, 1, 2).texts()) == ["08", "09", "10", "11"]
    assert list(NumberRange(1, 10, 4).texts()) == ["1", "5", "9"]
    assert NumberRange(1, 10, 4).size == 3
    assert NumberRange(5, 1).size == 0
    # Counted without len(), which stops at sys.maxsize (Ansible ranges have no digit limit).
    assert NumberRange(0, 10**30).size == 10**30 + 1


def test_expand_limit() -> None:
    assert len(expand(f"x[1-{MAX_NAMES}]")) == MAX_NAMES
    with pytest.raises(InvalidInput, match="more than 100000"):
        expand(f"x[1-{MAX_NAMES + 1}]")
    # A product is counted before anything is generated.
    with pytest.raises(InvalidInput, match="more than 100000") as info:
        expand("a1,b[1-1000000]c[1-1000000]")
    assert info.value.column == 4
    # The limit is over the whole pattern.
    with pytest.raises(InvalidInput, match="more than 100000"):
        expand("a[1-60000],b[1-60000]")


@pytest.mark.parametrize(
    ("pattern", "column", "message"),
    [
        ("", 1, "empty node set"),
        ("   ", 1, "empty node set"),
        ("web[1-3", 4, "unclosed '['"),
        ("web[1-3],db[1", 12, "unclosed '['"),
        ("web]", 4, "unexpected ']'"),
        ("web[1-[2]]", 7, "unexpected '['"),
        ("web[]", 5, "empty range"),
        ("web[1,,3]", 7, "empty range"),
        ("web[1,]", 7, "empty range"),
        ("web[5-1]", 5, "reversed range '5-1'"),
        ("web[1,10-9]", 7, "reversed range"),
        ("web[a-b]", 5, "invalid range 'a-b'"),
        ("web[1-b]", 5, "invalid range"),
        ("web[-1]", 5, "invalid range"),
        ("web[1-2-3]", 5, "invalid range"),
        ("web[ 1]", 5, "whitespace"),
        ("web[1-3/0]", 5, "step"),
        ("web[3/2]", 5, "a step needs a range"),
        ("web[1-3/]", 5, "invalid range"),
        ("web[\u0661-\u0663]", 5, "invalid range"),  # only ASCII digits
        ("web[1-1234567890123456789]", 5, "too long"),
        ("a,,b", 3, "empty name"),
        (",a", 1, "empty name"),
        ("a,", 3, "empty name"),
        ("we b", 3, "whitespace"),
    ],
)
def test_expand_errors(pattern: str, column: int, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        expand(pattern)
    assert message in info.value.message
    assert info.value.column == column
    assert info.value.field == "target"


# ---------------------------------------------------------------------------
# fold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ""),
        (["web01", "web02", "web03", "db1"], "db1,web[01-03]"),
        (["web1"], "web1"),
        (["web1", "web1"], "web1"),
        (["web1", "web2", "web3", "web7"], "web[1-3,7]"),
        (["web2", "web10", "web1"], "web[1-2,10]"),
        (["web09", "web10", "web11"], "web[09-11]"),
        (["web9", "web10"], "web[9-10]"),
        (["web9", "web09", "web10"], "web[9,09-10]"),
        (["web1", "web01"], "web[1,01]"),
        (["web001", "web1", "web002"], "web[1,001-002]"),
        (["alpha", "beta", "web1"], "alpha,beta,web1"),
        (["web", "web1", "web-a"], "web,web1,web-a"),
        (["a1.x", "a2.x", "a3.y"], "a[1-2].x,a3.y"),
        (
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"],
            "rack[1-2]-n[01-02]",
        ),
        (["rack1-n01", "rack1-n02", "rack2-n01"], "rack1-n[01-02],rack2-n01"),
        (["r1n5", "r2n5", "r3n5"], "r[1-3]n5"),
        (["10.0.0.1", "10.0.0.2", "10.0.1.1"], "10.0.0.[1-2],10.0.1.1"),
        (["x" + "1" * 30, "x" + "1" * 29 + "2"], "x" + "1" * 30 + ",x" + "1" * 29 + "2"),
    ],
)
def test_fold(names: list[str], expected: str) -> None:
    assert fold(names) == expected
    assert sorted(expand(expected) if expected else []) == sorted(set(names))


def test_fold_many_names() -> None:
    rng = random.Random(7)
    names = [f"node{rng.randrange(20000):05d}.r{rng.randrange(4)}" for _ in range(10000)]
    names += [f"web{i}" for i in range(10000)]
    text = fold(names)
    assert text.startswith("node[")
    assert "web[0-9999]" in text
    assert set(expand(text)) == set(names)


def test_fold_is_independent_of_input_order() -> None:
    names = expand("web[01-20],db[1-5],x,rack[1-3]-n[1-4]")
    shuffled = list(names)
    random.Random(3).shuffle(shuffled)
    assert fold(shuffled) == fold(names)
    assert fold(names) == "db[1-5],rack[1-3]-n[1-4],web[01-20],x"


@pytest.mark.parametrize("name", ["", "a,b", "a[1]", "a]", "a b", "a\tb"])
def test_fold_rejects_names_a_node_set_cannot_hold(name: str) -> None:
    with pytest.raises(InvalidInput, match="cannot write"):
        fold(["web1", name])


def test_natural_key() -> None:
    names = ["web10", "web2", "web1", "db", "web01", "web", "web1a", "web1-2", "a10b2", "a9b10"]
    names += ["web01-1", "web1-3"]
    assert sorted(names, key=natural_key) == [
        "a9b10",
        "a10b2",
        "db",
        "web",
        "web1",
        "web01",
        "web01-1",
        "web1-2",
        "web1-3",
        "web1a",
        "web2",
        "web10",
    ]
    # Numbers longer than any machine integer still compare as numbers.
    assert natural_key("x" + "9" * 5000) < natural_key("x1" + "0" * 5000)
    assert natural_key("x0") < natural_key("x00") < natural_key("x1")


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_NAMES = st.from_regex(r"[a-c]{1,2}[0-9]{0,3}(-[a-b][0-9]{1,2})?(\.[a-b])?", fullmatch=True)
_ANY_NAMES = st.text(min_size=1, max_size=8).filter(lambda s: not re.search(r"[\[\],\s]", s))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_NAMES, _ANY_NAMES), max_size=20))
def test_fold_expand_round_trip(names: list[str]) -> None:
    text = fold(names)
    if not names:
        assert text == ""
        return
    expanded = expand(text)
    assert len(expanded) == len(set(expanded))
    assert sorted(expanded, key=natural_key) == sorted(set(names), key=natural_key)
    assert fold(expanded) == text  # fold depends on the set only


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        text = draw(st.sampled_from(["web", "db", "r", "x-", ""]))
        for _ in range(draw(st.integers(0, 2))):
            items = []
            for _ in range(draw(st.integers(1, 3))):
                start = draw(st.integers(0, 120))
                width = draw(st.integers(1, 4))
                first = str(start).zfill(width)
                if draw(st.booleans()):
                    stop = start + draw(st.integers(0, 12))
                    step = draw(st.sampled_from(["", "/2", "/5"]))
                    items.append(f"{first}-{stop}{step}")
                else:
                    items.append(first)
            text += "[" + ",".join(items) + "]" + draw(st.sampled_from(["", "n", ".a"]))
        pieces.append(text or "plain")
    return ",".join(pieces)


@settings(max_examples=200, deadline=None)
@given(_patterns())
def test_fold_of_expand_is_the_same_set(pattern: str) -> None:
    names = expand(pattern)
    assert len(names) == len(set(names))
    folded = fold(names)
    assert sorted(expand(folded), key=natural_key) == sorted(names, key=natural_key)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=20), st.text(alphabet="ab01[]-,/ ", max_size=20)))
def test_expand_raises_only_invalid_input(text: str) -> None:
    try:
        names = expand(text)
    except InvalidInput as exc:
        assert exc.column is not None
        assert 1 <= exc.column <= len(text) + 1
    else:
        assert names
        assert len(names) == len(set(names))
