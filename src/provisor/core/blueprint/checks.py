"""Cross-field checks of a blueprint (references between parameters, nodes and outputs,
duplicates, a price for every size, defaults within their constraints, dependency
cycles), each problem a `_Problem` at a dotted path so the loader can point at its
line; `Blueprint` runs them as its own validator and the loader again on whatever
parts of a broken blueprint could be read (`_Scope`). Output templates are parsed
here too (`output_references`), since checking them needs it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from provisor.core.blueprint.cycles import _cycles
from provisor.core.blueprint.fields import (
    _NODE,
    _PARAM,
    _WAIT,
    AUTOMATIC_KEYS,
    MAX_MACHINES,
    MAX_NODES,
    MAX_PARAMETERS,
)
from provisor.core.blueprint.parts import (
    Cost,
    Node,
    Parameter,
    _check_value,
    _convert,
    size_key,
)
from provisor.core.regex import RegexError, compile_regex
from provisor.core.yamlpos import Path

_OUTPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_REF = re.compile(
    r"(?:params\.([a-z][a-z0-9_]*))|(?:([a-z][a-z0-9-]*)\.([0-9]+)\.([a-z][a-z0-9_]*))"
)
# Parameters become environment variables: these names would break the machine's shell.
_RESERVED_ENV = frozenset(
    {"path", "home", "user", "shell", "pwd", "oldpwd", "lang", "term", "logname", "hostname"}
    | {"ifs", "ps1", "ps2", "tmpdir", "tz", "mail", "lc_all", "ssh_auth_sock", "env"}
)


@dataclass(frozen=True)
class _Problem:
    path: Path
    message: str
    key: bool = False  # located at the mapping key rather than the value


def _suggest(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


MAX_SUGGESTIONS = 10
"""Unknown names per blueprint given a "did you mean": each costs a comparison with
every known name, and a hostile blueprint could hold thousands of unknown names."""


class _Suggester:
    """`_suggest` for the first `MAX_SUGGESTIONS` distinct words, nothing after."""

    def __init__(self) -> None:
        self._said: dict[tuple[str, int], str] = {}

    def __call__(self, word: str, known: Collection[str]) -> str:
        said = self._said.get((word, id(known)))
        if said is None:
            said = _suggest(word, known) if len(self._said) < MAX_SUGGESTIONS else ""
            self._said[(word, id(known))] = said
        return said


@dataclass(frozen=True)
class _Scope:
    """What cross-field checks look things up in.

    `param_names`/`node_names` are every declared name, valid or not, so a reference
    to a broken item is not called unknown; `broken` lists, per `nodes.NAME` or
    `parameters.NAME`, the fields that failed validation (checks that need them are
    skipped: their errors are already reported).
    """

    params: Mapping[str, Parameter]
    nodes: Mapping[str, Node]
    cost: Cost | None
    param_names: Collection[str]
    node_names: Collection[str]
    broken: Mapping[str, Collection[str]] = field(default_factory=dict)
    suggest: _Suggester = field(default_factory=_Suggester)

    def sure(self, section: str, name: str, field_name: str) -> bool:
        return field_name not in self.broken.get(f"{section}.{name}", ())


def _problems(
    params: Mapping[str, Parameter],
    nodes: Mapping[str, Node],
    outputs: Mapping[str, str],
    cost: Cost | None,
    *,
    param_names: Collection[str] | None = None,
    node_names: Collection[str] | None = None,
    broken: Mapping[str, Collection[str]] | None = None,
    limit: int | None = None,
) -> list[_Problem]:
    """Everything wrong between fields (see `_Scope` for the keyword arguments); with
    `limit`, it stops looking once more than that many problems are found."""
    scope = _Scope(
        params,
        nodes,
        cost,
        params.keys() if param_names is None else param_names,
        nodes.keys() if node_names is None else node_names,
        broken or {},
    )
    problems = _size_problems(scope)
    if problems:  # checking more would cost more than a blueprint may
        return problems
    enough = limit if limit is not None else len(params) + len(nodes) + len(outputs) + 1

    def checked() -> Iterator[list[_Problem]]:
        for name, parameter in params.items():
            if not scope.broken.get(f"parameters.{name}"):
                yield _parameter_problems(name, parameter)
        for name, node in nodes.items():
            yield _node_problems(name, node, scope)
        yield _cycle_problems(nodes)
        for name, template in outputs.items():
            yield _output_problems(name, template, scope)

    for found in checked():
        problems += found
        if len(problems) > enough:
            break
    return problems


def _size_problems(scope: _Scope) -> list[_Problem]:
    """Too many nodes, parameters or machines (counting those given as numbers)."""
    found: list[_Problem] = []
    if len(scope.node_names) > MAX_NODES:
        found.append(
            _Problem(
                ("nodes",), f"{len(scope.node_names)} nodes: a blueprint has at most {MAX_NODES}"
            )
        )
    if len(scope.param_names) > MAX_PARAMETERS:
        found.append(
            _Problem(
                ("parameters",),
                f"{len(scope.param_names)} parameters: a blueprint has at most {MAX_PARAMETERS}",
            )
        )
    fixed = sum(n.count for n in scope.nodes.values() if isinstance(n.count, int))
    if fixed > MAX_MACHINES:
        found.append(
            _Problem(
                ("nodes",), f"{fixed} machines in all: a deployment has at most {MAX_MACHINES}"
            )
        )
    return found


def _parameter_problems(name: str, p: Parameter) -> list[_Problem]:
    at: Path = ("parameters", name)
    found: list[_Problem] = []
    if not _PARAM.fullmatch(name):
        found.append(
            _Problem(
                at,
                f"invalid parameter name {name!r}: start with a lower-case letter, then "
                "lower-case letters, digits and '_' (it becomes the variable "
                f"{name.upper()})",
                key=True,
            )
        )
    elif name in _RESERVED_ENV or name.startswith(("provisor_", "ld_")):
        found.append(
            _Problem(
                at,
                f"parameter name {name!r} is reserved: as {name.upper()} it would "
                "replace a variable the machine's shell needs",
                key=True,
            )
        )
    texty = p.type in ("string", "secret")
    if p.pattern is not None:
        if not texty:
            found.append(
                _Problem((*at, "pattern"), f"pattern applies to string and secret, not {p.type}")
            )
        else:
            try:
                compile_regex(p.pattern)
            except RegexError as exc:
                found.append(_Problem((*at, "pattern"), exc.message))
                return found
    if (p.min is not None or p.max is not None) and not (texty or p.type == "int"):
        which = "min" if p.min is not None else "max"
        found.append(
            _Problem((*at, which), f"{which} applies to int, string and secret, not {p.type}")
        )
    if texty and any(bound is not None and bound < 0 for bound in (p.min, p.max)):
        found.append(_Problem((*at, "min"), "a length cannot be negative"))
    if p.min is not None and p.max is not None and p.min > p.max:
        found.append(_Problem((*at, "max"), f"max ({p.max}) is below min ({p.min})"))
    if p.type == "enum":
        if not p.choices:
            found.append(_Problem(at, "an enum parameter needs choices: [a, b, ...]"))
        elif len(set(p.choices)) != len(p.choices):
            found.append(_Problem((*at, "choices"), "choices are listed twice"))
    elif p.choices is not None:
        found.append(_Problem((*at, "choices"), f"choices apply to enum, not {p.type}"))
    if p.type == "secret" and p.default is not None:
        found.append(
            _Problem(
                (*at, "default"),
                "a secret parameter cannot have a default: blueprints are stored in clear, "
                f"so give it when deploying (-p {name}=...)",
            )
        )
    elif p.default is not None and not found:
        try:
            value = _convert(p, p.default)
        except ValueError as exc:
            found.append(_Problem((*at, "default"), f"invalid default: {exc}"))
        else:
            problem = _check_value(p, value)
            if problem:
                found.append(_Problem((*at, "default"), f"invalid default: {problem}"))
    return found


def _node_problems(name: str, node: Node, scope: _Scope) -> list[_Problem]:
    at: Path = ("nodes", name)
    node_names, cost = scope.node_names, scope.cost
    found: list[_Problem] = []
    if not _NODE.fullmatch(name) or name == "params":
        found.append(
            _Problem(
                at,
                f"invalid node name {name!r}: a node name is a DNS label: lower-case "
                "letters, digits and '-', starting with a letter, at most 32 characters "
                "('params' is reserved)",
                key=True,
            )
        )
    if isinstance(node.count, str):
        counted = scope.params.get(node.count)
        if node.count not in scope.param_names:
            found.append(
                _Problem(
                    (*at, "count"),
                    f"count refers to unknown parameter {node.count!r}"
                    + scope.suggest(node.count, scope.param_names),
                )
            )
        elif counted is not None and counted.type != "int":
            found.append(
                _Problem(
                    (*at, "count"),
                    f"count refers to parameter {node.count!r}, a {counted.type}; "
                    "it must be an int parameter",
                )
            )
    seen: set[str] = set()
    for i, other in enumerate(node.depends_on):
        where = (*at, "depends_on", i)
        if other == name:
            found.append(_Problem(where, f"node {name!r} cannot depend on itself"))
        elif other not in node_names:
            found.append(
                _Problem(where, f"unknown node {other!r}" + scope.suggest(other, node_names))
            )
        elif other in seen:
            found.append(_Problem(where, f"{other!r} is listed twice"))
        seen.add(other)
    if len(set(node.publishes)) != len(node.publishes):
        found.append(_Problem((*at, "publishes"), "a runtime parameter is listed twice"))
    for i, ref in enumerate(node.waits_for):
        problem = _wait_problem(name, ref, scope)
        if problem:
            found.append(_Problem((*at, "waits_for", i), problem))
    mounts = [v.mount for v in node.volumes]
    for i, mount in enumerate(mounts):
        if mount in mounts[:i]:
            found.append(_Problem((*at, "volumes", i, "mount"), f"{mount} is mounted twice"))
    networks = [n.name for n in node.networks]
    for i, network in enumerate(networks):
        if network in networks[:i]:
            found.append(_Problem((*at, "networks", i, "name"), f"network {network!r} given twice"))
    priced = cost is not None and cost.machine_hour and "default" not in cost.machine_hour
    if cost is not None and priced and scope.sure("nodes", name, "size"):
        key = size_key(node.size)
        if key not in cost.machine_hour:
            found.append(
                _Problem(
                    (*at, "size"),
                    f"no machine-hour price for size {key!r}: add it to cost.machine_hour, "
                    "or a 'default' price",
                )
            )
    return found


def _wait_problem(name: str, ref: str, scope: _Scope) -> str | None:
    match = _WAIT.fullmatch(ref)
    assert match is not None  # checked by the field validator
    target, index, key = match.group(1), match.group(2), match.group(3)
    if target not in scope.node_names:
        return f"{ref!r} refers to unknown node {target!r}" + scope.suggest(
            target, scope.node_names
        )
    if target == name and key not in AUTOMATIC_KEYS:
        return (
            f"node {name!r} cannot wait for its own runtime parameter {key!r}; "
            "split the role into two nodes (e.g. primary and replica)"
        )
    return _key_problem(ref, target, index, key, scope)


def _key_problem(ref: str, target: str, index: str | None, key: str, scope: _Scope) -> str | None:
    """What is wrong with a reference to runtime parameter `key` of node `target`."""
    other = scope.nodes.get(target)
    if other is None:
        return None  # a node that is itself invalid: reported there
    sure = scope.sure("nodes", target, "publishes")
    if sure and key not in AUTOMATIC_KEYS and key not in other.publishes:
        published = ", ".join(other.publishes) or "nothing"
        return (
            f"{ref!r}: node {target!r} does not publish {key!r} (it publishes {published}; "
            f"every machine publishes {' and '.join(AUTOMATIC_KEYS)})"
        )
    if (
        index is not None
        and scope.sure("nodes", target, "count")
        and isinstance(other.count, int)
        and int(index) > other.count
    ):
        return f"{ref!r}: node {target!r} has {other.count} machine(s)"
    return None


def _cycle_problems(nodes: Mapping[str, Node]) -> list[_Problem]:
    """Deadlocks between launches and scripts.

    Each node has three moments: launched (L), scripts started (S), done (D), with
    L < S < D. `depends_on: [b]` means D(b) < L(a); waiting for b's own key means
    S(b) < S(a) (b's scripts publish it); waiting for b's address or hostname means
    L(b) < S(a). A cycle among these moments can never make progress.
    """
    edges: dict[tuple[str, str], list[tuple[tuple[str, str], Path]]] = {}

    def add(before: tuple[str, str], after: tuple[str, str], where: Path | None) -> None:
        edges.setdefault(before, []).append((after, where or ()))

    for name, node in nodes.items():
        add((name, "L"), (name, "S"), None)
        add((name, "S"), (name, "D"), None)
        for i, other in enumerate(node.depends_on):
            if other in nodes and other != name:
                add((other, "D"), (name, "L"), ("nodes", name, "depends_on", i))
        for i, ref in enumerate(node.waits_for):
            match = _WAIT.fullmatch(ref)
            assert match is not None
            other, key = match.group(1), match.group(3)
            if other in nodes and other != name:
                moment = "L" if key in AUTOMATIC_KEYS else "S"
                add((other, moment), (name, "S"), ("nodes", name, "waits_for", i))
    problems = []
    for cycle in _cycles(edges):
        declared = [where for _, where in cycle if where]
        names = [moment[0] for moment, _ in reversed(cycle)]
        route = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
        if route[-1] == route[0] and len(route) > 1:
            route.pop()
        owner = str(declared[-1][1])  # the node whose entry the error points at
        start = route.index(owner) if owner in route else 0
        route = route[start:] + route[:start]
        text = " -> ".join([*route, route[0]])
        problems.append(
            _Problem(
                declared[-1],
                f"dependency cycle: {text} (each needs the next, through depends_on and "
                "waits_for); no machine of these nodes could ever finish",
            )
        )
    return problems


def output_references(template: str) -> list[str]:
    """The references in an output template, in order: `lb.1.address`, `params.port`.

    Raises ValueError for an unclosed `{{` or a reference that is not NODE.INDEX.KEY
    or params.NAME.
    """
    found: list[str] = []
    for ref, _, _ in _template_parts(template):
        if ref is not None:
            found.append(ref)
    return found


def _template_parts(template: str) -> list[tuple[str | None, int, int]]:
    """(reference or None, start, end) for each `{{ ... }}` of the template."""
    parts: list[tuple[str | None, int, int]] = []
    position = 0
    while True:
        start = template.find("{{", position)
        if start < 0:
            return parts
        end = template.find("}}", start + 2)
        if end < 0:
            raise ValueError(f"unclosed '{{{{' at character {start + 1}")
        ref = template[start + 2 : end].strip()
        if not _REF.fullmatch(ref):
            raise ValueError(
                f"invalid reference {{{{ {ref} }}}}: use {{{{ NODE.INDEX.KEY }}}} "
                "(e.g. lb.1.address) or {{ params.NAME }}"
            )
        parts.append((ref, start, end + 2))
        position = end + 2


def _output_problems(name: str, template: str, scope: _Scope) -> list[_Problem]:
    at: Path = ("outputs", name)
    params, param_names, node_names = scope.params, scope.param_names, scope.node_names
    found: list[_Problem] = []
    if not _OUTPUT.fullmatch(name):
        found.append(
            _Problem(at, f"invalid output name {name!r}: letters, digits, '_' and '-'", key=True)
        )
    try:
        refs = output_references(template)
    except ValueError as exc:
        return [*found, _Problem(at, str(exc))]
    for ref in refs:
        match = _REF.fullmatch(ref)
        assert match is not None
        param, target, index, key = match.groups()
        if param is not None:
            if param not in param_names:
                found.append(
                    _Problem(at, f"unknown parameter {param!r}" + scope.suggest(param, param_names))
                )
            elif param in params and params[param].type == "secret":
                found.append(_Problem(at, f"parameter {param!r} is a secret: outputs are shown"))
            continue
        if target not in node_names:
            found.append(
                _Problem(
                    at,
                    f"{ref!r} refers to unknown node {target!r}"
                    + scope.suggest(target, node_names),
                )
            )
        elif int(index) < 1:
            found.append(_Problem(at, f"{ref!r}: machines are numbered from 1"))
        else:
            problem = _key_problem(ref, target, index, key, scope)
            if problem:
                found.append(_Problem(at, problem))
    return found
