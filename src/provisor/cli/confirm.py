"""Asking before acting on many objects: `down`, `kill`, `hosts rm`, `groups rm`.

One object goes ahead at once. More are asked about on the terminal (the question goes
to the terminal itself, like a password prompt, so piped output stays clean), refused
without one unless `--yes`; `--dry-run` lists what would be touched and touches nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated

import typer
from rich.markup import escape

from provisor.cli.output import console, err_console
from provisor.core.errors import InvalidInput, ProvisorError

Yes = Annotated[
    bool, typer.Option("--yes", "-y", help="go ahead without asking, even on many objects")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="say what would be touched, and touch nothing")
]

_SHOWN = 20  # objects named in a question; the rest are counted


def _listed(objects: Sequence[str]) -> str:
    shown = ", ".join(objects[:_SHOWN])
    more = len(objects) - _SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _ask_terminal(question: str) -> bool | None:
    """The answer typed on the controlling terminal; None when there is none."""
    if not sys.stdin.isatty():
        return None
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    try:
        os.write(tty, f"{question} [y/N]: ".encode())
        answer = os.read(tty, 64)  # a line: the terminal hands it over whole
    finally:
        os.close(tty)
    return answer.decode(errors="replace").strip().lower() in ("y", "yes")


def go_ahead(
    verb: str,
    kind: str,
    objects: Sequence[str],
    *,
    yes: bool,
    dry_run: bool,
    ask_for_one: bool = False,
) -> bool:
    """Whether to `verb` these objects of `kind` (a plural noun, e.g. "hosts").

    False after a dry run or a "no" (the caller does nothing and exits 0 or 1); raises
    InvalidInput when many objects would be touched and nobody can be asked.
    `ask_for_one`: one object that may stand for many (a target a server resolves).
    """
    if dry_run:
        for name in objects:
            console.print(f"would {verb} {escape(name)}", highlight=False)
        return False
    if yes or (len(objects) <= 1 and not ask_for_one):
        return True
    many = len(objects) > 1
    what = f"{len(objects)} {kind} ({_listed(objects)})" if many else objects[0]
    answer = _ask_terminal(f"{verb} {what}?")
    if answer is None:
        raise InvalidInput(
            f"not going to {verb} {what} without a confirmation, and there is no terminal "
            "to ask on: pass --yes to go ahead, or --dry-run to see what would be touched",
            field="--yes",
        )
    return answer


def declined(verb: str) -> typer.Exit:
    """What to raise after a "no": nothing was done, and the exit status says so."""
    console.print(f"nothing done: did not {verb}", highlight=False)
    return typer.Exit(1)


def remove_each(
    kind: str,
    names: Sequence[str],
    remove: Callable[[str], object],
    *,
    yes: bool,
    dry_run: bool,
    ask_for_one: bool = False,
) -> None:
    """Remove each named `kind` once confirmed (see `go_ahead`); a failure is reported
    with its name and the others still go; the exit status is 1 if any failed."""
    if not go_ahead("remove", f"{kind}s", names, yes=yes, dry_run=dry_run, ask_for_one=ask_for_one):
        if dry_run:
            return
        raise declined("remove")
    failed = 0
    for name in names:
        try:
            remove(name)
            console.print(f"removed {kind} [bold]{escape(name)}[/]")
        except ProvisorError as exc:
            failed += 1
            err_console.print(f"[red]error[/]: {escape(name)}: {escape(exc.message)}")
    if failed:
        raise typer.Exit(1)
