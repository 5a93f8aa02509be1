"""`provisor keys ...`: SSH keys stored by name, for hosts whose credentials are `key:NAME`.

Jobs run through the server (and every API caller) log in only with stored keys; the
local CLI may also name a key file (`key:/path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisor.cli._context import context
from provisor.cli.output import Format, console, emit_json, read_input_file, table
from provisor.core.errors import InvalidInput

app = typer.Typer(help="SSH keys stored for hosts to log in with.", no_args_is_help=True)


@app.command("add")
def add(
    name: str,
    file: Annotated[Path, typer.Argument(help="the private key file (OpenSSH or PEM)")],
) -> None:
    """Store a private key under NAME, sealed; hosts use it with --credentials key:NAME."""
    from provisor.services import keys

    try:
        text = read_input_file(file, field="file").decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file} is not a text key file", field="file") from None
    view = keys.add_key(context(), name, text)
    console.print(f"stored key [bold]{view.name}[/] ({view.fingerprint})")


@app.command("list")
def list_(output: Annotated[Format, typer.Option("--output")] = Format.table) -> None:
    """Stored keys: name, fingerprint (never the private half)."""
    from provisor.services import keys

    found = keys.list_keys(context())
    if output is Format.json:
        emit_json(found)
        return
    table(
        ["name", "fingerprint", "created"], [(k.name, k.fingerprint, k.created_at) for k in found]
    )


@app.command("rm")
def rm(name: str) -> None:
    """Forget a stored key (hosts naming it can no longer log in with it)."""
    from provisor.services import keys

    keys.remove_key(context(), name)
    console.print(f"removed key [bold]{name}[/]")
