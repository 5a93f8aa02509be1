"""`provisor users`, `provisor tokens`, `provisor login`: who may call the server.

Without `--server` the CLI acts as the owner of the local data directory and manages
every user and token there. A token is printed once, when made; `provisor login URL`
keeps one per server in `credentials.json` in the data directory (mode 0600), which
`--server` then uses (or PROVISOR_TOKEN, which wins).
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

from provisor.cli._context import context, settings
from provisor.cli.credentials import forget_token, save_token
from provisor.cli.output import Format, console, emit_json, table
from provisor.core.access import Role
from provisor.core.errors import InvalidInput
from provisor.core.timespec import parse_duration

users_app = typer.Typer(help="Users and their role in each tenant.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens of users.", no_args_is_help=True)

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]
TOKEN_ENV = "PROVISOR_TOKEN"  # noqa: S105 - a variable name, not a secret


@users_app.command("add")
def users_add(
    name: str,
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the role is in")],
    role: Annotated[Role, typer.Option("--role", help="admin, operator, requester, ...")],
) -> None:
    """Give a user a role in a tenant (the user is made when new; a role there is changed)."""
    from provisor.services import identity

    user = identity.grant(context(), name, tenant=tenant, role=role)
    roles = ", ".join(f"{m.role.value} in {m.tenant}" for m in user.memberships)
    console.print(f"user [bold]{user.name}[/]: {roles}")


@users_app.command("list")
def users_list(output: OutputOption = Format.table) -> None:
    """Users and their roles."""
    from provisor.services import identity

    found = identity.list_users(context())
    if output is Format.json:
        emit_json(found)
        return
    table(
        ["user", "roles", "created"],
        [
            (
                u.name,
                ", ".join(f"{m.role.value}@{m.tenant}" for m in u.memberships),
                u.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for u in found
        ],
    )


@users_app.command("revoke")
def users_revoke(
    name: str, tenant: Annotated[str, typer.Option("--tenant", help="the tenant to leave")]
) -> None:
    """Take a user's role in a tenant away; the user and their tokens stay."""
    from provisor.services import identity

    identity.revoke_membership(context(), name, tenant=tenant)
    console.print(f"user [bold]{name}[/] has no role in {tenant} any more")


@users_app.command("rm")
def users_rm(name: str) -> None:
    """Remove a user with every role and token."""
    from provisor.services import identity

    identity.remove_user(context(), name)
    console.print(f"removed user [bold]{name}[/] and their tokens")


@tokens_app.command("add")
def tokens_add(
    user: str,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="where it acts (default: the user's only tenant)"),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="what the token is for")] = "",
    expires: Annotated[
        str, typer.Option("--expires", help="lifetime: 30m, 12h, 90d, 52w (at most 366d)")
    ] = "90d",
) -> None:
    """Make a token for a user; it is printed once, on standard output, and kept nowhere."""
    from provisor.services import identity

    try:
        lifetime = parse_duration(expires, units="mhdw")
    except ValueError as exc:
        raise InvalidInput(str(exc), field="expires") from None
    made = identity.add_token(context(), user, tenant=tenant, name=name, lifetime=lifetime)
    print(made.secret)  # alone on stdout, so `$(provisor tokens add ...)` captures it
    expiry = made.token.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    typer.echo(f"token {made.token.id} for {user}, valid until {expiry}", err=True)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Argument(help="one user's only")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Tokens (never their secrets): who, what for, until when, and whether revoked."""
    from provisor.services import identity

    found = identity.list_tokens(context(), user)
    if output is Format.json:
        emit_json(found)
        return
    table(
        ["id", "user", "tenant", "name", "state", "expires"],
        [
            (t.id, t.user, t.tenant, t.name, t.state, t.expires_at.strftime("%Y-%m-%d %H:%M"))
            for t in found
        ],
    )


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token now; requests with it are refused from then on."""
    from provisor.services import identity

    revoked = identity.revoke_token(context(), token_id)
    console.print(f"revoked token {revoked.id} of [bold]{revoked.user}[/]")


def login(
    url: Annotated[str, typer.Argument(help="the server, e.g. https://provisor.example:8443")],
) -> None:
    """Check a token against a server and keep it for `--server URL` (file mode 0600).

    The token is read from PROVISOR_TOKEN, else from standard input when it is not a
    terminal, else asked for without echo; never from the command line.
    """
    token = os.environ.get(TOKEN_ENV)
    if not token:
        token = sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass("Token: ")
    token = token.strip()
    if not token:
        raise InvalidInput("no token given", field="token")
    from provisor.cli.remote import whoami

    me = whoami(url, token)
    save_token(settings().home, url, token)
    console.print(
        f"logged in to {url} as [bold]{me['user']}[/] "
        f"({me['role']} in {me['tenant']}); `--server {url}` uses this token now"
    )


def logout(url: Annotated[str, typer.Argument(help="the server to forget")]) -> None:
    """Forget the token kept for a server (it stays valid: revoke it to end it)."""
    if forget_token(settings().home, url):
        console.print(f"forgot the token for {url}")
    else:
        console.print(f"no token was kept for {url}")
