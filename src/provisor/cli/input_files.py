"""Reading a file the user named on the command line (light: the warm path uses it)."""

from __future__ import annotations

from pathlib import Path

from provisor.core.errors import InvalidInput


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
