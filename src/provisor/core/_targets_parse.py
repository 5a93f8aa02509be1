"""The target language's tokenizer and recursive-descent parser: `parse_target`.

Part of `provisor.core.targets`, which re-exports the public names: import them
from there. See docs/targets.md for the grammar.
"""

from __future__ import annotations

import ipaddress
import re

from provisor.core._parsing import END, Parser, Token
from provisor.core._targets_ast import (
    IPV4,
    PREFIXES,
    SYNTAX,
    USER,
    AddressRef,
    DeploymentRef,
    Difference,
    Direct,
    FileRef,
    GroupRef,
    Intersection,
    Name,
    NodeSet,
    TagRef,
    Target,
    Union,
    check_host,
)
from provisor.core.errors import InvalidInput
from provisor.core.names import check_name, check_tag_key

MAX_NAMES = 100_000
"""The most names the node sets of one target may stand for, all together."""

_OPERATORS = frozenset(",&!()")
_PORT = re.compile(r"[0-9]+")
_SPACE = re.compile(r"\s+")

# This language's message helpers, under the short names its code uses.
_shorten = SYNTAX.shorten
_error = SYNTAX.error


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def _tokenize(text: str) -> list[Token]:
    """Operators `, & ! ( )` and words; brackets and quotes keep their content in the word."""
    tokens: list[Token] = []  # kinds "word", "op" and END
    pos = 0
    while pos < len(text):
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        char = text[pos]
        if char in _OPERATORS:
            tokens.append(Token("op", char, pos + 1))
            pos += 1
            continue
        end = _read_word(text, pos)
        tokens.append(Token("word", text[pos:end], pos + 1))
        pos = end
    tokens.append(Token(END, "", len(text) + 1))
    return tokens


def _read_word(text: str, start: int) -> int:
    """The end of the word at `start`: up to whitespace or an operator outside brackets."""
    pos = start
    opened: int | None = None  # the '[' we are inside
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            if opened is not None:
                raise _error("unexpected whitespace inside brackets", pos + 1)
            break
        if opened is None:
            if char in _OPERATORS:
                break
            if char == '"':
                pos = _read_quoted(text, pos)[1]
                continue
            if char == "]":
                raise _error("unexpected ']' without a matching '['", pos + 1)
            if char == "[":
                opened = pos
        elif char == "[":
            raise _error("unexpected '[' inside brackets", pos + 1)
        elif char == "]":
            opened = None
        pos += 1
    if opened is not None:
        raise _error("unclosed '['", opened + 1)
    return pos


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at `start` and the position after it.

    A backslash makes the next character literal (`\\"`, `\\\\`).
    """
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _error("unterminated string: no closing '\"' before end of target", start + 1)


# ---------------------------------------------------------------------------
# Atoms: what one word means
# ---------------------------------------------------------------------------


def _outside_brackets(word: str) -> str:
    """`web[1-3]:22` -> `web[]:22`, to look for separators outside node set brackets."""
    return re.sub(r"\[[^\]]*\]", "[]", word)


def _unquote(raw: str, column: int, what: str) -> str:
    """A tag value or file path: bare text, or one quoted string."""
    if raw.startswith('"'):
        value, end = _read_quoted(raw, 0)
        if end != len(raw):
            raise _error(f"unexpected text after the quoted {what}", column + end)
        return value
    quote = raw.find('"')
    if quote >= 0:
        raise _error(f"a quote may only open the {what}", column + quote)
    return raw


class _Atoms:
    """Reads one word into an atom; counts the names of node sets across the target."""

    def __init__(self) -> None:
        self.names = 0

    def read(self, token: Token) -> Target:
        word, column = token.text, token.column
        try:
            return self._read(word, column)
        except InvalidInput as exc:
            if exc.column is None:  # from a constructor or check: point at the word
                raise _error(exc.message, column) from None
            raise

    def _read(self, word: str, column: int) -> Target:
        if word.startswith("@"):
            path = _unquote(word[1:], column + 1, "file path")
            if not path:
                raise _error("expected a file path after '@'", column + 1)
            return FileRef(path)
        head, sep, rest = word.partition(":")
        if sep and head in PREFIXES:
            return self._prefixed(head, rest, column + len(head) + 1)
        outside = _outside_brackets(word)
        quote = outside.find('"')
        if quote >= 0:
            raise _error(
                "quotes are only allowed around a tag value or a file path", column + quote
            )
        if "@" in outside:
            # Host names never contain '@', user names may (`alice@corp@web7`).
            user, _, hostport = word.rpartition("@")
            if not USER.fullmatch(user):
                raise _error(f"invalid user name {_shorten(user)!r}", column)
            host, port = _host_port(hostport, column + len(user) + 1)
            return Direct(user, host, port)
        if word.startswith("[") and ":" in word.partition("]")[0]:
            host, port = _host_port(word, column)
            if port is None:
                return AddressRef(ipaddress.ip_network(host))
            return Direct(None, host, port)
        if ":" in outside:
            return self._colon(word, outside, column)
        if "/" in outside or IPV4.fullmatch(word):
            return _network(word, column)
        if "[" in word:
            return self._node_set(word, column)
        return Name(word)

    def _prefixed(self, prefix: str, rest: str, column: int) -> Target:
        if prefix == "tag":
            key, sep, raw = rest.partition("=")
            if not key:
                raise _error("expected a tag key after 'tag:' (write tag:KEY=VALUE)", column)
            if not sep:
                raise _error(
                    f"expected '=' after the tag key {_shorten(key)!r} (write tag:KEY=VALUE)",
                    column + len(rest),
                )
            try:
                check_tag_key(key, field="target")
            except InvalidInput as exc:
                raise _error(exc.message, column) from None
            return TagRef(key, _unquote(raw, column + len(key) + 1, "tag value"))
        if not rest:
            raise _error(f"expected a {prefix} name after '{prefix}:'", column)
        try:
            check_name(rest, field="target")
        except InvalidInput:
            raise _error(
                f"invalid {prefix} name {_shorten(rest)!r}: use letters, digits, '.', '_' or '-'",
                column,
            ) from None
        return GroupRef(rest) if prefix == "group" else DeploymentRef(rest)

    def _colon(self, word: str, outside: str, column: int) -> Target:
        if outside.count(":") >= 2 or "/" in outside:
            return _network(word, column)  # an IPv6 address or network
        host, _, port = word.partition(":")
        if _PORT.fullmatch(port):
            if not host:
                raise _error("expected a host before ':'", column)
            return Direct(None, check_host(host), _port(port, column + len(host) + 1))
        raise _error(
            f"unknown prefix {_shorten(host)!r}: expected {', '.join(p + ':' for p in PREFIXES)}"
            " or HOST:PORT (host names never contain ':')",
            column,
        )

    def _node_set(self, word: str, column: int) -> NodeSet:
        try:
            node_set = NodeSet(word)
        except InvalidInput as exc:  # expand() gives the column within the word
            raise _error(exc.message, column + (exc.column or 1) - 1) from None
        self.names += len(node_set.names)
        if self.names > MAX_NAMES:
            raise _error(f"the target names more than {MAX_NAMES} hosts", column)
        return node_set


def _port(text: str, column: int) -> int:
    if not _PORT.fullmatch(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise _error(f"invalid port {_shorten(text)!r}: must be 1-65535", column)
    return int(text)


def _host_port(text: str, column: int) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address."""
    port: int | None = None
    if text.startswith("["):
        inner, sep, after = text[1:].partition("]")
        if not sep:
            raise _error("unclosed '['", column)
        try:
            address = ipaddress.ip_address(inner)
        except ValueError:
            raise _error(f"expected an IPv6 address in brackets, found {inner!r}", column) from None
        if address.version != 6:
            raise _error("only IPv6 addresses are written in brackets", column)
        if after:
            if not after.startswith(":"):
                raise _error("expected ':PORT' after ']'", column + len(inner) + 2)
            port = _port(after[1:], column + len(inner) + 3)
        return str(address), port
    host = text
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, column + len(host) + 1)
    if not host:
        raise _error("expected a host", column)
    try:
        return check_host(host), port
    except InvalidInput as exc:
        raise _error(exc.message, column) from None


def _network(word: str, column: int) -> AddressRef:
    """An address or a network: `10.1.0.5`, `10.1.0.0/24`, `::1`, `fd00::/64`."""
    try:
        network = ipaddress.ip_network(word, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(word, strict=False)
            raise _error(
                f"{_shorten(word)} is not a network address: did you mean {loose}?", column
            ) from None
        kind = "network" if "/" in word else "address"
        raise _error(f"invalid IP {kind} {_shorten(word)!r}", column) from None
    return AddressRef(network)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


class _Parser(Parser[Token]):
    """Recursive descent over the token list; see docs/targets.md for the grammar."""

    def __init__(self, tokens: list[Token]) -> None:
        super().__init__(tokens, SYNTAX)
        self.atoms = _Atoms()

    def at_op(self, text: str) -> bool:
        return self.at("op", text)

    # target = union END
    def parse(self) -> Target:
        if self.token.kind == END:
            raise _error("empty target", 1)
        target = self.union()
        token = self.token
        if self.at_op(")"):
            raise _error("unexpected ')' without a matching '('", token.column)
        if token.kind != END:
            hint = " (separate hosts with ',')" if token.kind == "word" else ""
            raise _error(
                f"expected ',', '&', '!' or end of target, found {self.describe(token)}{hint}",
                token.column,
            )
        return target

    # union = chain { "," chain }
    def union(self) -> Target:
        items = [self.chain()]
        while self.at_op(","):
            self.advance()
            items.append(self.chain())
        return items[0] if len(items) == 1 else Union(tuple(items))

    # chain = [ "!" ] primary { ( "&" [ "!" ] | "!" ) primary }
    def chain(self) -> Target:
        included: list[Target] = []
        excluded: list[Target] = []
        first_not: Token | None = None
        negate = False
        if self.at_op("!"):
            first_not = self.advance()
            negate = True
        while True:
            operand = self.primary()
            (excluded if negate else included).append(operand)
            if self.at_op("&"):
                self.advance()
                negate = False
                if self.at_op("!"):
                    self.advance()
                    negate = True
            elif self.at_op("!"):
                self.advance()
                negate = True
            else:
                break
            if negate and self.at_op("!"):
                raise _error("unexpected '!': '!' cannot be doubled", self.token.column)
        if not included:
            assert first_not is not None
            raise _error(
                "nothing to exclude from: '!' takes hosts away from what it follows; "
                "write A!B or A&!B",
                first_not.column,
            )
        left = included[0] if len(included) == 1 else Intersection(tuple(included))
        if not excluded:
            return left
        right = excluded[0] if len(excluded) == 1 else Union(tuple(excluded))
        return Difference(left, right)

    # primary = atom | "(" union ")"
    def primary(self) -> Target:
        token = self.token
        if self.at_op("("):
            self.advance()
            self.enter(token)
            target = self.union()
            self.expect("op", ")", f"to close the '(' at column {token.column}")
            self.leave()
            return target
        if token.kind == "word":
            self.advance()
            return self.atoms.read(token)
        after = f" after '{self.tokens[self.pos - 1].text}'" if self.pos > 0 else ""
        raise _error(
            f"expected a host or a target{after}, found {self.describe(token)}", token.column
        )


def parse_target(text: str) -> Target:
    """Parse a target; raise `InvalidInput(field="target", column=N)` if malformed."""
    SYNTAX.check_length(text)
    return _Parser(_tokenize(text)).parse()
