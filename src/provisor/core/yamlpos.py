"""YAML read with the position of every value, so errors can point at line and column.

`parse_yaml(text, source)` composes the text with PyYAML's safe loader and builds
plain data (dicts, lists, str, int, float, bool, None) while recording, for every
path into that data, where its value starts, where its mapping key starts, and how
a plain scalar was written. `located_errors` turns a pydantic `ValidationError` on
that data into `InvalidInput`s carrying `source`, `line`, `column` and the dotted
path of the field.

Only the safe YAML subset is read: unknown tags are errors, anchors and merge keys
(`<<`) work, duplicate keys are errors, and the expansion of aliases is bounded:
the values a document holds are counted before it is composed (each alias once) and
again while it is built (each alias as often as it is used), and the characters of
its scalars too, so neither an alias bomb nor a long scalar used many times gets past.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError

from provisor.core.errors import InvalidInput, ParseErrors

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPANDED_TEXT",
    "MAX_TEXT",
    "MAX_VALUES",
    "Document",
    "Mark",
    "Path",
    "dotted",
    "field_type",
    "located_errors",
    "parse_yaml",
    "prefer_text",
]

MAX_TEXT = 1_000_000
"""The longest document read, in characters."""

MAX_DEPTH = 64
"""How deeply mappings and sequences may nest."""

MAX_VALUES = 20_000
"""How many values (scalars, mappings, sequences) a document may hold once aliases are
expanded: a blueprint holds a few thousand at most, and reading costs about 10 µs
per value, so the largest document allowed is read in a fraction of a second."""

MAX_EXPANDED_TEXT = 2 * MAX_TEXT
"""How many characters its scalars may hold once aliases are expanded."""

Path: TypeAlias = tuple[str | int, ...]
"""Where a value is: mapping keys and sequence indexes from the root."""

_JSON_SCALARS = (str, int, float, bool, type(None))
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_MAX_NUMBER = 100  # characters of a plain scalar read as a number


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the text."""

    line: int
    column: int


@dataclass
class Document:
    """A YAML document as plain data, with the position of everything in it."""

    data: Any
    values: dict[Path, Mark] = field(default_factory=dict)  # where each value starts
    keys: dict[Path, Mark] = field(default_factory=dict)  # where each mapping key starts
    texts: dict[Path, str] = field(default_factory=dict)  # plain scalars as written

    def mark(self, path: Path, *, key: bool = False) -> Mark:
        """The position of `path` (of its key when `key`), else of its nearest ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return Mark(1, 1)

    def get(self, path: Path) -> Any:
        """The value at `path`, or None when there is none."""
        value = self.data
        for part in path:
            if not _has(value, part):
                return None
            value = value[part]
        return value


def _has(value: Any, part: str | int) -> bool:
    """Whether `value[part]` is a place in the data."""
    if isinstance(value, dict):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)


def dotted(path: Sequence[str | int]) -> str:
    """`("nodes", "app", "volumes", 0)` -> `nodes.app.volumes.0`."""
    return ".".join(str(part) for part in path)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class _Position(Protocol):
    """A PyYAML mark (pure-Python or libyaml's): 0-based line and column."""

    line: int
    column: int


class _Failure(Exception):
    def __init__(self, message: str, mark: _Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _error(message: str, source: str, mark: Mark | None) -> ParseErrors:
    line, column = (mark.line, mark.column) if mark else (None, None)
    return ParseErrors(
        [InvalidInput(message, source=source, line=line, column=column)], source=source
    )


def _mark(mark: _Position | None) -> Mark | None:
    return Mark(mark.line + 1, mark.column + 1) if mark is not None else None


def _position(text: str, offset: int) -> Mark:
    before = text[:offset]
    return Mark(before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


def parse_yaml(text: str, source: str = "<yaml>") -> Document:
    """Read one YAML document; any problem is a located `ParseErrors`."""
    if len(text) > MAX_TEXT:
        raise _error(f"the document is longer than {MAX_TEXT:,} characters", source, Mark(1, 1))
    try:
        _check_depth(text)
        root = yaml.compose(text, Loader=_Loader)
    except _Failure as exc:
        raise _error(exc.message, source, _mark(exc.mark)) from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.context and exc.problem and exc.context_mark is not None:
            where = _mark(exc.context_mark)
            assert where is not None
            context = f" ({exc.context} at line {where.line}, column {where.column})"
        raise _error(
            f"invalid YAML: {problem}{context}", source, _mark(exc.problem_mark or exc.context_mark)
        ) from None
    except yaml.reader.ReaderError as exc:
        raise _error(
            f"invalid YAML: {exc.reason} (character {exc.character!r})",
            source,
            _position(text, exc.position),
        ) from None
    except yaml.YAMLError as exc:
        raise _error(f"invalid YAML: {exc}", source, Mark(1, 1)) from None
    except RecursionError:
        raise _error("invalid YAML: nested too deeply", source, Mark(1, 1)) from None
    document = Document(data=None)
    if root is None:
        return document
    try:
        document.data = _Builder(document).build(root, ())
    except _Failure as exc:
        raise _error(exc.message, source, _mark(exc.mark)) from None
    return document


class _PureLoader(yaml.SafeLoader):
    """The safe loader, refusing deep `[`/`{` nesting as soon as it is scanned (PyYAML's
    scanner slows down with the square of that depth)."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _Failure(f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


# libyaml (in PyYAML's wheels) reads a blueprint 20x faster than the pure-Python
# scanner, and deep nesting costs it nothing until the depth check stops it.
_Loader: Any = yaml.CSafeLoader if yaml.__with_libyaml__ else _PureLoader


def _check_depth(text: str) -> None:
    """Refuse deep nesting before composing, which recurses once per level."""
    try:
        _count_depth(text, _Loader)
    except yaml.scanner.ScannerError as exc:
        # Newer libyaml scans ahead and stops at a nesting limit of its own (1,000) before
        # the events reach ours; the pure reader stops at ours, so it says where.
        if _Loader is not _PureLoader and "nesting" in (exc.problem or ""):
            _count_depth(text, _PureLoader)
        raise


def _count_depth(text: str, loader: Any) -> None:
    """Refuse deep nesting, and more values than allowed, as the parser meets them."""
    depth = values = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.NodeEvent):  # a scalar, an alias, or a collection's start
            values += 1
            if values > MAX_VALUES:
                raise _Failure(
                    f"the document holds more than {MAX_VALUES:,} values", event.start_mark
                )
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Failure(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


class _Builder:
    """Turns composed YAML nodes into plain data, recording positions."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.characters = 0
        self.active: set[int] = set()  # collection nodes being built: an alias back is a loop

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Failure(
                f"the document holds more than {MAX_VALUES:,} values (aliases expanded)",
                node.start_mark,
            )
        if len(path) > MAX_DEPTH:
            raise _Failure(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
        mark = _mark(node.start_mark)
        assert mark is not None
        self.document.values[path] = mark
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise _Failure("an alias refers to a value that contains it", node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            assert isinstance(node, yaml.SequenceNode)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        self.characters += len(node.value)
        if self.characters > MAX_EXPANDED_TEXT:
            raise _Failure(
                f"the document's values hold more than {MAX_EXPANDED_TEXT:,} characters "
                "(aliases expanded)",
                node.start_mark,
            )
        if not node.style:  # plain: None from PyYAML's parser, "" from libyaml's
            self.document.texts[path] = node.value
        if node.tag in _NUMBER_TAGS and len(node.value) > _MAX_NUMBER:
            # YAML 1.1 reads 1:2:3:... in base 60, in time that grows with the square
            # of its length; no number anyone means is this long.
            raise _Failure(
                f"a number of more than {_MAX_NUMBER} characters (quote it if it is text)",
                node.start_mark,
            )
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise _Failure(f"invalid value: {exc.problem}", node.start_mark) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise _Failure(f"invalid value {node.value!r}: {exc}", node.start_mark) from None
        if isinstance(value, float) and value != value:  # NaN never helps anyone
            return node.value
        return value if isinstance(value, _JSON_SCALARS) else node.value

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        seen: dict[str, _Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Failure("a mapping key must be a plain value", key_node.start_mark)
            first = seen.get(key_node.value)
            if first is not None:
                raise _Failure(
                    f"duplicate key {key_node.value!r} (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark
        try:
            self.constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise _Failure(f"invalid merge: {exc.problem}", exc.problem_mark) from None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Failure("a mapping key must be a plain value", key_node.start_mark)
            key = key_node.value
            key_mark = _mark(key_node.start_mark)
            assert key_mark is not None
            self.document.keys[(*path, key)] = key_mark
            result[key] = self.build(value_node, (*path, key))
        return result


# ---------------------------------------------------------------------------
# Schema-aware helpers
# ---------------------------------------------------------------------------


def _strip(annotation: Any) -> Any:
    """The type inside `Annotated[...]` and `X | None`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
            if models:
                annotation = models[0]
            elif len(options) == 1:
                annotation = options[0]
            else:
                return annotation
        else:
            return annotation


def field_type(model: type[BaseModel], path: Path) -> Any:
    """The annotation a value at `path` must match, or None when it cannot be told."""
    annotation: Any = model
    for part in path:
        annotation = _strip(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return None
            annotation = info.annotation
        elif origin in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        elif origin in (list, tuple, Sequence):
            annotation = typing.get_args(annotation)[0]
        else:
            return None
    return _strip(annotation)


def prefer_text(document: Document, model: type[BaseModel]) -> None:
    """Where the schema wants text but YAML read a number or a boolean, use the text
    as written: `version: 1.10` is "1.10", not the float 1.1."""
    for path, text in document.texts.items():
        value = document.get(path)
        if isinstance(value, str) or value is None or not path:
            continue
        if field_type(model, path) is str:
            parent = document.get(path[:-1])
            if isinstance(parent, dict | list):
                parent[path[-1]] = text  # type: ignore[index]


def _fields_at(model: type[BaseModel], path: Path) -> list[str]:
    found = field_type(model, path)
    if isinstance(found, type) and issubclass(found, BaseModel):
        return list(found.model_fields)
    return []


def located_errors(
    exc: ValidationError,
    document: Document,
    source: str,
    model: type[BaseModel],
    *,
    limit: int | None = None,
) -> list[InvalidInput]:
    """One located `InvalidInput` per problem pydantic found in `document.data`, the
    first `limit` of them when given (each costs a search for a close field name)."""
    errors: list[InvalidInput] = []
    for error in exc.errors():
        if limit is not None and len(errors) >= limit:
            break
        loc = [part for part in error["loc"] if part != "[key]"]
        path: list[str | int] = []
        value: Any = document.data
        missing: str | int | None = None
        for part in loc:
            if _has(value, part):
                value = value[part]
            elif error["type"] == "missing" and part == loc[-1]:
                missing = part
                break
            else:
                continue  # a union member's tag, not a place in the data
            path.append(part)
        kind = error["type"]
        if kind == "extra_forbidden" and path:
            message = f"unknown field {path[-1]!r}"
            known = _fields_at(model, tuple(path[:-1]))
            close = difflib.get_close_matches(str(path[-1]), known, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            elif known:
                message += f"; expected one of: {', '.join(known)}"
            at = document.mark(tuple(path), key=True)
        elif kind == "missing" and missing is not None:
            message = f"missing required field {missing!r}"
            at = document.mark(tuple(path))
            path.append(missing)
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            at = document.mark(tuple(path))
        errors.append(
            InvalidInput(
                message, source=source, line=at.line, column=at.column, field=dotted(path) or None
            )
        )
    return errors
