"""Edits of a file's lines: `line` (like Ansible's lineinfile) and `hosts_entry`.

A file is split at "\\n" only, and decoded with `surrogateescape`, so every line the
edit does not touch is kept byte for byte (`\\r`, invalid UTF-8 and all).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from provisor.core.changes.model import HostsEntry, LineResource
from provisor.core.regex import compile_regex

__all__ = ["Lines", "edit_hosts_entry", "edit_line"]


@dataclass
class Lines:
    """A file's lines without their "\\n", and whether the last one had it."""

    lines: list[str]
    final_newline: bool = True

    @classmethod
    def of(cls, content: bytes) -> Lines:
        text = content.decode("utf-8", "surrogateescape")
        if not text:
            return cls([], True)
        parts = text.split("\n")
        if parts[-1] == "":
            return cls(parts[:-1], True)
        return cls(parts, False)

    def content(self) -> bytes:
        text = "\n".join(self.lines)
        if self.lines and self.final_newline:
            text += "\n"
        return text.encode("utf-8", "surrogateescape")

    def keep(self, wanted: list[bool]) -> None:
        """Keep the lines whose `wanted` is true: when the last line, which had no
        newline, goes, the lines kept keep theirs."""
        if wanted and not wanted[-1]:
            self.final_newline = True
        self.lines = [line for line, keep in zip(self.lines, wanted, strict=True) if keep]

    def append(self, line: str) -> None:
        self.lines.append(line)  # a file without a final newline gets one before it
        self.final_newline = True


def edit_line(content: bytes, resource: LineResource) -> bytes:
    """`content` with `resource` applied.

    present with regexp: the last line matching it is replaced by `line`; when none
    matches, `line` is appended unless the file has it already. One exception keeps a
    second apply from changing anything: when `line` itself does not match the regexp
    and is in the file already, nothing changes (else each apply would replace one more
    of several matching lines). present without regexp: appended unless present.
    absent: every line matching the regexp (or, without one, equal to `line`) removed.
    """
    file = Lines.of(content)
    line = resource.line
    pattern = compile_regex(resource.regexp) if resource.regexp is not None else None
    if resource.state == "absent":
        file.keep([not (pattern.search(each) if pattern else each == line) for each in file.lines])
        return file.content()
    assert line is not None  # load_change_set requires it
    if pattern is not None:
        matching = [i for i, each in enumerate(file.lines) if pattern.search(each)]
        if matching and not (line in file.lines and not pattern.search(line)):
            file.lines[matching[-1]] = line
            return file.content()
    if line not in file.lines:
        file.append(line)
    return file.content()


def _same_address(field: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(field) == ipaddress.ip_address(address)
    except ValueError:
        return field == address


def edit_hosts_entry(content: bytes, resource: HostsEntry) -> bytes:
    """`content` (a hosts file) with `resource` applied: of the non-comment lines whose
    first field is the address, present makes the first "<address>\\t<names>" and removes
    the others (appends the line when there are none); absent removes them all."""
    file = Lines.of(content)
    entry = f"{resource.address}\t{' '.join(resource.names)}"
    keep: list[bool] = []
    placed = False
    for i, each in enumerate(file.lines):
        fields = each.split()
        ours = bool(fields) and _same_address(fields[0], resource.address)  # "#..." is not
        if ours and resource.state == "present" and not placed:
            file.lines[i] = entry
            placed = True
            keep.append(True)
        else:
            keep.append(not ours)
    file.keep(keep)
    if resource.state == "present" and not placed:
        file.append(entry)
    return file.content()
