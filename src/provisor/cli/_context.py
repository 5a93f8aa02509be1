"""The service context a CLI invocation acts in, opened once and on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the services (and the database layer) load when first needed
    from provisor.services.context import Context, Settings

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="PROVISOR_SERVER",
        help="act through this provisor server, with the token `provisor login` kept "
        "(or PROVISOR_TOKEN)",
    ),
]

_options: dict[str, str | None] = {"tenant": None}
_context: list[Context] = []


def set_tenant(tenant: str | None) -> None:
    _options["tenant"] = tenant


def context() -> Context:
    if not _context:
        from provisor.services.context import open_context

        _context.append(open_context(tenant=_options["tenant"]))
    return _context[0]


def current_tenant() -> str | None:
    """The tenant given on the command line, if any (the server's default otherwise)."""
    return _options["tenant"]


def settings() -> Settings:
    """provisor's settings: the environment, then provisor.toml, then the defaults."""
    from provisor.services.settings import get_settings  # light: no store

    return get_settings()
