"""The smart-group rule language: a small boolean language over a host's fields.

A smart group is a rule evaluated against every host when the group is used::

    facts.os == "debian" and tags.env == "prod"
    tags.role in ["web", "api"] and not (state == "retired")
    name =~ "^web[0-9]+$"
    facts.kernel

`parse_rule(text)` turns the text into an immutable `Rule`; `Rule.matches(host)`
evaluates it against a host given as a plain mapping (see `Rule.matches`);
`str(rule)` is a canonical text that parses back to an equal rule. The grammar
and the semantics are documented in docs/groups.md.

The tokenizer and the recursive-descent parser are written by hand, on the
scaffolding of `provisor.core._parsing`; every error is an `InvalidInput` with
`field="rule"` and the 1-based column of the offending token.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from provisor.core._parsing import END, Parser, Syntax, Token
from provisor.core.errors import InvalidInput
from provisor.core.names import check_tag_key
from provisor.core.regex import RegexError, UserRegex, compile_regex

__all__ = [
    "FIELDS",
    "MAX_DEPTH",
    "MAX_RULE_LENGTH",
    "And",
    "Compare",
    "Expr",
    "Field",
    "Not",
    "Or",
    "Regex",
    "Rule",
    "Truthy",
    "Value",
    "parse_rule",
]

MAX_RULE_LENGTH = 4096
"""The longest rule text accepted, in characters."""

MAX_DEPTH = 32
"""How deeply parentheses, `not` and list literals may nest."""

FIELDS = ("name", "address", "port", "user", "state", "facts", "tags")
"""The top-level fields of a host a rule can read."""

_SCALAR_FIELDS = frozenset(FIELDS) - {"facts", "tags"}
_KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "true", "false", "null"})
_COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains")
_ORDER_OPS = frozenset({"<", "<=", ">", ">="})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPACE = re.compile(r"\s+")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}

Value: TypeAlias = "str | int | float | bool | tuple[Value, ...] | None"
"""A literal: JSON scalars, and lists written as tuples so the AST is immutable."""

_SYNTAX = Syntax(
    "rule",
    max_length=MAX_RULE_LENGTH,
    max_depth=MAX_DEPTH,
    quote_limit=30,
    literal_kinds=frozenset({"string", "number"}),
)
# This language's message helpers, under the short names its code uses.
_shorten = _SYNTAX.shorten
_error = _SYNTAX.error


# ---------------------------------------------------------------------------
# The AST
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A host field: `root` is one of `FIELDS`; `path` the keys below facts/tags."""

    root: str
    path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.root not in FIELDS:
            raise InvalidInput(f"unknown field {self.root!r}", field="rule")
        if self.root in _SCALAR_FIELDS and self.path:
            raise InvalidInput(f"field {self.root!r} has no keys", field="rule")
        if self.root == "tags" and len(self.path) != 1:
            raise InvalidInput("a tag field names exactly one tag key", field="rule")
        if self.root == "facts" and not self.path:
            raise InvalidInput("a fact field names at least one key", field="rule")
        if self.root == "tags":
            check_tag_key(self.path[0], field="rule")
        if "" in self.path:
            raise InvalidInput("a fact key cannot be empty", field="rule")

    def __str__(self) -> str:
        parts = [self.root]
        for key in self.path:
            if _IDENT.fullmatch(key):
                parts.append(f".{key}")
            else:
                parts.append(f"[{_quote(key)}]")
        return "".join(parts)

    def resolve(self, host: Mapping[str, Any]) -> Any:
        """The field's value in `host`, or None when it is missing."""
        value = host.get(self.root)
        for key in self.path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value


@dataclass(frozen=True)
class Compare:
    """`field OP value` for OP in `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `contains`."""

    field: Field
    op: str
    value: Value

    def __post_init__(self) -> None:
        if self.op not in _COMPARE_OPS:
            raise InvalidInput(f"unknown operator {self.op!r}", field="rule")
        if self.op in ("in", "not in") and not isinstance(self.value, tuple):
            raise InvalidInput(f"'{self.op}' needs a list", field="rule")
        if self.op in _ORDER_OPS and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float | str)
        ):
            raise InvalidInput(f"'{self.op}' compares numbers or strings", field="rule")
        _format_value(self.value)  # rejects values a rule cannot hold (inf, nan, ...)


@dataclass(frozen=True)
class Regex:
    """`field =~ "pattern"`: true when the RE2 pattern matches somewhere in the value
    (`core.regex`: linear time, no backreferences or lookaround)."""

    field: Field
    pattern: str
    _compiled: UserRegex = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            compiled = compile_regex(self.pattern)
        except RegexError as exc:
            raise InvalidInput(exc.message, field="rule") from None
        object.__setattr__(self, "_compiled", compiled)


@dataclass(frozen=True)
class Truthy:
    """A bare field: true when the value is present and truthy."""

    field: Field


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    """True when every operand is (at least two operands)."""

    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise InvalidInput("'and' needs at least two operands", field="rule")


@dataclass(frozen=True)
class Or:
    """True when any operand is (at least two operands)."""

    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise InvalidInput("'or' needs at least two operands", field="rule")


Expr: TypeAlias = "Compare | Regex | Truthy | Not | And | Or"


@dataclass(frozen=True)
class Rule:
    """A parsed smart-group rule."""

    expr: Expr

    def matches(self, host: Mapping[str, Any]) -> bool:
        """Whether `host` satisfies the rule; never raises.

        `host` is a plain mapping: `name`, `address`, `port`, `user`, `state`,
        `facts` (nested JSON) and `tags` (str -> str). A missing key, or a path
        through something that is not a mapping, reads as null.
        """
        return _evaluate(self.expr, host)

    def fields(self) -> set[str]:
        """The fields the rule reads, in canonical form (`name`, `tags.env`, ...)."""
        return {str(f) for f in _fields(self.expr)}

    def __str__(self) -> str:
        return _format(self.expr)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def _evaluate(expr: Expr, host: Mapping[str, Any]) -> bool:
    if isinstance(expr, And):
        return all(_evaluate(e, host) for e in expr.operands)
    if isinstance(expr, Or):
        return any(_evaluate(e, host) for e in expr.operands)
    if isinstance(expr, Not):
        return not _evaluate(expr.operand, host)
    if isinstance(expr, Truthy):
        return _truthy(expr.field.resolve(host))
    if isinstance(expr, Regex):
        value = expr.field.resolve(host)
        return isinstance(value, str) and expr._compiled.search(value)
    return _compare(expr.op, expr.field.resolve(host), expr.value)


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | tuple | Mapping):
        return bool(value)
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(actual: Any, literal: Value) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0, lists element-wise."""
    if literal is None:
        return actual is None
    if isinstance(literal, bool):
        return isinstance(actual, bool) and actual is literal
    if isinstance(literal, int | float):
        return _is_number(actual) and actual == literal
    if isinstance(literal, str):
        return isinstance(actual, str) and actual == literal
    if not isinstance(actual, list | tuple) or len(actual) != len(literal):
        return False
    return all(_equal(a, b) for a, b in zip(actual, literal, strict=True))


def _order(op: str, actual: Any, literal: Value) -> bool:
    """`<`, `<=`, `>`, `>=` between two numbers or two strings; anything else is false."""
    numbers = _is_number(actual) and _is_number(literal)
    if not (numbers or (isinstance(actual, str) and isinstance(literal, str))):
        return False
    if op == "<":
        return bool(actual < literal)
    if op == "<=":
        return bool(actual <= literal)
    if op == ">":
        return bool(actual > literal)
    return bool(actual >= literal)


def _compare(op: str, actual: Any, literal: Value) -> bool:
    if op == "==":
        return _equal(actual, literal)
    if op == "!=":
        return not _equal(actual, literal)
    if op in _ORDER_OPS:
        return _order(op, actual, literal)
    if op in ("in", "not in"):
        assert isinstance(literal, tuple)
        found = any(_equal(actual, item) for item in literal)
        return found if op == "in" else not found
    # contains
    if isinstance(actual, str):
        return isinstance(literal, str) and literal in actual
    if isinstance(actual, list | tuple):
        return any(_equal(item, literal) for item in actual)
    if isinstance(actual, Mapping):
        return isinstance(literal, str) and literal in actual
    return False


def _fields(expr: Expr) -> Iterator[Field]:
    if isinstance(expr, And | Or):
        for operand in expr.operands:
            yield from _fields(operand)
    elif isinstance(expr, Not):
        yield from _fields(expr.operand)
    else:
        yield expr.field


# ---------------------------------------------------------------------------
# Canonical text
# ---------------------------------------------------------------------------


def _quote(text: str) -> str:
    out = ['"']
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _format_value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"a rule cannot hold the number {value}", field="rule")
        text = repr(value)
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    raise InvalidInput(f"a rule cannot hold the value {value!r}", field="rule")


def _format(expr: Expr) -> str:
    if isinstance(expr, And):
        return " and ".join(
            f"({_format(e)})" if isinstance(e, And | Or) else _format(e) for e in expr.operands
        )
    if isinstance(expr, Or):
        return " or ".join(
            f"({_format(e)})" if isinstance(e, Or) else _format(e) for e in expr.operands
        )
    if isinstance(expr, Not):
        inner = _format(expr.operand)
        return f"not ({inner})" if isinstance(expr.operand, And | Or) else f"not {inner}"
    if isinstance(expr, Truthy):
        return str(expr.field)
    if isinstance(expr, Regex):
        return f"{expr.field} =~ {_quote(expr.pattern)}"
    return f"{expr.field} {expr.op} {_format_value(expr.value)}"


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token(Token):
    """A rule token: `kind` is "ident", "string", "number", "op", "punct" or `END`."""

    value: Value = None  # of a string or number

    @property
    def keyword(self) -> str | None:
        """The keyword this token is (keywords are case-insensitive), or None."""
        if self.kind == "ident" and self.text.lower() in _KEYWORDS:
            return self.text.lower()
        return None


def _describe(value: Value) -> str:
    if isinstance(value, tuple):
        return "a list"
    return _shorten(_format_value(value))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        char = text[pos]
        column = pos + 1
        if char in "\"'":
            value, pos = _read_string(text, pos)
            tokens.append(_Token("string", text[column - 1 : pos], column, value))
            continue
        number = _NUMBER.match(text, pos)
        if number:
            tokens.append(_number_token(number.group(), column))
            pos = number.end()
            continue
        ident = _IDENT.match(text, pos)
        if ident:
            tokens.append(_Token("ident", ident.group(), column))
            pos = ident.end()
            continue
        two = text[pos : pos + 2]
        if two in ("==", "!=", "<=", ">=", "=~"):
            tokens.append(_Token("op", two, column))
            pos += 2
            continue
        if char in "<>":
            tokens.append(_Token("op", char, column))
        elif char in "()[],.":
            tokens.append(_Token("punct", char, column))
        elif char == "=":
            raise _error("unexpected '=': use '==' to compare, '=~' to match", column)
        elif char == "-" and tokens and tokens[-1].kind == "ident":
            raise _error(
                "unexpected '-': write a key containing '-' in brackets, as tags[\"my-key\"]",
                column,
            )
        else:
            raise _error(f"unexpected character {char!r}", column)
        pos += 1
    tokens.append(_Token(END, "", len(text) + 1))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string at `start`; return its value and the position after it."""
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            following = text[pos + 1]
            # Unknown escapes keep their backslash, so `"\d+"` is the regex \d+.
            out.append(_ESCAPES.get(following, "\\" + following))
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _error(f"unterminated string: no closing {quote} before end of rule", start + 1)


def _number_token(text: str, column: int) -> _Token:
    value: int | float
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise _error(f"number {_shorten(text)} is out of range", column)
    else:
        value = int(text)
    return _Token("number", text, column, value)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


class _Parser(Parser[_Token]):
    """Recursive descent over the token list; see docs/groups.md for the grammar."""

    def __init__(self, tokens: list[_Token]) -> None:
        super().__init__(tokens, _SYNTAX)

    def at_keyword(self, word: str) -> bool:
        return self.token.keyword == word

    # rule = or_expr END
    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.token.kind != END:
            raise _error(
                f"expected 'and', 'or' or end of rule, found {self.describe(self.token)}",
                self.token.column,
            )
        return expr

    # or_expr = and_expr { "or" and_expr }
    def or_expr(self) -> Expr:
        operands = [self.and_expr()]
        while self.at_keyword("or"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    # and_expr = not_expr { "and" not_expr }
    def and_expr(self) -> Expr:
        operands = [self.not_expr()]
        while self.at_keyword("and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    # not_expr = "not" not_expr | "(" or_expr ")" | condition
    def not_expr(self) -> Expr:
        token = self.token
        if self.at_keyword("not"):
            self.advance()
            self.enter(token)
            operand = self.not_expr()
            self.leave()
            return Not(operand)
        if self.at("punct", "("):
            self.advance()
            self.enter(token)
            expr = self.or_expr()
            self.expect("punct", ")", f"to close the '(' at column {token.column}")
            self.leave()
            return expr
        return self.condition()

    # condition = field [ op value | "=~" string | ["not"] "in" list | "contains" value ]
    def condition(self) -> Expr:
        target = self.field()
        token = self.token
        if token.kind == "op" and token.text == "=~":
            self.advance()
            return self.regex(target)
        if token.kind == "op":
            self.advance()
            start = self.token
            value = self.value(f"after '{token.text}'")
            if token.text in _ORDER_OPS and (
                isinstance(value, bool) or not isinstance(value, int | float | str)
            ):
                raise _error(
                    f"'{token.text}' compares numbers or strings, found {_describe(value)}",
                    start.column,
                )
            return Compare(target, token.text, value)
        if self.at_keyword("not"):
            self.advance()
            if not self.at_keyword("in"):
                raise _error(
                    f"expected 'in' after 'not', found {self.describe(self.token)}",
                    self.token.column,
                )
            self.advance()
            return Compare(target, "not in", self.list_value("after 'not in'"))
        if self.at_keyword("in"):
            self.advance()
            return Compare(target, "in", self.list_value("after 'in'"))
        if self.at_keyword("contains"):
            self.advance()
            return Compare(target, "contains", self.value("after 'contains'"))
        return Truthy(target)

    def regex(self, target: Field) -> Regex:
        token = self.token
        if token.kind != "string":
            raise _error(
                f"expected a quoted pattern after '=~', found {self.describe(token)}", token.column
            )
        self.advance()
        assert isinstance(token.value, str)
        try:
            compile_regex(token.value)
        except RegexError as exc:
            # Within the pattern when it is written without escapes, else at its quote.
            column = token.column
            if exc.offset is not None and token.text[1:-1] == token.value:
                column += 1 + exc.offset
            raise _error(exc.message, column) from None
        return Regex(target, token.value)

    # field = "name" | "address" | "port" | "user" | "state"
    #       | "facts" key { key } | "tags" key
    # key   = "." IDENT | "[" STRING "]"
    def field(self) -> Field:
        token = self.token
        if token.kind != "ident" or token.keyword:
            raise _error(
                f"expected a field ({', '.join(FIELDS)}), found {self.describe(token)}",
                token.column,
            )
        if token.text not in FIELDS:
            raise _error(
                f"unknown field '{_shorten(token.text)}' (expected one of {', '.join(FIELDS)})",
                token.column,
            )
        self.advance()
        if token.text in _SCALAR_FIELDS:
            return Field(token.text)
        path: list[str] = []
        while self.at("punct", ".") or self.at("punct", "["):
            if token.text == "tags" and path:
                raise _error(
                    "tag keys are not nested: write a key containing '.' as tags[\"a.b\"]",
                    self.token.column,
                )
            path.append(self.key(token.text))
        if not path:
            raise _error(
                f"expected '.' or '[' and a key after '{token.text}', "
                f"found {self.describe(self.token)}",
                self.token.column,
            )
        return Field(token.text, tuple(path))

    def key(self, root: str) -> str:
        """One key after `facts` or `tags`: `.name` or `["any text"]`."""
        bracket = self.advance().text == "["
        token = self.token
        if bracket and token.kind != "string":
            raise _error(
                f"expected a quoted key after '[', found {self.describe(token)}", token.column
            )
        if not bracket and token.kind != "ident":
            raise _error(
                f"expected a key after '.', found {self.describe(token)}"
                f' (write other keys as {root}["..."])',
                token.column,
            )
        self.advance()
        key = token.value if bracket else token.text
        assert isinstance(key, str)
        if root == "tags":
            try:
                check_tag_key(key)
            except InvalidInput as exc:
                raise _error(exc.message, token.column) from None
        elif not key:
            raise _error("a fact key cannot be empty", token.column)
        if bracket:
            self.expect("punct", "]", "after the key")
        return key

    def list_value(self, context: str) -> tuple[Value, ...]:
        if not self.at("punct", "["):
            raise _error(
                f"expected a list [...] {context}, found {self.describe(self.token)}",
                self.token.column,
            )
        value = self.value(context)
        assert isinstance(value, tuple)
        return value

    # value = STRING | NUMBER | "true" | "false" | "null" | list
    # list  = "[" [ value { "," value } ] "]"
    def value(self, context: str) -> Value:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        if token.keyword in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.keyword]
        if self.at("punct", "["):
            self.advance()
            self.enter(token)
            items: list[Value] = []
            if not self.at("punct", "]"):
                items.append(self.value("in the list"))
                while self.at("punct", ","):
                    self.advance()
                    items.append(self.value("after ','"))
            self.expect("punct", "]", f"to close the '[' at column {token.column}")
            self.leave()
            return tuple(items)
        raise _error(f"expected a value {context}, found {self.describe(token)}", token.column)


def parse_rule(text: str) -> Rule:
    """Parse a smart-group rule; raise `InvalidInput(field="rule", column=N)` if malformed."""
    _SYNTAX.check_length(text)
    return Rule(_Parser(_tokenize(text)).parse())
