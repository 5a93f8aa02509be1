"""Printing results: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from provisor.core.errors import InvalidInput

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line per problem


class Format(StrEnum):
    table = "table"
    json = "json"


def read_input_file(path: Path, *, field: str, limit: int | None = None) -> bytes:
    """A file the user named (at most `limit` bytes when given: /dev/zero is a file
    too), or an error that says which and why."""
    try:
        with path.open("rb") as file:
            data = file.read(-1 if limit is None else limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}", field=field) from None
    if limit is not None and len(data) > limit:
        raise InvalidInput(f"{path} is larger than {limit:,} bytes", field=field)
    return data


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


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> None:
    out = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(compact(cell) for cell in row))
    console.print(out)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column key/value listing for `show` commands."""
    out = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        out.add_row(key, compact(value))
    console.print(out)
