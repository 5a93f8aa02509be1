"""The root of the `provisor` command: its options, and every sub-command loaded lazily.

Each sub-command lives in its own module with the libraries it needs (the store, SSH,
HTTP...). The root knows them by name from `COMMANDS` and imports a module only when
its command runs or shows its help, so `provisor hosts list` never pays for the imports
of `provisor run`. The root's own help lists the commands with the one-line summaries
kept here; tests/test_cli_startup.py checks they are the commands' own.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from provisor import __version__
from provisor.cli._context import set_tenant

if TYPE_CHECKING:  # typer's own copy of click, named for the type checker only
    from typer._click import Command, Context, HelpFormatter
    from typer._click.shell_completion import CompletionItem


class Entry(NamedTuple):
    module: str  # in provisor.cli
    attribute: str  # a command function, or a typer.Typer of sub-commands
    summary: str  # the first paragraph of its help, line breaks included (rich keeps them)


# In the order the root's help and docs/cli.md list them (typer's: commands, then groups).
COMMANDS: dict[str, Entry] = {
    "events": Entry(
        "events", "events", "Show the audit log: who did what, to what, when, and how it went."
    ),
    "run": Entry("fleet", "run", "Run a command on every host of TARGET (pssh)."),
    "copy": Entry(
        "fleet", "copy", "Copy local files and directories to every host, keeping modes (pscp)."
    ),
    "fetch": Entry(
        "fleet",
        "fetch",
        "Fetch a file or directory from every host into LOCAL_DIR/<host>/ (pslurp).",
    ),
    "kill": Entry(
        "fleet",
        "kill",
        "Signal matching processes on every host and count them per host (pnuke).",
    ),
    "up": Entry(
        "deployments",
        "up",
        "Deploy a blueprint: validate, (approval), launch, configure, deliver.",
    ),
    "down": Entry("deployments", "down", "Terminate every machine of a deployment and forget it."),
    "status": Entry("deployments", "status", "A deployment's machines, current step and outputs."),
    "approve": Entry(
        "deployments",
        "approve",
        "Let a deployment that waits for approval go ahead (the background worker, started\n"
        "if none runs, deploys it).",
    ),
    "reject": Entry("deployments", "reject", "Refuse a deployment that waits for approval."),
    "params": Entry(
        "deployments", "params", "Runtime parameters of a deployment, and who is waiting on what."
    ),
    "health": Entry(
        "health",
        "health",
        "Machines' health: state, since when, the last checks' results; with --set, change\n"
        "a deployment's checks from its blueprint's (docs/operations.md, \"Health checks\").",
    ),
    "stop": Entry(
        "lifecycle",
        "stop",
        "Stop a deployment's machines: powered off, their disks, addresses and inventory\n"
        "hosts kept (`provisor start` brings them back; `provisor down` removes them).",
    ),
    "start": Entry(
        "lifecycle",
        "start",
        "Start a stopped deployment's machines again; it is ready once each answers SSH.",
    ),
    "login": Entry(
        "identity",
        "login",
        "Check a token against a server and keep it for `--server URL` (file mode 0600).",
    ),
    "logout": Entry(
        "identity",
        "logout",
        "Forget the token kept for a server (it stays valid: revoke it to end it).",
    ),
    "completion": Entry("completion", "completion", "Print the completion script of a shell."),
    "server": Entry("server", "server", "Run the REST API (and, later, the portal and scheduler)."),
    "hosts": Entry("hosts", "app", "Manage the inventory of hosts."),
    "groups": Entry("groups", "app", "Manage static and smart groups of hosts."),
    "jobs": Entry("fleet", "jobs_app", "Past fleet jobs and their per-host results."),
    "config": Entry(
        "changes",
        "app",
        "Fleet configuration changes as transactions: plan, apply in batches, check for "
        "drift, roll back exactly what an apply changed.",
    ),
    "blueprints": Entry(
        "blueprints", "app", "Blueprints: versioned templates of multi-machine services."
    ),
    "lease": Entry("lifecycle", "lease_app", "Leases: when a deployment ends."),
    "worker": Entry(
        "worker",
        "worker_app",
        "The worker that moves deployments: run it here, or see, start and stop the "
        "background one that `up`, `approve` and `reject` start when none runs.",
    ),
    "deployments": Entry("deployments", "deployments_app", "Deployments of blueprints."),
    "providers": Entry(
        "providers",
        "app",
        "Infrastructure providers: local (built in) and the ones you configure.",
    ),
    "notifiers": Entry(
        "alerts", "notifiers_app", "Where alerts go: log, email, webhook or a command."
    ),
    "alerts": Entry(
        "alerts", "alerts_app", "Alerts raised by rules over events: list, acknowledge, dispatch."
    ),
    "keys": Entry("keys", "app", "SSH keys stored for hosts to log in with."),
    "backup": Entry(
        "backups", "app", "Backups of deployments' machines: take, list, verify, restore, delete."
    ),
    "patch": Entry(
        "patches",
        "app",
        "The fleet's patch catalog: analyze what hosts could upgrade, list it, apply it.",
    ),
    "users": Entry("identity", "users_app", "Users and their role in each tenant."),
    "tokens": Entry("identity", "tokens_app", "API tokens of users."),
}


def load(name: str) -> Command:
    """The click command of the sub-command `name`, built as `add_typer`/`command` on the
    root would build it (same options, help and settings)."""
    entry = COMMANDS[name]
    found = getattr(importlib.import_module(f"provisor.cli.{entry.module}"), entry.attribute)
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    if isinstance(found, typer.Typer):
        holder.add_typer(found, name=name)
    else:
        holder.command(name)(found)
    return typer.main.get_group(holder).commands[name]


class _Commands(MutableMapping[str, "Command"]):
    """The root's sub-commands by name: every name known at once, each loaded when used.

    Fixed: `COMMANDS` is the one list of them.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._loaded:
            self._loaded[name] = load(name)  # KeyError for a name that is no command
        return self._loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        raise TypeError(f"{name}: provisor's commands are listed in provisor.cli._root")

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"{name}: provisor's commands are listed in provisor.cli._root")

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LazyGroup(TyperGroup):
    """A typer group whose sub-commands load on first use.

    Listing the commands (the root's help, completing a command name) shows each
    command's name and summary without loading it; running a command, asking for its
    help or completing its options loads its module.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        assert not self.commands, "the root's commands come from COMMANDS"
        self.commands = _Commands()
        self._listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if self._listing and cmd_name in COMMANDS:
            summary = COMMANDS[cmd_name].summary
            # Whole, as one paragraph the help wraps (click cuts a long help short).
            return TyperCommand(cmd_name, help=summary, short_help=" ".join(summary.split()))
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        with self._summaries():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Context, incomplete: str) -> list[CompletionItem]:
        with self._summaries():
            return super().shell_complete(ctx, incomplete)

    @contextmanager
    def _summaries(self) -> Iterator[None]:
        """While it is entered, the group hands out summaries instead of loaded commands."""
        self._listing = True
        try:
            yield
        finally:
            self._listing = False


# The root's help is plain text, not rich's panels: rich's help rendering costs more
# than all the rest of `provisor --help` (150 ms against 60). A command's own help,
# which loads that command anyway, keeps them.
app = typer.Typer(
    name="provisor",
    cls=LazyGroup,
    help="Provision, configure, operate and retire multi-machine services.",
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"provisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="print the version"),
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", envvar="PROVISOR_TENANT", help="act for this tenant")
    ] = None,
) -> None:
    set_tenant(tenant)
