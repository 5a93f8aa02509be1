"""A host's facts: nested JSON, written by dotted names.

A fact's **name** is a dotted path: `cpu.count` is the key `count` inside the object
`cpu`, so `provisor hosts set web01 --fact cpu.count=8` stores `{"cpu": {"count": 8}}`
and the rule `facts.cpu.count >= 8` reads it. A fact's **value** is any JSON, stored as
given (keys inside a value are not split).

Writing never loses a fact silently: a name that runs through a fact that is not an
object (`cpu.count` when `cpu` is 4), or a value that is not an object in place of one
that is (`cpu=4` when `cpu` holds `count`), is an error naming the fact; remove the
old one first (`--fact cpu=`).

Facts stored before names were split keep their flat dotted keys (`"cpu.count": 8` at
the top). Nothing rewrites them: `readable` shows them at their nested place too, so
rules and templates find them either way, and the next write of the same name
replaces the flat key (see docs/concepts.md, "Facts").

Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from provisor.core.errors import InvalidInput

__all__ = [
    "MAX_DEPTH",
    "MAX_NAME_LENGTH",
    "apply_changes",
    "drop",
    "fact_path",
    "lossless_value",
    "nest",
    "readable",
    "typed_value",
]

MAX_NAME_LENGTH = 255
"""The longest fact name, in characters."""

MAX_DEPTH = 16
"""The most parts a fact name may have (`a.b.c` has three)."""

# Text that means a number or a boolean when written back exactly the same way.
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")


def fact_path(name: str, *, field: str = "facts") -> tuple[str, ...]:
    """The keys a dotted fact name stands for: `cpu.count` -> ("cpu", "count")."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("a fact name cannot be empty", field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"fact name {name[:40]!r}... is longer than {MAX_NAME_LENGTH} characters",
            field=field,
        )
    parts = tuple(name.split("."))
    if "" in parts:
        raise InvalidInput(
            f"invalid fact name {name!r}: a '.' separates two keys (no empty key, "
            "no '.' first or last)",
            field=field,
        )
    if len(parts) > MAX_DEPTH:
        raise InvalidInput(
            f"fact name {name!r} has {len(parts)} parts: at most {MAX_DEPTH}", field=field
        )
    return parts


def typed_value(raw: str) -> Any:
    """What `--fact KEY=TEXT` stores: TEXT read as JSON (`8` the number, `true`, `[1, 2]`,
    `{"a": 1}`), and as plain text when it is not JSON."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def lossless_value(raw: str) -> Any:
    """An imported variable's value: a number or a boolean when that type writes it back
    exactly (`8`, `-3`, `0.5`, `true`); anything else stays the text it is (`12.10`,
    `007`, `1e3`, `null`, `[1]`), so an import never changes a value."""
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if repr(number) == raw:
            return number
    return raw


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _names_below(value: Mapping[str, Any], prefix: str, limit: int = 3) -> str:
    names = [f"{prefix}.{key}" for key in list(value)[: limit + 1]]
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _set(
    facts: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
    name: str,
    field: str,
    *,
    merging: bool = False,
) -> None:
    """Put `value` at `path`, merging an object into an object; refuse to drop a fact.
    `merging`: the value is part of an object merged into facts, so its keys are names
    below the one given, and an object may not replace a value that is not one."""
    current = facts
    for depth, key in enumerate(path[:-1]):
        below = current.get(key)
        if below is None:
            below = current[key] = {}
        elif not isinstance(below, dict):
            raise _not_an_object(name, ".".join(path[: depth + 1]), below, field)
        current = below
    key = path[-1]
    old = current.get(key)
    if isinstance(old, dict) and old:
        if not isinstance(value, Mapping):
            raise InvalidInput(
                f"fact {name!r} holds {_names_below(old, name)}; a value that is not an "
                f"object would drop them: remove it first (--fact {name}= on the command "
                "line, null over the API), or set the facts inside it",
                field=field,
            )
        for inner, inner_value in value.items():
            _set(old, (str(inner),), inner_value, f"{name}.{inner}", field, merging=True)
        return
    if merging and old is not None and isinstance(value, Mapping) and value:
        inner = next(iter(value))
        raise _not_an_object(f"{name}.{inner}", name, old, field)
    current[key] = copy.deepcopy(value)


def _not_an_object(name: str, parent: str, value: Any, field: str) -> InvalidInput:
    return InvalidInput(
        f"fact {name!r}: {parent!r} is {_describe(value)}, not an object of facts; "
        f"remove it first (--fact {parent}= on the command line, null over the API)",
        field=field,
    )


def _remove(facts: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove the fact at `path` (and what it holds); parents left empty go too."""
    trail: list[tuple[dict[str, Any], str]] = []
    current: Any = facts
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return
        trail.append((current, key))
        current = current[key]
    for depth in range(len(trail) - 1, -1, -1):
        holder, key = trail[depth]
        if depth == len(trail) - 1 or holder[key] == {}:
            del holder[key]
        else:
            break


def _drop_flat(facts: dict[str, Any], name: str, *, below: bool) -> None:
    """Forget the flat dotted key `name` of facts stored before names were split (and,
    with `below`, the flat keys under it): the write at its nested place supersedes it."""
    if "." in name:
        facts.pop(name, None)
    if below:
        for key in [k for k in facts if k.startswith(name + ".")]:
            del facts[key]


def apply_changes(
    facts: Mapping[str, Any], changes: Mapping[str, Any], *, field: str = "facts"
) -> dict[str, Any]:
    """`facts` with `changes` made, in their order: each name set to its value (an
    object merges into an object), or removed when the value is None. The input is
    left as it was; an `InvalidInput` naming the fact is raised on a conflict."""
    result = copy.deepcopy(dict(facts))
    for name, value in changes.items():
        path = fact_path(name, field=field)
        if value is None:
            _drop_flat(result, name, below=True)
            _remove(result, path)
        else:
            _drop_flat(result, name, below=False)
            _set(result, path, value, name, field)
    return result


def nest(facts: Mapping[str, Any], *, field: str = "facts") -> dict[str, Any]:
    """New facts from names and values: `{"cpu.count": 8, "os": "debian"}` ->
    `{"cpu": {"count": 8}, "os": "debian"}`; a null value is refused (there is nothing
    to remove)."""
    for name, value in facts.items():
        if value is None:
            raise InvalidInput(f"fact {name!r} has no value (null)", field=field)
    return apply_changes({}, facts, field=field)


def readable(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts as rules and templates read them: as stored, plus each flat dotted key
    of facts stored before names were split (`"cpu.count": 8`) also at its nested place
    (`cpu` -> `count`) unless a fact is already there (the nested one wins)."""
    flat = [k for k in facts if "." in k]
    if not flat:
        return dict(facts)
    view: dict[str, Any] = copy.deepcopy(dict(facts))
    for key in sorted(flat, key=lambda k: k.count(".")):
        path = tuple(key.split("."))
        if "" in path:
            continue
        current = view
        for part in path[:-1]:
            below = current.get(part)
            if below is None:
                below = current[part] = {}
            if not isinstance(below, dict):
                break
            current = below
        else:
            current.setdefault(path[-1], copy.deepcopy(facts[key]))
    return view


def drop(facts: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """`facts` without the top-level facts `names` and the flat dotted keys under them."""
    gone = set(names)
    return {
        key: value
        for key, value in facts.items()
        if key not in gone and key.split(".", 1)[0] not in gone
    }
