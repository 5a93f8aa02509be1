"""Reading a change script's records back, within bounds, whatever else the host printed."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from provisor.fleet.changes.shell import END, GLOBAL, START

_MAX_LINES = 100_000


@dataclass
class Records:
    """What a script reported: raw base64 values per object index, and write results."""

    count: int  # objects the script was made for; other indices are ignored
    started: bool = False
    ended: bool = False
    error: str | None = None  # about the whole script (e.g. the login is not root)
    fields: dict[int, dict[str, str]] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)  # @@ok <i>, in order
    failure: tuple[int, str] | None = None  # @@fail <i> <message>

    def text(self, index: int, name: str) -> str | None:
        raw = self.fields.get(index, {}).get(name)
        return None if raw is None else decode(raw).decode("utf-8", "replace")

    def data(self, index: int, name: str) -> bytes | None:
        raw = self.fields.get(index, {}).get(name)
        return None if raw is None else decode(raw)


class BadRecord(ValueError):
    pass


def decode(raw: str) -> bytes:
    """A record's value: `=plain` as written, else base64 (which never starts with =)."""
    if raw.startswith("="):
        return raw[1:].encode()
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRecord("a record of the host is not valid base64") from None


def read_records(output: bytes, count: int, limit: int) -> Records:
    """The records in the first `limit` bytes of `output` (past it: not read, so the
    output counts as cut short), from the line `@@start` on."""
    records = Records(count)
    lines = output[:limit].split(b"\n")
    lines.pop()  # empty, or a line cut short (no newline)
    for raw_line in lines[:_MAX_LINES]:
        if not raw_line.startswith(b"@@"):
            continue
        line = raw_line.decode("ascii", "replace")
        if not records.started:
            records.started = line == START
            continue
        if line == END:
            records.ended = True
            break
        _take(records, line[2:].split(" "))
    return records


def _take(records: Records, words: list[str]) -> None:
    head = words[0]
    if head == "ok" and len(words) == 2 and _index(words[1], records) is not None:
        records.done.append(int(words[1]))
    elif head == "fail" and len(words) == 3 and records.failure is None:
        index = _index(words[1], records)
        if index is not None:
            try:
                message = decode(words[2]).decode("utf-8", "replace")
            except BadRecord:
                message = "failed (its message was unreadable)"
            records.failure = (index, message)
    elif head == GLOBAL and len(words) == 3 and words[1] == "error":
        try:
            records.error = decode(words[2]).decode("utf-8", "replace")
        except BadRecord:
            records.error = "the host reported an unreadable error"
    elif len(words) in (2, 3):
        index = _index(head, records)
        if index is not None:
            records.fields.setdefault(index, {})[words[1]] = words[2] if len(words) == 3 else ""


def _index(word: str, records: Records) -> int | None:
    if not word.isdigit() or len(word) > 9:
        return None
    index = int(word)
    return index if index < records.count else None
