"""Printing results: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from provisor.cli.input_files import read_input_file as read_input_file

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line per problem


class Format(StrEnum):
    table = "table"
    json = "json"


def to_json(value: BaseModel | Sequence[BaseModel]) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=2)
    return json.dumps([v.model_dump(mode="json") for v in value], indent=2)


def emit_json(value: BaseModel | Sequence[BaseModel]) -> None:
    sys.stdout.write(to_json(value) + "\n")


def compact(value: Any) -> str:
    """A short one-line rendering of tags, facts and details."""
    if isinstance(value, dict):
        return " ".join(f"{k}={compact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(compact(v) for v in value)
    if value is None:
        return "-"
    return str(value)


WideOption = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="every column, nothing shortened: one line per row, as long as it takes",
    ),
]
_RECENT = timedelta(days=180)  # `ls -l`'s rule: a time this recent shows its hour, not its year


def short_time(when: datetime, *, seconds: bool = False, now: datetime | None = None) -> str:
    """A time (UTC) in a narrow column: `12-07 13:01[:12]` within half a year, else
    `2025-12-07` (as `ls -l` does)."""
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    if abs((now or datetime.now(UTC)) - when) > _RECENT:
        return when.strftime("%Y-%m-%d")
    return when.strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")


def full_time(when: datetime) -> str:
    """A time (UTC) in full: `2026-12-07 13:01:12`."""
    when = when.astimezone(UTC) if when.tzinfo else when
    return when.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Col:
    """A column of a listing: one line per row, fitted to the terminal.

    `cut`: its values may be shortened with `…` when the row is wider than the terminal
    (the widest such column first); the others are kept whole. `wide`: shown only with
    `--wide`."""

    name: str
    cut: bool = False
    wide: bool = False


_MIN_CUT = 6  # a shortened column keeps at least this many cells (or its header's)


def _fit(natural: list[int], floors: list[int], cut: list[bool], room: int) -> list[int]:
    """Column widths that fit `room`: the widest cuttable column is narrowed first, none
    below its floor. (When they cannot fit, rich narrows every column as a last resort.)"""
    widths = list(natural)
    excess = sum(widths) - room
    while excess > 0:
        narrowable = [i for i, can in enumerate(cut) if can and widths[i] > floors[i]]
        if not narrowable:
            break
        widest = max(narrowable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def table(
    columns: Sequence[str | Col],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    wide: bool = False,
) -> None:
    """A table for people.

    Plain column names: long values wrap within their cell. `Col` columns (a listing):
    one line per row; long values in `cut` columns shortened to fit the terminal and
    `wide` columns left out, unless `wide` (then every column, whole, however long the
    line)."""
    out = Table(title=title, show_edge=False, header_style="bold")
    if not any(isinstance(c, Col) for c in columns):
        for name in columns:
            out.add_column(str(name), overflow="fold")
        for row in rows:
            out.add_row(*(compact(cell) for cell in row))
        console.print(out)
        return
    specs = [c if isinstance(c, Col) else Col(c) for c in columns]
    shown = [i for i, c in enumerate(specs) if wide or not c.wide]
    heads = [specs[i].name for i in shown]
    cells = [[" ".join(compact(row[i]).splitlines()) for i in shown] for row in rows]
    natural = [max([cell_len(h), *(cell_len(r[n]) for r in cells)]) for n, h in enumerate(heads)]
    rules = 3 * len(shown) - 1  # each cell's padding, and the rules between cells
    if wide:
        widths = natural
    else:
        floors = [min(w, max(_MIN_CUT, cell_len(h))) for w, h in zip(natural, heads, strict=True)]
        widths = _fit(natural, floors, [specs[i].cut for i in shown], console.width - rules)
    for head, width in zip(heads, widths, strict=True):
        out.add_column(head, width=width, no_wrap=True, overflow="ellipsis")
    for line in cells:
        out.add_row(*(Text(cell, no_wrap=True, overflow="ellipsis") for cell in line))
    if not wide:
        console.print(out)
        return
    width = console.width
    console.width = max(width, sum(widths) + rules)  # longer than the terminal, on purpose
    try:
        console.print(out)
    finally:
        console.width = width


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column key/value listing for `show` commands."""
    out = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        out.add_row(key, compact(value))
    console.print(out)
