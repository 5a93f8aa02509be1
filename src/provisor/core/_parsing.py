"""The scaffolding under core's hand-written parsers: tokens, located errors, a cursor.

The rule language (`rules`) and the target language (`targets`) each have their
own tokenizer and grammar; what they share is here. A `Syntax` holds what differs
between the two as parameters (the name in their errors, their limits, how much
of a token a message quotes), so each keeps its own messages exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from provisor.core.errors import InvalidInput

__all__ = ["END", "Parser", "Syntax", "Token"]

END = "end"
"""The kind of the token every token list ends with."""


@dataclass(frozen=True)
class Token:
    """A token as written: its tokenizer's `kind`, its `text`, and its 1-based `column`."""

    kind: str
    text: str
    column: int


@dataclass(frozen=True)
class Syntax:
    """One language's parameters to the toolkit.

    `name` is both the `field` of every error and the word messages use for the
    text ("end of rule", "target is too long"). Tokens of `literal_kinds` are
    described by kind (`string "a"`, `number 12`); others are quoted.
    """

    name: str
    max_length: int
    max_depth: int
    quote_limit: int
    literal_kinds: frozenset[str] = frozenset()

    def shorten(self, text: str, limit: int | None = None) -> str:
        """`text` cut to `limit` characters (`quote_limit` by default), ending in `...`."""
        limit = self.quote_limit if limit is None else limit
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def error(self, message: str, column: int | None = None) -> InvalidInput:
        """An error in the text, at its 1-based `column` when known."""
        return InvalidInput(message, field=self.name, column=column)

    def check_length(self, text: str) -> None:
        """Refuse a text over `max_length` before tokenizing it; points just past the limit."""
        if len(text) > self.max_length:
            raise self.error(
                f"{self.name} is too long ({len(text)} characters; at most {self.max_length})",
                self.max_length + 1,
            )

    def describe(self, token: Token) -> str:
        """The token as a message names it: `end of rule`, `string "a"`, `'&'`."""
        if token.kind == END:
            return f"end of {self.name}"
        if token.kind in self.literal_kinds:
            return f"{token.kind} {self.shorten(token.text)}"
        return f"'{self.shorten(token.text)}'"


TokenT = TypeVar("TokenT", bound=Token)


class Parser(Generic[TokenT]):
    """A cursor over a token list that ends with an `END` token, and the nesting depth.

    Subclasses write the grammar, one method per rule, on top of `token`,
    `advance`, `at` and `expect`; they call `enter` and `leave` around every
    construct that nests, so that a hostile text cannot exhaust the stack.
    """

    def __init__(self, tokens: Sequence[TokenT], syntax: Syntax) -> None:
        self.tokens = tokens
        self.syntax = syntax
        self.pos = 0
        self.depth = 0

    @property
    def token(self) -> TokenT:
        return self.tokens[self.pos]

    def advance(self) -> TokenT:
        """The current token; moves past it unless it is the end (which stays current)."""
        token = self.tokens[self.pos]
        if token.kind != END:
            self.pos += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        return self.token.kind == kind and self.token.text == text

    def describe(self, token: Token) -> str:
        return self.syntax.describe(token)

    def expect(self, kind: str, text: str, context: str) -> TokenT:
        """Consume the token `text`, or fail with "expected 'text' <context>, found ..."."""
        if not self.at(kind, text):
            raise self.syntax.error(
                f"expected '{text}' {context}, found {self.describe(self.token)}",
                self.token.column,
            )
        return self.advance()

    def enter(self, token: Token) -> None:
        """One level deeper, opened by `token`; fails past the syntax's `max_depth`."""
        self.depth += 1
        if self.depth > self.syntax.max_depth:
            raise self.syntax.error(
                f"{self.syntax.name} is nested too deeply (at most {self.syntax.max_depth} levels)",
                token.column,
            )

    def leave(self) -> None:
        self.depth -= 1
