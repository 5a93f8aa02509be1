"""Regular expressions that users write (smart-group rules, parameter patterns), compiled
with RE2: matching takes time linear in the text whatever the pattern, so a pattern
like `(a+)+$` cannot stall a worker the way a backtracking engine lets it.

RE2 has no backreferences, lookaround, atomic groups or possessive repeats (they are
what makes backtracking necessary); a pattern that uses one is refused, with what to
write instead where there is something. `\\d`, `\\w` and `\\s` are ASCII classes, and
the end of the text is `\\z` (or `$`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import re2

__all__ = ["MAX_PATTERN", "RegexError", "UserRegex", "compile_regex"]

MAX_PATTERN = 1024
"""The longest pattern accepted, in characters."""

# RE2's own limit on the compiled program; a pattern over it is refused ("pattern
# too large"), so a short pattern cannot grow into a large automaton either.
_MAX_MEMORY = 1 << 20

_HINTS = (
    ("invalid escape sequence: \\", "123456789", "backreferences are not supported"),
    ("invalid perl operator: (?=", "", "lookahead is not supported"),
    ("invalid perl operator: (?!", "", "lookahead is not supported"),
    ("invalid perl operator: (?<=", "", "lookbehind is not supported"),
    ("invalid perl operator: (?<!", "", "lookbehind is not supported"),
    ("invalid perl operator: (?P=", "", "backreferences are not supported"),
    ("invalid perl operator: (?>", "", "atomic groups are not supported"),
    ("bad repetition operator: ", "", "possessive repeats (*+, ++, ?+) are not supported"),
    ("invalid escape sequence: \\Z", "", "write \\z (or $) for the end of the text"),
    ("invalid repetition size", "", "a count in {} is at most 1000"),
)


class RegexError(ValueError):
    """A pattern RE2 refuses: `message` says why, `offset` (0-based) where, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class UserRegex:
    """A compiled user pattern; `pattern` is the text as written."""

    pattern: str
    _compiled: re2._Regexp[str]

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text`."""
        return self._compiled.search(text) is not None

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches the whole of `text`."""
        return self._compiled.fullmatch(text) is not None


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each refusal on stderr itself
    options.max_mem = _MAX_MEMORY
    return options


@functools.lru_cache(maxsize=256)  # a rule is parsed each time its group is used
def compile_regex(pattern: str) -> UserRegex:
    """`pattern` compiled with RE2; raises `RegexError` saying what is wrong and where."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(
            f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN}", MAX_PATTERN
        )
    if "\0" in pattern:
        raise RegexError("the pattern contains a NUL character", pattern.index("\0"))
    try:
        return UserRegex(pattern, re2.compile(pattern, _options()))
    except re2.error as exc:
        raise _explained(pattern, exc) from None


def _explained(pattern: str, exc: re2.error) -> RegexError:
    raw = exc.args[0] if exc.args else str(exc)
    reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    # RE2 ends most reasons with the fragment it stopped at: "missing ]: [a-".
    _, colon, fragment = reason.rpartition(": ")
    if fragment == "(?P" and "(?P=" in pattern:  # RE2 names only the start of `(?P=name)`
        fragment, reason = "(?P=", "invalid perl operator: (?P="
    offset = pattern.find(fragment) if colon and fragment else -1
    message = f"invalid regular expression (RE2 syntax): {reason}"
    for prefix, next_chars, hint in _HINTS:
        if reason.startswith(prefix):
            rest = reason[len(prefix) :]
            if not next_chars or (rest[:1] and rest[:1] in next_chars):
                message += f"; {hint}"
                break
    return RegexError(message, offset if offset >= 0 else None)
