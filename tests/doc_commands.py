"""The commands the docs show, found in their Markdown and checked against the real CLI.

Code blocks (fenced ```sh, ```console, ```text or plain, and indented ones) of README.md
and docs/*.md hold commands as a user types them: each is parsed by the CLI's own
parser, without running it, so the command path exists and every option and argument
is accepted. Usage lines (`provisor patch list [TARGET] [--security]`) are parsed in
each form they allow. Inline code in prose (`provisor backup stores add`) names
commands: their path and the options they name must exist. docs/cli.md is left out:
the CLI writes it.

Shell syntax is read as a shell reads it: `$ ` prompts, `\\` continuations, `# ...`
comments, `;`, `|`, `&&` and `&` between commands, `> file` and `< file`, and
`NAME=value` (or a cron schedule) in front of the command. Placeholders stay words
(`HOST`, `<name>`), except those a number must stand for (PLACEHOLDER_VALUES).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("docs/cli.md",)  # written from the CLI: nothing to check
NO_COMMANDS = {"yaml", "yml", "json", "python", "py", "ebnf", "ini", "toml", "ndjson"}
PROVISOR = "provisor"
TESTBED = "python -m provisor.testing"

# A placeholder where the CLI wants a number parses as that number (`alerts show ID`).
PLACEHOLDER_VALUES = {"ID": "1", "N": "1", "SECONDS": "1", "PORT": "22"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
_INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")  # a span may wrap a line
_USAGE = re.compile(r"\[(?:-|[A-Z<]|\.\.\.)")  # `[--opt ...]`, `[TARGET]`, `[...]`
_PLACEHOLDER = re.compile(r"<[A-Za-z][\w.-]*>")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_CRON_FIELD = re.compile(r"[\d*/,-]+")
_PYTHON = re.compile(r"(?:\S*/)?python3?(?:\.\d+)?")
_OPERATORS = {";", "|", "||", "&", "&&", "(", ")"}
_REDIRECTIONS = {">", ">>", "<", "<<<"}


@dataclass(frozen=True)
class DocCommand:
    """One command a doc shows: where, as written, and the words its program gets."""

    path: str  # relative to the repository
    line: int
    text: str  # as written: prompt, continuations and comment gone
    program: str  # PROVISOR or TESTBED
    args: tuple[str, ...]  # the words after the program, quoting undone
    kind: str  # "command", "usage" (a synopsis) or "mention" (inline in prose)
    output: tuple[str, ...] = field(default=(), compare=False)  # shown after it ($ blocks)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def doc_files() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md"))
    return [
        ROOT / "README.md",
        *(p for p in docs if p.relative_to(ROOT).as_posix() not in GENERATED),
    ]


@cache
def all_commands() -> tuple[DocCommand, ...]:
    return tuple(c for path in doc_files() for c in commands_in(path))


def documented(path: str, command_line: str) -> DocCommand:
    """The command `command_line` (as a shell splits it) that the doc `path` shows.

    A test that runs a documented command names it with this: when the doc changes the
    command, the test fails and says so, instead of running what the doc no longer shows.
    """
    program, args = _program(shlex.split(command_line))
    for command in all_commands():
        shows = (command.path, command.kind, command.program, command.args)
        if shows == (path, "command", program, tuple(args)):
            return command
    raise AssertionError(f"{path} no longer shows `{command_line}`: update the test with the doc")


def commands_in(path: Path, text: str | None = None) -> list[DocCommand]:
    """Every command of the Markdown file `path` (or of `text`, named `path`)."""
    name = path.relative_to(ROOT).as_posix() if path.is_absolute() else str(path)
    lines = (path.read_text() if text is None else text).splitlines()
    found: list[DocCommand] = []
    prose = list(lines)
    for first, language, block in _code_blocks(lines):
        for k in range(first, first + len(block)):
            prose[k - 1] = ""
        if language.lower() not in NO_COMMANDS:
            found += _block_commands(name, first, block)
    found += _mentions(name, "\n".join(prose))
    return sorted(found, key=lambda c: c.line)


def _code_blocks(lines: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of each fenced and indented code block; a
    fence's own lines are not part of its block."""
    k = 0
    while k < len(lines):
        opened = _FENCE.match(lines[k])
        if opened:
            fence, language = opened.groups()
            end = k + 1
            while end < len(lines) and not lines[end].lstrip().startswith(fence[0] * len(fence)):
                end += 1
            yield k + 2, language, lines[k + 1 : end]
            k = end + 1
            continue
        if (
            lines[k].startswith("    ")
            and lines[k].strip()
            and (k == 0 or not lines[k - 1].strip())
        ):
            end = k
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            yield k + 1, "", [line[4:] for line in lines[k:end]]
            k = end
            continue
        k += 1


def _block_commands(path: str, first: int, block: list[str]) -> list[DocCommand]:
    """The commands of a code block. With `$ ` prompts, only those lines are commands
    and the lines after one are what it prints."""
    prompted = any(line.startswith("$ ") for line in block)
    found: list[DocCommand] = []
    k = 0
    while k < len(block):
        line, number = block[k], first + k
        k += 1
        if prompted and not line.startswith("$ "):
            continue
        logical = line[2:] if prompted else line
        while logical.endswith("\\") and k < len(block):  # a continuation
            logical = logical[:-1] + " " + block[k].strip()
            k += 1
        while _USAGE.search(logical) and k < len(block) and block[k].lstrip().startswith("["):
            logical += " " + block[k].strip()  # a usage line wrapped without `\`
            k += 1
        output: list[str] = []
        while prompted and k < len(block) and not block[k].startswith("$ "):
            output.append(block[k])
            k += 1
        for command in _line_commands(path, number, logical):
            found.append(replace(command, output=tuple(output)))
    return found


def _line_commands(path: str, number: int, line: str) -> list[DocCommand]:
    if _USAGE.search(line):  # no shell syntax: `|` separates alternatives
        words = _strip_comment(line).split()
        program, args = _program(words)
        if program is None:
            return []
        return [
            DocCommand(path, number, _strip_comment(line).strip(), program, tuple(args), "usage")
        ]
    line = _PLACEHOLDER.sub(r"'\g<0>'", line)  # `<name>` is a word, not redirections
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:  # an unclosed quote: wrong if it is a command
        program, _ = _program(line.split())
        if program is None:
            return []
        return [DocCommand(path, number, line.strip(), program, (str(exc),), "broken")]
    found = []
    for simple in _split(tokens):
        program, args = _program(simple)
        if program is not None:
            text = _strip_comment(line).strip()
            found.append(DocCommand(path, number, text, program, tuple(args), "command"))
    return found


def _split(tokens: list[str]) -> Iterator[list[str]]:
    """The simple commands of a line: split at operators, redirections dropped."""
    simple: list[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in _OPERATORS:
            yield simple
            simple = []
        elif token in _REDIRECTIONS:
            skip = True  # and its file
        else:
            simple.append(token)
    yield simple


def _program(words: list[str]) -> tuple[str | None, list[str]]:
    """Which CLI `words` run, and its arguments; (None, []) for any other program."""
    k = 0
    while k < len(words) and (_ASSIGNMENT.fullmatch(words[k]) or _CRON_FIELD.fullmatch(words[k])):
        k += 1
    words = words[k:]
    if words[:1] == [PROVISOR]:
        return PROVISOR, [w for w in words[1:] if w != "..."]
    if len(words) >= 3 and _PYTHON.fullmatch(words[0]) and words[1] == "-m":
        if words[2] == "provisor":
            return PROVISOR, [w for w in words[3:] if w != "..."]
        if words[2] == "provisor.testing":
            return TESTBED, [w for w in words[3:] if w != "..."]
    return None, []


def _strip_comment(line: str) -> str:
    return re.split(r"(?:^|\s)#", line, maxsplit=1)[0]


def _mentions(path: str, prose: str) -> list[DocCommand]:
    found = []
    for span in _INLINE.finditer(prose):
        text = " ".join(span.group(1).split())
        program, args = _program(text.split())
        if program is not None:
            number = prose.count("\n", 0, span.start()) + 1
            found.append(DocCommand(path, number, text, program, tuple(args), "mention"))
    return found


# Checking against the CLI
#
# typer (0.26 on) carries its own copy of click: its commands are not `click.Command`s.
# Only the methods click and typer share are used (`make_context`, `resolve_command`,
# `get_command`, `params`), so a root group that loads its subcommands on demand works
# as well.


@cache
def provisor_command() -> Any:
    """The command tree behind the typer app."""
    from provisor.cli import app

    return typer.main.get_command(app)


def _is_group(command: Any) -> bool:
    return hasattr(command, "resolve_command") and hasattr(command, "list_commands")


def _context(command: Any) -> Any:
    return command.context_class(command, info_name=command.name)


def problem(command: DocCommand) -> str | None:
    """What is wrong with `command` for the CLI it names, or None."""
    if command.kind == "broken":
        return f"not a shell command: {command.args[0]}"
    if command.kind == "mention":
        return _mention_problem(command)
    variants = usage_variants(command.args) if command.kind == "usage" else [list(command.args)]
    for args in variants:
        args = [_placeholder_value(a) for a in args]
        failure = _parse_testbed(args) if command.program == TESTBED else parse_provisor(args)
        if failure is not None:
            shown = "" if command.kind == "command" else f" (as `{shlex.join(args)}`)"
            return f"{failure}{shown}"
    return None


def _placeholder_value(word: str) -> str:
    number = re.fullmatch(r"([A-Z]+)(%?)", word)
    if number and number.group(1) in PLACEHOLDER_VALUES:
        return PLACEHOLDER_VALUES[number.group(1)] + number.group(2)
    return word


def usage_variants(words: tuple[str, ...]) -> list[list[str]]:
    """The command lines a usage line allows, enough to try each part of it: every
    optional part with the first of each `a|b` choice; none of the optional parts; and
    each other choice in turn."""
    parts: list[tuple[bool, list[list[str]]]] = []  # (optional, words as choices)
    for item in re.findall(r"\[[^\]]*\]|\S+", " ".join(words)):
        optional = item.startswith("[")
        inner = item[1:-1].split() if optional else [item]
        choices = [w.removesuffix("...").split("|") for w in inner if w not in ("...", "|")]
        if choices:
            parts.append((optional, choices))
    chosen = [[0] * len(choices) for _, choices in parts]

    def line(include_optional: bool, pick: list[list[int]]) -> list[str]:
        return [
            choices[c][pick[p][c]]
            for p, (optional, choices) in enumerate(parts)
            if include_optional or not optional
            for c in range(len(choices))
        ]

    variants = [line(True, chosen), line(False, chosen)]
    for p, (_, choices) in enumerate(parts):
        for c, alternatives in enumerate(choices):
            for a in range(1, len(alternatives)):
                pick = [list(row) for row in chosen]
                pick[p][c] = a
                variants.append(line(True, pick))
    return variants


def parse_provisor(args: list[str]) -> str | None:
    """Parse `provisor ARGS` as the CLI does before it runs a command: each group's
    options and subcommand, down to the last command's options and arguments. The
    error the CLI would print, or None."""
    command, name, parent, args = provisor_command(), PROVISOR, None, list(args)
    try:
        while _is_group(command):
            options = _leading_options(command, args)
            if options == len(args):
                if not command.invoke_without_command:
                    return f"`{name}` needs a subcommand"
                command.make_context(name, args, parent=parent)
                return None
            ctx = command.make_context(name, args[: options + 1], parent=parent)
            name, command, args = command.resolve_command(ctx, args[options:])
            parent = ctx
        command.make_context(name, args, parent=parent)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug to see
            raise
        return str(exc.format_message())
    return None


def _leading_options(group: Any, args: list[str]) -> int:
    """How many of `args` are the group's own options (with their values), before its
    subcommand."""
    takes_value = {
        opt: not (getattr(p, "is_flag", False) or getattr(p, "count", False))
        for p in group.params
        for opt in p.opts
    }
    k = 0
    while k < len(args) and args[k].startswith("-"):
        k += 2 if takes_value.get(args[k], False) else 1
    return min(k, len(args))


def _parse_testbed(args: list[str]) -> str | None:
    from provisor.testing.__main__ import parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser().parse_args(args)
    except SystemExit:
        return errors.getvalue().strip().splitlines()[-1]
    return None


def _mention_problem(command: DocCommand) -> str | None:
    """A command named in prose: its path must exist, and the options it names."""
    if command.program == TESTBED:
        return _parse_testbed([_placeholder_value(a) for a in command.args])
    current, words = provisor_command(), list(command.args)
    path = [current]
    while _is_group(current) and words and not words[0].startswith("-"):
        if "|" in words[0]:  # `worker status|start|stop`: each must exist
            ctx = _context(current)
            missing = [w for w in words[0].split("|") if current.get_command(ctx, w) is None]
            return f"no command {missing[0]!r} in `{_path_name(path)}`" if missing else None
        current = current.get_command(_context(current), words[0])
        if current is None:
            return f"no command {words[0]!r} in `{_path_name(path)}`"
        path.append(current)
        words.pop(0)
    known = {o for c in path for p in c.params for o in (*p.opts, *p.secondary_opts)}
    # Every command takes the help options the root's context gives them (not a param).
    known |= set(path[0].context_settings.get("help_option_names", ["--help"]))
    if "--" in words:  # what follows is the command run on the hosts, not provisor's
        words = words[: words.index("--")]
    for word in words:
        for option in word.strip("[]").split("|"):
            option = option.split("=")[0]
            if option.startswith("-") and option not in known:
                return f"no option {option} for `{_path_name(path)}`"
    return None


def _path_name(path: list[Any]) -> str:
    return " ".join([PROVISOR, *(c.name for c in path[1:])])
