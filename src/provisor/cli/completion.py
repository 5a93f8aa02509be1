"""`provisor completion bash|zsh|fish`: the shell's completion script, printed.

Nothing is written to a shell's start-up files: the user puts the line that loads it
where they want it (docs: README, "Shell completion"). The script calls `provisor`
back with `_PROVISOR_COMPLETE=complete_SHELL` (Typer's protocol) to ask what fits.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

# Typer's own completion (what --show-completion prints and answers), which it does not
# export by name; tests/test_cli_overview.py catches a Typer that moves them.
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

# Typer registers its shell classes only for apps with add_completion=True (which also
# adds --install-completion, an option that edits the user's rc files). Registered here,
# with the root command, so that `_PROVISOR_COMPLETE` is answered in Typer's format.
completion_init()

PROGRAM = "provisor"
COMPLETE_VAR = "_PROVISOR_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish")]) -> None:
    """Print the completion script of a shell.

    bash: `eval "$(provisor completion bash)"` in ~/.bashrc; zsh: the same with zsh in
    ~/.zshrc (after compinit); fish: `provisor completion fish >
    ~/.config/fish/completions/provisor.fish`."""
    print(get_completion_script(prog_name=PROGRAM, complete_var=COMPLETE_VAR, shell=shell.value))
