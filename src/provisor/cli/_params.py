"""The inputs of `provisor up`: `-p NAME=VALUE`, and ways to give a secret that keep it
off the command line (where `ps` and shell history show it to others).

- `-p NAME=@FILE`: the contents of FILE (one final newline dropped); `@@` stands for
  a literal `@` at the start of a value;
- `-p NAME=-`: standard input, read once (one final newline dropped);
- a parameter left out: the environment variable `PROVISOR_INPUT_<NAME>` (upper-case;
  parameter names are lower-case, so the mapping is one to one);
- a secret parameter left out, on a terminal: asked for, without echo.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from provisor.core.errors import InvalidInput
from provisor.core.names import check_tag_key

MAX_VALUE = 64 * 1024  # bytes of a value read from a file or standard input
ENV_PREFIX = "PROVISOR_INPUT_"


def _text(data: bytes, where: str, name: str) -> str:
    if len(data) > MAX_VALUE:
        raise InvalidInput(
            f"{where} holds more than {MAX_VALUE} bytes; a parameter value is at most that",
            field=f"param.{name}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not UTF-8 text", field=f"param.{name}") from None
    # What `echo secret > file` and a terminal's Enter add; the rest is kept as it is.
    return text.removesuffix("\n").removesuffix("\r")


def _from_file(path: Path, name: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_VALUE + 1)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path} for parameter {name}: {exc.strerror or exc}",
            field=f"param.{name}",
        ) from None
    return _text(data, str(path), name)


def read_parameters(
    items: Sequence[str],
    secrets: Sequence[str],
    *,
    declared: Collection[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    interactive: bool | None = None,
    ask: Callable[[str], str] = getpass.getpass,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """The values of `-p` options, then those left out from the environment, then the
    missing `secrets` asked for (on a terminal).

    `declared` names the blueprint's parameters when they are known here: a variable
    for any other is left alone (it may be meant for another blueprint). Unknown (a
    blueprint in a server's catalog), every `PROVISOR_INPUT_*` is sent for the server
    to check. `environ`, `stdin`, `interactive`, `ask` and `warn` default to the
    process's environment, standard input, whether it is a terminal, `getpass` and a
    line on standard error.
    """
    source = stdin if stdin is not None else sys.stdin.buffer
    on_terminal = sys.stdin.isatty() if interactive is None else interactive
    say = warn or (lambda line: print(line, file=sys.stderr))
    values: dict[str, str] = {}
    read_stdin: str | None = None
    for item in items:
        key, sep, raw = item.partition("=")
        name = check_tag_key(key.strip(), field="param")
        if not sep:
            raise InvalidInput(
                f"expected NAME=VALUE, NAME=@FILE or NAME=- after -p, got {name!r}",
                field=f"param.{name}",
            )
        if raw == "-":
            if read_stdin is not None:
                raise InvalidInput(
                    f"-p {name}=-: standard input is read once, and -p {read_stdin}=- "
                    "reads it already; give one of them from a file (NAME=@FILE)",
                    field=f"param.{name}",
                )
            read_stdin = name
            values[name] = _text(source.read(MAX_VALUE + 1), "standard input", name)
        elif raw.startswith("@@"):
            values[name] = raw[1:]
        elif raw.startswith("@"):
            values[name] = _from_file(Path(raw[1:]).expanduser(), name)
        else:
            values[name] = raw.strip()
            if name in secrets:
                say(
                    f"warning: the secret parameter {name} given on the command line is "
                    f"visible to other users (ps) and kept in shell history; use "
                    f"-p {name}=@FILE or -p {name}=-, or leave it out to be asked"
                )
    for variable, value in (os.environ if environ is None else environ).items():
        name = variable.removeprefix(ENV_PREFIX).lower()
        if not variable.startswith(ENV_PREFIX) or not name or name in values:
            continue
        if declared is None or name in declared:
            values[name] = _text(value.encode(), f"${variable}", name)
    missing = [name for name in secrets if name not in values]
    if missing and on_terminal:  # getpass reads the terminal itself, not standard input
        for name in missing:
            values[name] = ask(f"{name} (secret, not shown): ")
    return values


__all__ = ["ENV_PREFIX", "MAX_VALUE", "read_parameters"]
