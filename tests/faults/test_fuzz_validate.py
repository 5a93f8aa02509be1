"""Random and hostile blueprints, targets and rules fed to what validates them.

Each input either validates or is refused with the project's error and a position:
a line and a column in the blueprint, a column in the target or the rule. Never
another exception, never more than 1 s of CPU or 200 MB per input (a hard bound on
garbage input, not a timing benchmark: the worst inputs found take about half that).
The time is measured on one call, the memory (tracemalloc) on a second, since
tracing slows the first down.

Change sets do not exist yet (a later issue); they join this file when they do.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.rules import parse_rule
from provisor.core.targets import HostRef, evaluate, parse_target
from provisor.core.yamlpos import MAX_TEXT
from provisor.services import blueprints

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p.read_text() for p in sorted((ROOT / "examples" / "blueprints").glob("*.yaml"))]
MINIMAL = "name: shop\nversion: '1'\nnodes:\n  app:\n    image: debian-12\n"
MAX_SECONDS = 1.0  # CPU time per input
MAX_BYTES = 200 * 1024 * 1024  # peak traced memory per input

T = TypeVar("T")

FUZZ = settings(
    deadline=None,  # the bound is asserted below, on CPU time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def bounded(call: Callable[[], T]) -> T | ProvisorError:
    """What `call` returns or the ProvisorError it raises (anything else fails the
    test), having checked the CPU time and the memory it took."""
    start = time.thread_time()  # this thread's: not what other tests left running here
    try:
        outcome: T | ProvisorError = call()
    except ProvisorError as exc:
        outcome = exc
    spent = time.thread_time() - start
    tracemalloc.start()
    try:
        call()
    except ProvisorError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert spent < MAX_SECONDS, f"{spent:.2f} s of CPU"
    assert peak < MAX_BYTES, f"{peak / 1e6:.0f} MB"
    return outcome


# --- blueprints ------------------------------------------------------------------------------


def validate_text(text: str, given: dict[str, str] | None = None) -> object:
    """What `provisor blueprints validate FILE [-p NAME=VALUE]` does."""
    bp = blueprints.validate_blueprint(text, "fuzz.yaml")
    return blueprints.summarize_blueprint(bp, given or None)


def check_blueprint(text: str, given: dict[str, str] | None = None) -> None:
    outcome = bounded(lambda: validate_text(text, given))
    if not isinstance(outcome, ProvisorError):
        return
    assert isinstance(outcome, InvalidInput), repr(outcome)
    errors = outcome.errors if isinstance(outcome, ParseErrors) else [outcome]
    assert errors and all(e.message for e in errors)
    for error in errors:
        if error.source == "fuzz.yaml":  # the file's: at a line and a column in it
            assert error.line is not None and error.line >= 1, error
            assert error.column is not None and error.column >= 1, error
        else:  # a -p input's: at its field
            assert error.field and error.field.startswith("parameters."), error


_YAML_BITS = [
    "&a ", "*a", "<<: *a\n", "<<: [*a, *a]\n", "!!python/object:os.system ", "!!binary ",
    "!!set ", "!!omap ", "!custom ", "[", "]", "{", "}", "- ", ": ", ",", '"', "'", "|\n",
    ">-\n", "\t", "# x\n", "%YAML 1.1\n", "---\n", "...\n", "\x00", "\ufeff", "? ", "\n  ",
    "1:2:3:4:5:6", "0x1F", "1e999", "~", "null", ".nan", "2001-13-45", "&b [*b]",
    "nodes:", "count: ", "user_data: ", "#cloud-config\n", "#!/bin/sh\n", "image: ",
    "depends_on: [", "waits_for: [", "{{ nodes.x.1.address }}", "{{ params.", "pattern: ",
    "(a+)+$", "\\1", "(?=x)", "é", "\U0001f600", "\r", "\u2028",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid blueprint with a few hostile edits."""
    text = draw(st.sampled_from([*EXAMPLES, MINIMAL]))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 20))
        bit = draw(st.one_of(st.sampled_from(_YAML_BITS), st.text(max_size=10)))
        text = text[:at] + bit * draw(st.integers(1, 3)) + text[at + cut :]
    return text


_NAMES = st.one_of(
    st.sampled_from(["app", "db", "web-1", "params", "A", "a.b", "-x", "x" * 40, ""]),
    st.text(max_size=12),
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_NODE_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "image": st.one_of(st.just("debian-12"), _SCALARS),
        "count": st.one_of(st.integers(-5, 5000), _NAMES),
        "size": st.one_of(st.fixed_dictionaries({"cpu": _SCALARS}), _VALUES),
        "hostname": _SCALARS,
        "user_data": st.one_of(
            st.sampled_from(["#!/bin/sh\necho hi\n", "#cloud-config\nruncmd: [ls]\n"]),
            st.text(max_size=60).map(lambda t: "#cloud-config\n" + t),
            _SCALARS,
        ),
        "scripts": st.lists(_SCALARS, max_size=3),
        "depends_on": st.lists(_NAMES, max_size=3),
        "publishes": st.lists(_NAMES, max_size=3),
        "waits_for": st.lists(st.text(max_size=15), max_size=3),
        "volumes": _VALUES,
        "networks": _VALUES,
        "surprise": _VALUES,
    },
)
_PARAMETER = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["string", "int", "bool", "enum", "secret"]), _SCALARS),
        "default": _SCALARS,
        "pattern": st.one_of(
            st.sampled_from(["(a+)+$", "^(a|aa)+$", r"(x)\1", "[", "a{1001}", ".*"]),
            st.text(max_size=10),
        ),
        "min": _SCALARS,
        "max": _SCALARS,
        "choices": _VALUES,
    },
)


@st.composite
def structured(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A blueprint built field by field, written as YAML or JSON, and -p inputs."""
    data: dict[str, Any] = {"name": draw(_NAMES), "version": draw(_SCALARS)}
    data["nodes"] = draw(st.dictionaries(_NAMES, _NODE_FIELDS, max_size=4))
    data["parameters"] = draw(st.dictionaries(_NAMES, _PARAMETER, max_size=3))
    data["outputs"] = draw(st.dictionaries(_NAMES, st.text(max_size=40), max_size=3))
    data.update(draw(st.dictionaries(st.sampled_from(["cost", "ingress", "lease", "x"]), _VALUES)))
    as_json = draw(st.booleans())
    text = json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True)
    names = list(data["parameters"]) or ["p"]
    given = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(names), st.text(max_size=6)),
            st.one_of(st.text(max_size=20), st.just("a" * 50_000 + "!")),
            max_size=3,
        )
    )
    return text, given


def _bomb(levels: int, fan: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _user_data(user_data: str) -> str:
    return (
        MINIMAL
        + "    user_data: |\n"
        + "".join(f"      {line}\n" for line in user_data.split("\n"))
    )


class Sizes:
    """How a hostile generator picks its sizes and options: drawn by hypothesis, or the
    largest size and a given option (so every generator runs at its worst once)."""

    def __init__(self, draw: st.DrawFn | None = None, option: int = 0) -> None:
        self._draw = draw
        self._option = option
        self.options = 1  # how many a choice offered

    def size(self, low: int, high: int) -> int:
        return high if self._draw is None else self._draw(st.integers(low, high))

    def choice(self, options: list[str]) -> str:
        if self._draw is None:
            self.options = max(self.options, len(options))
            return options[self._option % len(options)]
        return self._draw(st.sampled_from(options))


def _deep(pick: Sizes) -> str:
    opener = pick.choice(["[", "{a: ", "- ", "block"])
    depth = pick.size(60, 5000)
    if opener == "block":
        return MINIMAL + "".join(f"{' ' * i}k{i}:\n" for i in range(min(depth, 400))) + " x\n"
    return MINIMAL + "extra: " + opener * depth + "\n"


def _references(pick: Sizes) -> str:
    nodes, refs = pick.size(1, 120), pick.size(1, 20_000)
    body = "".join(f"  node-number-{i}: {{image: x}}\n" for i in range(nodes))
    field = pick.choice(["depends_on", "waits_for"])
    suffix = ".r" if field == "waits_for" else ""
    listed = ", ".join(f"nodx-numbr-{i}{suffix}" for i in range(refs))
    return f"name: t\nversion: '1'\nnodes:\n{body}  z: {{image: x, {field}: [{listed}]}}\n"


def _wide(pick: Sizes) -> str:
    n = pick.size(1000, 60_000)
    if pick.choice(["list", "keys"]) == "list":
        return MINIMAL + "    surprise: [" + ",".join(["1"] * n) + "]\n"
    return MINIMAL + "".join(f"    unknown{i}: 1\n" for i in range(n))


def _gzip_bomb(pick: Sizes) -> str:
    content = base64.b64encode(gzip.compress(b"\0" * pick.size(100_000, 14_000_000), 9)).decode()
    encoding = pick.choice(["gz+b64", "gzip+base64", "gz", "b64"])
    listed = "".join(
        f"  - path: /f{i}\n    encoding: {encoding}\n    content: {content}\n"
        for i in range(pick.size(1, 3))
    )
    return _user_data("#cloud-config\nwrite_files:\n" + listed)


def _merge_bomb(pick: Sizes) -> str:
    levels = range(1, pick.size(2, 15))
    merges = "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}], k{i}: 1}}\n" for i in levels
    )
    return MINIMAL + "a0: &a0 {k: 1}\n" + merges


_HOSTILE: dict[str, Callable[[Sizes], str]] = {
    "alias bomb": lambda pick: MINIMAL + _bomb(pick.size(2, 12), pick.size(2, 30)),
    "alias bomb in user data": lambda pick: _user_data(
        "#cloud-config\n" + _bomb(pick.size(2, 10), pick.size(2, 12))
    ),
    "merge bomb": _merge_bomb,
    "deep": _deep,
    "long scalar": lambda pick: (
        MINIMAL + "description: " + "x" * pick.size(MAX_TEXT - 100, MAX_TEXT + 100) + "\n"
    ),
    "long scalar used often": lambda pick: (
        MINIMAL + f"a: &a {'x' * 100_000}\nb: [" + ", ".join(["*a"] * pick.size(10, 5000)) + "]\n"
    ),
    "base 60": lambda pick: MINIMAL.replace("debian-12", "1" + ":1" * pick.size(100, 400_000)),
    "long number": lambda pick: MINIMAL + "    count: " + "9" * pick.size(50, 500_000),
    "references": _references,
    "wide": _wide,
    "gzip bomb": _gzip_bomb,
    "user data size": lambda pick: _user_data(
        "#!/bin/sh\n" + "echo hi\n" * pick.size(1000, 120_000)
    ),
    "many nodes": lambda pick: (
        "name: t\nversion: '1'\nnodes:\n"
        + "".join(f"  n{i}: {{image: x, count: 1000}}\n" for i in range(pick.size(2, 3000)))
    ),
}


@st.composite
def hostile(draw: st.DrawFn) -> str:
    """Blueprints built to cost: bombs, depth, size, width, numbers, references."""
    return _HOSTILE[draw(st.sampled_from(sorted(_HOSTILE)))](Sizes(draw))


@settings(FUZZ, max_examples=120)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_random_text(text: str) -> None:
    check_blueprint(text)


@settings(FUZZ, max_examples=150)
@given(mutated())
def test_mutated_blueprints(text: str) -> None:
    check_blueprint(text)


@settings(FUZZ, max_examples=150)
@given(structured())
def test_structured_blueprints(case: tuple[str, dict[str, str]]) -> None:
    check_blueprint(*case)


@settings(FUZZ, max_examples=40)
@given(hostile())
def test_hostile_blueprints(text: str) -> None:
    check_blueprint(text)


@pytest.mark.parametrize("kind", sorted(_HOSTILE))
def test_each_hostile_kind_at_its_largest(kind: str) -> None:
    """Every generator with the largest sizes it draws and each of its options
    (hypothesis may not get there)."""
    first = Sizes()
    check_blueprint(_HOSTILE[kind](first))
    for option in range(1, first.options):
        check_blueprint(_HOSTILE[kind](Sizes(option=option)))


# --- targets and rules --------------------------------------------------------------------------


class Inventory:
    """An inventory of hosts with long, similar names, for targets to select from."""

    def __init__(self, names: Iterable[str]) -> None:
        self.hosts = [
            HostRef(name, f"10.0.{i // 250}.{i % 250 + 1}") for i, name in enumerate(names)
        ]

    def all_hosts(self) -> list[HostRef]:
        return self.hosts

    def group_members(self, name: str) -> list[HostRef]:
        return self.hosts[: len(name)]

    def tagged_hosts(self, key: str, value: str) -> list[HostRef]:
        return self.hosts[:: max(1, len(value))]

    def deployment_members(self, name: str) -> list[HostRef]:
        return self.hosts[-len(name) :]

    def read_file(self, path: str) -> list[HostRef]:
        return []


INVENTORY = Inventory([f"web{'a' * 100}{i:04d}" for i in range(1000)])

_TARGET_BITS = [
    "web", "01", "[", "]", "1-3", ",", "&", "!", "(", ")", "group:", "tag:", "=", "@",
    ":", "22", "/", "10.0.0.1", "::", '"', " ", "deployment:", "*", "?", "root@", "[::1]",
    "web[0-99999]", "a[1-100000000]", "*a" * 30 + "b", "(" * 40, "!" * 50, "[01-09,11-19]",
    "10.0.0.0/8", "::/0", "\\", "%", "\x00", "é",
]  # fmt: skip


@settings(FUZZ, max_examples=200)
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from(_TARGET_BITS), max_size=15).map("".join),
        st.integers(4000, 9000).map(lambda n: "a," * n),
    )
)
def test_targets(text: str) -> None:
    parsed = bounded(lambda: parse_target(text))
    if isinstance(parsed, ProvisorError):
        assert isinstance(parsed, InvalidInput) and parsed.field == "target", repr(parsed)
        assert parsed.column is not None and parsed.column >= 1, parsed
        return
    if "@" in text:
        return  # a file or a user: nothing more to select from this inventory
    selected = bounded(lambda: evaluate(parsed, INVENTORY))
    if isinstance(selected, ProvisorError):  # names no host: the message says which
        assert isinstance(selected, InvalidInput) and selected.field == "target", repr(selected)


_RULE_BITS = [
    "name", "facts.", "tags.", "facts[\"a b\"]", " == ", " != ", " =~ ", " < ", " in ",
    " not ", " and ", " or ", " contains ", "(", ")", "[", "]", ",", '"', "'", "1e999",
    "-0", "null", "true", '"(a+)+$"', '"(x|x)*y"', '"(a)\\1"', '"(?=a)"', '"a{1001}"',
    '"' + "(" * 100 + '"', "not " * 40, "\\", "\x00", "é",
]  # fmt: skip
HOST = {
    "name": "a" * 100_000 + "!",
    "address": "10.0.0.1",
    "port": 22,
    "user": "x" * 50_000,
    "state": "active",
    "facts": {"a": {"b": "x" * 100_000}, "a b": "y" * 100_000 + "z", "n": 1e308},
    "tags": {"env": "x" * 100_000},
}


@settings(FUZZ, max_examples=300)
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from(_RULE_BITS), max_size=15).map("".join),
        st.sampled_from(["name", "tags.env", "facts.a.b", 'facts["a b"]']).flatmap(
            lambda field: st.sampled_from(_RULE_BITS[21:30]).map(lambda p: f"{field} =~ {p}")
        ),
    )
)
def test_rules(text: str) -> None:
    rule = bounded(lambda: parse_rule(text))
    if isinstance(rule, ProvisorError):
        assert isinstance(rule, InvalidInput) and rule.field == "rule", repr(rule)
        assert rule.column is not None and rule.column >= 1, rule
        return
    assert bounded(lambda: rule.matches(HOST)) in (True, False)
