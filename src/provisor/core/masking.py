"""Masking secrets: every known secret value replaced by `********` in text and data.

A `Masker` is made from the secret values of one scope (a deployment's secret inputs
and its provider's credential, a job's password) and applied where output is stored
or shown. Besides each value as given it finds the forms a value commonly takes in
output: each of its lines, shell-quoted, and escaped inside a JSON string. A value
shorter than `SHORT` characters is masked only where it stands alone (not inside a
longer word): masking every `ab` would make output unreadable, and hide nothing.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MASK = "********"
SHORT = 4
_WORD = "A-Za-z0-9_"


def _forms(value: str) -> set[str]:
    """The ways `value` may appear in output."""
    forms = {value, shlex.quote(value), json.dumps(value, ensure_ascii=False)[1:-1]}
    if "\n" in value:
        forms.update(line.strip() for line in value.splitlines())
    return {form for form in forms if form.strip()}


def _pattern(forms: Iterable[str]) -> str:
    alternatives = []
    for form in sorted(forms, key=lambda f: (-len(f), f)):  # the longest form first
        escaped = re.escape(form)
        if len(form) < SHORT:
            escaped = f"(?<![{_WORD}]){escaped}(?![{_WORD}])"
        alternatives.append(escaped)
    return "|".join(alternatives)


@dataclass(frozen=True)
class Masker:
    """Replaces the secrets it was made with; one with none changes nothing."""

    secrets: frozenset[str] = frozenset()
    _text: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _data: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False)
    _reach: int = field(init=False, repr=False, compare=False)  # longest form, in bytes

    def __post_init__(self) -> None:
        forms = set().union(*(_forms(s) for s in self.secrets if s)) if self.secrets else set()
        pattern = _pattern(forms)
        object.__setattr__(self, "_text", re.compile(pattern) if pattern else None)
        object.__setattr__(self, "_data", re.compile(pattern.encode("utf-8")) if pattern else None)
        object.__setattr__(self, "_reach", max((len(f.encode()) for f in forms), default=0))

    @classmethod
    def of(cls, *values: str | None) -> Masker:
        """A masker of the values given (None and empty ones are no secret)."""
        return cls(frozenset(v for v in values if v))

    def __bool__(self) -> bool:
        return self._text is not None

    def __add__(self, other: Masker) -> Masker:
        return Masker(self.secrets | other.secrets)

    def __repr__(self) -> str:  # never the secrets themselves
        return f"Masker({len(self.secrets)} secrets)"

    def text(self, value: str) -> str:
        return self._text.sub(MASK, value) if self._text is not None else value

    def data(self, value: bytes) -> bytes:
        return self._data.sub(MASK.encode(), value) if self._data is not None else value

    def stream(self) -> StreamMasker:
        """A masker for one byte stream that arrives in pieces (a command's output)."""
        return StreamMasker(self._data, self._reach)

    def value(self, value: Any) -> Any:
        """Strings and bytes masked, inside dicts, lists and tuples too (keys as well)."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.data(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value


class StreamMasker:
    """Masks a stream piece by piece, finding a secret split across two pieces too.

    The last bytes of each piece that could still begin a secret are held back until
    the next piece (or `end`) shows how they go on: one byte more than the longest form,
    so a short secret's "no word character after it" is judged on what follows it. The
    byte before them is kept too, for "no word character before it".
    """

    def __init__(self, pattern: re.Pattern[bytes] | None, reach: int) -> None:
        self._pattern = pattern
        self._hold = reach + 1
        self._before = b""  # the byte before the held ones, as it was (for lookbehind)
        self._pending = b""

    def feed(self, piece: bytes) -> bytes:
        """What of the stream so far can be passed on, masked."""
        if self._pattern is None:
            return piece
        return self._masked(self._pending + piece, len(self._pending + piece) - self._hold)

    def end(self) -> bytes:
        """The rest of the stream, masked, once it has ended."""
        if self._pattern is None:
            return b""
        return self._masked(self._pending, len(self._pending))

    def _masked(self, data: bytes, safe: int) -> bytes:
        """`data` masked up to `safe` (a match starting before it lies wholly in `data`),
        or to the end of a match that runs past it; the rest is held back."""
        assert self._pattern is not None
        text = self._before + data
        start = len(self._before)
        out: list[bytes] = []
        done = start
        for match in self._pattern.finditer(text, start):
            if match.start() >= start + safe:
                break
            out += (text[done : match.start()], _MASK_BYTES)
            done = match.end()
        keep = max(done, start + safe)
        out.append(text[done:keep])
        self._before, self._pending = text[keep - 1 : keep], text[keep:]
        return b"".join(out)


_MASK_BYTES = MASK.encode()
NO_SECRETS = Masker()

__all__ = ["MASK", "NO_SECRETS", "SHORT", "Masker", "StreamMasker"]
