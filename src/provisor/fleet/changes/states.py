"""One object's state from a probe's records (see `probe.py` for what each kind prints)."""

from __future__ import annotations

from collections.abc import Callable

from provisor.core.changes.model import (
    MAX_FILE_BYTES,
    FileState,
    ObjectKey,
    PackageState,
    ServiceState,
    State,
    SysctlState,
    UserState,
)
from provisor.fleet.changes.records import BadRecord, Records


class _Unreadable(Exception):
    pass


def read_state(records: Records, index: int, key: ObjectKey) -> State | str:
    """The state of object `index`, or a message saying why there is none."""
    if records.error is not None:
        return records.error
    if not records.started:
        return "the host printed no probe output (the script did not run)"
    try:
        error = records.text(index, "error")
        if error is not None:
            return error
        if records.text(index, "done") is None:
            return (
                "the probe of this object did not finish"
                if records.ended
                else "the probe's output was cut short"
            )
        return _READERS[key.kind](records, index)
    except BadRecord as exc:
        return str(exc)
    except _Unreadable as exc:
        return f"unexpected probe output: {exc}"


def _file(records: Records, index: int) -> State | str:
    kind = records.text(index, "kind")
    if kind == "missing":
        return FileState(False, kind="missing")
    if kind == "other":
        return FileState(True, kind="other")
    if kind != "file":
        raise _Unreadable(f"file kind {kind!r}")
    content = records.data(index, "content")
    if content is None:
        raise _Unreadable("no content")
    if len(content) > MAX_FILE_BYTES:
        return f"larger than 1 MiB ({len(content)} bytes)"
    return FileState(
        True,
        content=content,
        mode=_octal(records.text(index, "mode")),
        owner=records.text(index, "owner"),
        group=records.text(index, "group"),
    )


def _user(records: Records, index: int) -> State | str:
    if not _flag(records, index, "exists"):
        return UserState(False)
    keys = records.data(index, "keys")
    if keys is not None and len(keys) > MAX_FILE_BYTES:
        return "authorized_keys is larger than 1 MiB"
    primary = records.text(index, "primary") or ""
    groups = set((records.text(index, "groups") or "").split()) - {primary}
    return UserState(
        True,
        groups=tuple(sorted(groups)),
        password_hash=records.text(index, "hash"),
        authorized_keys=keys,
        shell=records.text(index, "shell"),
        home=records.text(index, "home"),
    )


def _package(records: Records, index: int) -> State | str:
    manager = records.text(index, "manager") or None
    if manager not in (None, "apt", "dnf"):
        raise _Unreadable(f"package manager {manager!r}")
    return PackageState(
        records.text(index, "version"),
        candidate=records.text(index, "candidate"),
        manager=manager,  # type: ignore[arg-type]  # checked just above
    )


def _service(records: Records, index: int) -> State | str:
    manager = records.text(index, "manager")
    if manager not in ("systemd", "sysv"):
        raise _Unreadable(f"service manager {manager!r}")
    if not _flag(records, index, "exists"):
        return ServiceState(False, manager=manager)  # type: ignore[arg-type]
    return ServiceState(
        True,
        running=_flag(records, index, "running"),
        enabled=_flag(records, index, "enabled"),
        manager=manager,  # type: ignore[arg-type]
    )


def _sysctl(records: Records, index: int) -> State | str:
    return SysctlState(records.text(index, "value"))


def _flag(records: Records, index: int, name: str) -> bool:
    value = records.text(index, name)
    if value not in ("0", "1"):
        raise _Unreadable(f"{name} {value!r}")
    return value == "1"


def _octal(text: str | None) -> int:
    if text is None or not text.isdigit() or any(c in "89" for c in text):
        raise _Unreadable(f"mode {text!r}")
    return int(text, 8)


_READERS: dict[str, Callable[[Records, int], State | str]] = {
    "file": _file,
    "user": _user,
    "package": _package,
    "service": _service,
    "sysctl": _sysctl,
}
