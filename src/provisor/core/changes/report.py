"""How a change reads: a one-line summary, a bounded unified diff for file content, and
the per-host report. A password hash never appears in any of them (only that it
changed)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from provisor.core.changes.model import (
    FileState,
    ObjectKey,
    PackageState,
    ServiceState,
    State,
    SysctlState,
    UserState,
)

if TYPE_CHECKING:
    from provisor.core.changes.desired import HostPlan

__all__ = ["MAX_DIFF_LINES", "change_diff", "change_summary", "count_text", "host_text"]

MAX_DIFF_LINES = 200
"""Lines of a diff shown; the rest are counted."""


def _text(content: bytes | None) -> str | None:
    """The content as text, or None when it is binary (not UTF-8, or holds NUL)."""
    if content is None:
        return ""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _line_counts(before: list[str], after: list[str]) -> tuple[int, int]:
    added = removed = 0
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return added, removed


def _content_summary(before: bytes | None, after: bytes | None) -> str:
    old, new = _text(before), _text(after)
    if old is None or new is None:
        return f"content ({len(before or b'')} -> {len(after or b'')} bytes)"
    added, removed = _line_counts(old.splitlines(), new.splitlines())
    return f"content (+{added} -{removed} lines)"


def _file_summary(before: FileState, after: FileState) -> str:
    if not after.exists:
        return "removed"
    if not before.exists:
        return "created"
    parts = []
    if before.content != after.content:
        parts.append(_content_summary(before.content, after.content))
    if before.mode != after.mode:
        parts.append(f"mode {_mode(before.mode)} -> {_mode(after.mode)}")
    for name in ("owner", "group"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            parts.append(f"{name} {old} -> {new}")
    return ", ".join(parts) or "unchanged"


def _mode(mode: int | None) -> str:
    return "?" if mode is None else f"{mode:04o}"


def _user_summary(before: UserState, after: UserState) -> str:
    if not after.exists:
        return "removed"
    if not before.exists:
        return "created"
    parts = []
    if before.groups != after.groups:
        parts.append(f"groups {','.join(before.groups) or '-'} -> {','.join(after.groups) or '-'}")
    if before.password_hash != after.password_hash:
        parts.append("password changed")
    if before.authorized_keys != after.authorized_keys:
        old = (before.authorized_keys or b"").decode(errors="replace").splitlines()
        new = (after.authorized_keys or b"").decode(errors="replace").splitlines()
        added, removed = _line_counts(old, new)
        parts.append(f"authorized_keys (+{added} -{removed})")
    if before.shell != after.shell:
        parts.append(f"shell {before.shell} -> {after.shell}")
    if before.home != after.home:
        parts.append(f"home {before.home} -> {after.home}")
    return ", ".join(parts) or "unchanged"


def _package_summary(before: PackageState, after: PackageState) -> str:
    if after.version is None:
        return f"remove {before.version}"
    if before.version is None:
        return f"install {after.version}"
    return f"upgrade {before.version} -> {after.version}"


def _service_summary(before: ServiceState, after: ServiceState, restart: str | None) -> str:
    parts = []
    if before.running != after.running:
        parts.append("start" if after.running else "stop")
    if before.enabled != after.enabled:
        parts.append("enable" if after.enabled else "disable")
    if restart:
        parts.append(f"restart ({restart})")
    return ", ".join(parts) or "unchanged"


def change_summary(
    key: ObjectKey, before: State, after: State, *, restart: str | None = None
) -> str:
    """One line saying what changes, e.g. "content (+3 -1 lines), mode 0644 -> 0600";
    `restart` says why a service restarts."""
    if isinstance(before, FileState) and isinstance(after, FileState):
        return _file_summary(before, after)
    if isinstance(before, UserState) and isinstance(after, UserState):
        return _user_summary(before, after)
    if isinstance(before, PackageState) and isinstance(after, PackageState):
        return _package_summary(before, after)
    if isinstance(before, ServiceState) and isinstance(after, ServiceState):
        return _service_summary(before, after, restart)
    if isinstance(before, SysctlState) and isinstance(after, SysctlState):
        return f"{before.value} -> {after.value}"
    return "changed"


def change_diff(key: ObjectKey, before: State, after: State) -> str:
    """A unified diff of a file's content (bounded), "" for anything else."""
    if not isinstance(before, FileState) or not isinstance(after, FileState):
        return ""
    if before.content == after.content or (before.content or b"") == (after.content or b""):
        return ""
    old, new = _text(before.content), _text(after.content)
    if old is None or new is None:
        size_before, size_after = len(before.content or b""), len(after.content or b"")
        return f"binary content differs ({size_before} -> {size_after} bytes)"
    lines = list(
        difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            fromfile=key.name if before.exists else "/dev/null",
            tofile=key.name if after.exists else "/dev/null",
            lineterm="",
        )
    )
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"... {more} more line{'s' if more != 1 else ''}"]
    return "\n".join(lines)


def count_text(n: int) -> str:
    """`2 changes`, `1 change`, or `up to date`."""
    if n == 0:
        return "up to date"
    return f"{n} change{'s' if n != 1 else ''}"


def _sign(change_summary: str) -> str:
    return {"created": "+", "removed": "-"}.get(change_summary, "~")


def host_text(plan: HostPlan) -> str:
    """One host's plan for people: a line per change with its diff indented, notes,
    and errors as `! ...`; `up to date` when there is nothing to do."""
    out: list[str] = []
    for change in plan.changes:
        out.append(f"{_sign(change.summary)} {change.key}: {change.summary}")
        out += [f"    {line}" for line in change.diff.splitlines()]
        out += [f"    note: {note}" for note in change.notes]
    out += [f"! {error}" for error in plan.errors]
    return "\n".join(out) if out else "up to date"
