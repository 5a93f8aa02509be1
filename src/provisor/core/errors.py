"""The errors every layer raises; each says what is wrong and where."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only named in a signature: every command imports this module
    from pydantic import ValidationError


class ProvisorError(Exception):
    """An error meant for the user: a message, and where the problem is.

    `field` names the offending input (a CLI option, a JSON field, a rule);
    `source`, `line` and `column` locate it in a file or expression.
    """

    status = 400  # the HTTP status the API answers with

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.source = source
        self.line = line
        self.column = column

    @property
    def location(self) -> str:
        """`file:line:column` with the parts that are known, e.g. `hosts.ini:12`,
        `rule:1:17` (a one-line expression given as a field), or just the field."""
        origin = self.source or self.field
        line = self.line
        if line is None and self.column is not None:
            line = 1
        parts = [str(p) for p in (origin, line, self.column) if p is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.message}" if where else self.message


class InvalidInput(ProvisorError, ValueError):
    """Input that is malformed or out of bounds.

    Also a ValueError, so pydantic validators that raise it report the field.
    """


def invalid_input(exc: ValidationError) -> InvalidInput:
    """pydantic's first complaint as an InvalidInput that names the field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return InvalidInput(first["msg"].removeprefix("Value error, "), field=field)


class Unauthenticated(ProvisorError):
    """No credential, or one that is unknown, expired or revoked."""

    status = 401


class Forbidden(ProvisorError):
    """A known caller whose role does not allow what it asked for."""

    status = 403


class NotFound(ProvisorError):
    """A named thing that does not exist."""

    status = 404


class Conflict(ProvisorError):
    """A name that is already taken, or a state that forbids the change."""

    status = 409


class ParseErrors(InvalidInput):
    """Several located errors found in one file; nothing was applied."""

    def __init__(self, errors: list[ProvisorError], *, source: str | None = None) -> None:
        self.errors = errors
        first = errors[0] if errors else None
        summary = f"{len(errors)} error(s)"
        super().__init__(
            summary if first is None else f"{summary}; first: {first.message}",
            source=source,
            line=first.line if first else None,
        )

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
