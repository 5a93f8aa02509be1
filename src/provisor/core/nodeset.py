"""Node sets: `web[01-20]` for twenty host names, in the style of ClusterShell.

`expand(pattern)` turns a node set into the names it stands for::

    web[01-03]            web01 web02 web03       (zero padding kept)
    db[1-3,7]             db1 db2 db3 db7
    web[01-10/2]          web01 web03 web05 web07 web09
    rack[1-2]-n[01-02]    rack1-n01 rack1-n02 rack2-n01 rack2-n02
    web[1-2],db1          web1 web2 db1           (',' outside brackets: several sets)

`fold(names)` is the inverse: the shortest text this module writes for a set of
names (`db1,web[01-03]`), which is what a fleet command prints to group hosts
with identical output (`web[01-20] (20): ok`). `natural_key(name)` is the sort
key that puts `web2` before `web10`. `NumberRange` is the numeric range both host
range syntaxes expand: node sets here, Ansible INI host ranges in `hostfiles`.

Every error is an `InvalidInput` with `field="target"` and the 1-based column
of the offending character in the pattern. The syntax is documented in
docs/targets.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from provisor.core.errors import InvalidInput

__all__ = ["MAX_NAMES", "NumberRange", "expand", "fold", "natural_key"]

MAX_NAMES = 100_000
"""The most names one node set may stand for."""

_MAX_DIGITS = 18
"""The longest number a range may hold; longer digit runs are plain text to `fold`."""

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?(?:/([0-9]+))?")
_LAST_NUMBER = re.compile(r"([0-9]+)([^0-9]*)$")
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_SPACE = re.compile(r"\s")
_FOLD_FORBIDDEN = re.compile(r"[\[\],\s]")


def _error(message: str, column: int) -> InvalidInput:
    return InvalidInput(message, field="target", column=column)


# ---------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberRange:
    """The numbers `start` to `stop` every `step`, written zero-padded to `width` digits.

    Node sets write it `[01-20/2]`, Ansible INI host ranges `[01:20:2]`; each
    syntax checks its own text, with its own messages, before making one.
    """

    start: int
    stop: int  # inclusive
    step: int = 1
    width: int = 0  # 0: no padding

    @property
    def size(self) -> int:
        """How many numbers; a property, not `len()`, which cannot exceed `sys.maxsize`."""
        return max(0, (self.stop - self.start) // self.step + 1)

    def texts(self) -> Iterator[str]:
        for number in range(self.start, self.stop + 1, self.step):
            yield str(number).zfill(self.width)


def expand(pattern: str) -> list[str]:
    """The names `pattern` stands for, in the order written, without duplicates.

    Raises `InvalidInput(field="target", column=N)` for an empty pattern or
    piece, an unbalanced bracket, an empty, reversed or non-numeric range, a
    step of 0, or more than `MAX_NAMES` names.
    """
    pieces = _split_pieces(pattern)
    names: dict[str, None] = {}
    total = 0
    for text, column in pieces:
        segments = _parse_piece(text, column)
        size = 1
        for segment in segments:
            if not isinstance(segment, str):
                size *= sum(r.size for r in segment)
        total += size
        if total > MAX_NAMES:
            raise _error(f"node set stands for more than {MAX_NAMES} names", column)
        choices = [
            [segment] if isinstance(segment, str) else [t for r in segment for t in r.texts()]
            for segment in segments
        ]
        for parts in itertools.product(*choices):
            names.setdefault("".join(parts))
    return list(names)


def _split_pieces(pattern: str) -> list[tuple[str, int]]:
    """Split at commas outside brackets; each piece with its 1-based column.

    Checks the brackets on the way: none nested, none unclosed or unopened.
    Whitespace around a piece is ignored; whitespace inside one is an error.
    """
    if not pattern.strip():
        raise _error("empty node set", 1)
    pieces: list[tuple[str, int]] = []
    start = 0
    opened: int | None = None  # index of the '[' we are inside
    for index, char in enumerate(pattern):
        if char == "[":
            if opened is not None:
                raise _error("unexpected '[' inside brackets", index + 1)
            opened = index
        elif char == "]":
            if opened is None:
                raise _error("unexpected ']' without a matching '['", index + 1)
            opened = None
        elif char == "," and opened is None:
            pieces.append(_piece(pattern, start, index))
            start = index + 1
    if opened is not None:
        raise _error("unclosed '['", opened + 1)
    pieces.append(_piece(pattern, start, len(pattern)))
    return pieces


def _piece(pattern: str, start: int, end: int) -> tuple[str, int]:
    text = pattern[start:end]
    stripped = text.strip()
    column = start + 1 + (len(text) - len(text.lstrip()))
    if not stripped:
        raise _error("empty name in node set (two commas in a row, or one at an end)", column)
    space = _SPACE.search(stripped)
    if space:
        raise _error("unexpected whitespace in a node set", column + space.start())
    return stripped, column


def _parse_piece(text: str, column: int) -> list[str | list[NumberRange]]:
    """`rack[1-2]-n[01-04]` -> `["rack", [1-2], "-n", [01-04]]`; brackets are balanced."""
    segments: list[str | list[NumberRange]] = []
    pos = 0
    while pos < len(text):
        opening = text.find("[", pos)
        if opening < 0:
            segments.append(text[pos:])
            break
        if opening > pos:
            segments.append(text[pos:opening])
        closing = text.index("]", opening)
        segments.append(_parse_ranges(text[opening + 1 : closing], column + opening + 1))
        pos = closing + 1
    return segments


def _parse_ranges(content: str, column: int) -> list[NumberRange]:
    """The items between brackets; `column` is that of the first one."""
    ranges: list[NumberRange] = []
    offset = 0
    for item in content.split(","):
        ranges.append(_parse_range(item, column + offset))
        offset += len(item) + 1
    return ranges


def _parse_range(item: str, column: int) -> NumberRange:
    if not item:
        raise _error("empty range in brackets", column)
    match = _RANGE.fullmatch(item)
    if match is None:
        raise _error(
            f"invalid range {item!r}: expected N, N-M or N-M/STEP with decimal numbers", column
        )
    first, last, step_text = match.groups()
    for text in (first, last, step_text):
        if text is not None and len(text) > _MAX_DIGITS:
            raise _error(
                f"number {text[:20]}... is too long (at most {_MAX_DIGITS} digits)", column
            )
    start = int(first)
    stop = start if last is None else int(last)
    if stop < start:
        raise _error(f"reversed range {item!r}: write it as {last}-{first}", column)
    step = 1
    if step_text is not None:
        if last is None:
            raise _error(f"a step needs a range: {item!r}", column)
        step = int(step_text)
        if step < 1:
            raise _error(f"invalid step in {item!r}: must be at least 1", column)
    return NumberRange(start, stop, step, len(first))


# ---------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------

# While folding, a partly folded entry is (head, tail, first): `head` is plain
# text whose digit fields may still be folded, `tail` is already written (it may
# hold brackets), `first` the smallest name it stands for in natural order.
_Entry = tuple[str, str, str]


def fold(names: Iterable[str], written: Iterable[tuple[str, str]] = ()) -> str:
    """The compact node set of `names`: `["web01", "web02", "web03", "db1"]` -> `db1,web[01-03]`.

    Duplicates are ignored. Names are grouped on their last number first, then
    on the numbers before it (`rack[1-2]-n[01-04]`); a number keeps its zero
    padding. The parts are sorted by their first name in natural order, and
    `expand(fold(names))` gives back exactly the set of names. Linear in the
    number of names (times the count of digit fields in a name).

    `written` holds parts already written as node sets, each with its first name
    in natural order: they are placed among the others as they are.

    Raises `InvalidInput` for an empty name or one holding brackets, a comma
    or whitespace, which a node set cannot express.
    """
    entries: list[_Entry] = []
    for name in set(names):
        bad = _FOLD_FORBIDDEN.search(name)
        if not name or bad:
            raise InvalidInput(
                f"cannot write {name!r} in a node set: names must be non-empty, "
                "without brackets, commas or whitespace",
                field="target",
            )
        entries.append((name, "", name))
    done: list[_Entry] = [("", text, first) for text, first in written]
    while entries:
        entries = _fold_level(entries, done)
    done.sort(key=lambda entry: natural_key(entry[2]))
    return ",".join(head + tail for head, tail, _ in done)


def _split_last(head: str) -> tuple[str, str, str] | None:
    """`rack1-n` -> `("rack", "1", "-n")`; None when there is no number to fold on."""
    match = _LAST_NUMBER.search(head)
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        return None
    return head[: match.start()], match.group(1), match.group(2)


def _fold_level(entries: list[_Entry], done: list[_Entry]) -> list[_Entry]:
    """Fold every entry on the last number of its head; finished entries go to `done`."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for head, tail, first in entries:
        split = _split_last(head)
        if split is None:
            done.append((head, tail, first))
            continue
        before, number, between = split
        groups.setdefault((before, between + tail), []).append((number, first))
    folded: list[_Entry] = []
    for (before, rest), members in groups.items():
        # Members share all but their number, so the smallest number (by value,
        # then width) holds the smallest name in natural order.
        first = min(members, key=lambda member: (int(member[0]), len(member[0])))[1]
        if len(members) == 1:
            folded.append((before, members[0][0] + rest, first))
        else:
            folded.append((before, f"[{_fold_numbers([n for n, _ in members])}]{rest}", first))
    return folded


@dataclass
class _Run:
    """Consecutive numbers `first..last`, written `width` digits wide from `text`."""

    text: str
    first: int
    last: int

    @property
    def width(self) -> int:
        return len(self.text)

    def __str__(self) -> str:
        if self.first == self.last:
            return self.text
        return f"{self.text}-{str(self.last).zfill(self.width)}"


def _fold_numbers(numbers: list[str]) -> str:
    """`["01", "02", "03", "7"]` -> `01-03,7`: runs of consecutive numbers.

    A run is written with the width of its first number; a number joins a run
    only if the run would write it exactly as given (`09`,`10` -> `09-10`, but
    `9`,`09` stay apart).
    """
    runs: list[_Run] = []
    open_runs: dict[int, _Run] = {}  # the latest run of each width
    for text in sorted(numbers, key=lambda t: (int(t), len(t))):
        value = int(text)
        padded = len(text) > 1 and text[0] == "0"
        chosen: _Run | None = None
        for width, run in open_runs.items():
            fits = width == len(text) if padded else width <= len(text)
            if fits and run.last == value - 1 and (chosen is None or width > chosen.width):
                chosen = run
        if chosen is not None:
            chosen.last = value
        else:
            run = _Run(text, value, value)
            runs.append(run)
            open_runs[run.width] = run
    return ",".join(str(run) for run in runs)


_NaturalKey = tuple[tuple[tuple[str, int, str], ...], tuple[int, ...]]


def natural_key(name: str) -> _NaturalKey:
    """A sort key comparing the digit runs of names as numbers: `web2` < `web10`.

    Numbers of any length compare by value (no `int()` conversion); only names
    equal in value (`web1-2`, `web01-2`) are ordered by zero padding, the
    unpadded first. No two names have the same key.
    """
    parts = _DIGIT_RUNS.split(name)
    chunks: list[tuple[str, int, str]] = []
    widths: list[int] = []
    for index in range(0, len(parts), 2):
        digits = parts[index + 1] if index + 1 < len(parts) else ""
        if digits:
            significant = digits.lstrip("0") or "0"
            chunks.append((parts[index], len(significant), significant))
        else:
            chunks.append((parts[index], -1, ""))
        widths.append(len(digits))
    return tuple(chunks), tuple(widths)
