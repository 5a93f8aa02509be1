"""The `provisor` command.

Only `main` lives here, and it imports nothing heavy: `provisor --version` answers
before any library loads, and every other command loads its own module when it runs
(see `_root`). `app`, the root typer app, is imported on first use of the name.
"""

from __future__ import annotations

import os
import sys

from provisor import __version__

# Not typing.TYPE_CHECKING: importing typing (and re with it) would cost more than the
# rest of `provisor --version` over the bare interpreter; type checkers know this name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeGuard

    from pydantic import ValidationError

    from provisor.cli._root import app


__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":  # `from provisor.cli import app`, `typer provisor.cli ...`
        from provisor.cli._root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "app"])


def main() -> None:
    """Entry point: user errors are one clear line, never a traceback."""
    if sys.argv[1:] in (["--version"], ["-V"]):  # the same answer as the root's option
        print(f"provisor {__version__}")
        return
    from provisor.cli.thin_run import run
    from provisor.core.errors import ProvisorError

    try:
        status = run(sys.argv[1:])  # `run --server` in its plain forms: no framework
        if status is not None:
            sys.exit(status)
        import logging

        logging.basicConfig(level=os.environ.get("PROVISOR_LOG_LEVEL", "WARNING").upper())
        if "_PROVISOR_COMPLETE" in os.environ:  # a shell asks what fits: Typer's answer
            import provisor.cli.completion  # noqa: F401  (registers the shells it answers)
        from provisor.cli._root import app

        app()
    except ProvisorError as exc:
        _error(f"[red]error[/]: {_escape(str(exc))}")
        sys.exit(2 if exc.status < 500 else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if _is_validation_error(exc):  # pydantic's, loaded by the command if it needs it
            if exc.title != "Settings":
                raise
            for error in exc.errors():  # a bad PROVISOR_* variable or provisor.toml entry
                variable = "PROVISOR_" + "_".join(str(p) for p in error["loc"]).upper()
                message = error["msg"].removeprefix("Value error, ")
                _error(f"[red]error[/]: {variable}: {_escape(message)}")
            sys.exit(2)
        if os.environ.get("PROVISOR_DEBUG"):  # a bug: say so briefly, traceback on demand
            raise
        _error(
            f"[red]internal error[/]: {type(exc).__name__}: {_escape(str(exc))}\n"
            "(set PROVISOR_DEBUG=1 to see the traceback; please report it)"
        )
        sys.exit(70)


def _is_validation_error(exc: Exception) -> TypeGuard[ValidationError]:
    pydantic = sys.modules.get("pydantic")  # not loaded: it cannot have raised
    return pydantic is not None and isinstance(exc, pydantic.ValidationError)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _error(markup: str) -> None:
    from provisor.cli.output import err_console

    err_console.print(markup, highlight=False)
