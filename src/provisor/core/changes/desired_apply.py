"""What one resource does to the state of each object it acts on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from provisor.core.changes.edits import edit_hosts_entry, edit_line
from provisor.core.changes.model import (
    FileResource,
    FileState,
    HostsEntry,
    LineResource,
    ObjectKey,
    PackageResource,
    PackageState,
    Resource,
    ServiceResource,
    ServiceState,
    State,
    SysctlResource,
    SysctlState,
    UserResource,
    UserState,
)

__all__ = ["SYSCTL_FILE", "ResourceError", "apply_resource", "keys_of", "same_state"]

SYSCTL_FILE = "/etc/sysctl.d/99-provisor.conf"
"""Where a persisted sysctl is written, so it holds after a reboot."""

Effect = Callable[[State], State]


class ResourceError(Exception):
    """A resource that cannot be applied to its object's state (says why)."""


def keys_of(resource: Resource) -> list[ObjectKey]:
    return [key for key, _ in apply_resource(resource)]


def apply_resource(resource: Resource) -> list[tuple[ObjectKey, Effect]]:
    """The objects `resource` acts on, each with what it does to the object's state."""
    if isinstance(resource, FileResource):
        return [(ObjectKey("file", resource.path), lambda s: _file(resource, s))]
    if isinstance(resource, LineResource | HostsEntry):
        return [(ObjectKey("file", resource.path), lambda s: _lines(resource, s))]
    if isinstance(resource, UserResource):
        return [(ObjectKey("user", resource.name), lambda s: _user(resource, s))]
    if isinstance(resource, PackageResource):
        return [(ObjectKey("package", resource.name), lambda s: _package(resource, s))]
    if isinstance(resource, ServiceResource):
        return [(ObjectKey("service", resource.name), lambda s: _service(resource, s))]
    effects: list[tuple[ObjectKey, Effect]] = [
        (ObjectKey("sysctl", resource.name), lambda s: _sysctl(resource, s))
    ]
    if resource.persist:
        persisted = _persisted(resource)
        effects.append((ObjectKey("file", SYSCTL_FILE), lambda s: _lines(persisted, s)))
    return effects


def _persisted(resource: SysctlResource) -> LineResource:
    name = resource.name.replace(".", r"\.")  # the only metacharacter a name may hold
    return LineResource(
        type="line",
        path=SYSCTL_FILE,
        line=f"{resource.name} = {resource.value}",
        regexp=rf"^\s*{name}\s*=",
        create=True,
    )


def _expect(state: State, kind: type[State]) -> None:
    if not isinstance(state, kind):  # the probe and the key disagree: a bug upstream
        raise ResourceError(f"read as {type(state).__name__}, not {kind.__name__}")


def _file(resource: FileResource, state: State) -> State:
    _expect(state, FileState)
    assert isinstance(state, FileState)
    if state.kind == "other":
        raise ResourceError("is not a regular file")
    if resource.state == "absent":
        return FileState(exists=False, kind="missing")
    if resource.template is not None:
        raise ResourceError("its template was not rendered (a bug)")
    content = resource.content.encode() if resource.content is not None else state.content
    if content is None:
        raise ResourceError("no such file (give content or template to make it)")
    if not state.exists:  # a new file: what a missing one was read with means nothing
        state = FileState(exists=False, mode=0o644, owner="root", group="root")
    return FileState(
        exists=True,
        content=content,
        mode=int(resource.mode, 8) if resource.mode is not None else state.mode or 0o644,
        owner=_given(resource.owner, state.owner) or "root",
        group=_given(resource.group, state.group) or "root",
    )


def _lines(resource: LineResource | HostsEntry, state: State) -> State:
    _expect(state, FileState)
    assert isinstance(state, FileState)
    if state.kind == "other":
        raise ResourceError("is not a regular file")
    if not state.exists:
        if resource.state == "absent":
            return state  # nothing to remove
        if not (isinstance(resource, LineResource) and resource.create):
            hint = " (create: true makes it)" if isinstance(resource, LineResource) else ""
            raise ResourceError("no such file" + hint)
        state = FileState(exists=True, content=b"", mode=0o644, owner="root", group="root")
    content = state.content or b""
    edited = (
        edit_line(content, resource)
        if isinstance(resource, LineResource)
        else edit_hosts_entry(content, resource)
    )
    return dataclasses.replace(state, content=edited)


def _user(resource: UserResource, state: State) -> State:
    _expect(state, UserState)
    assert isinstance(state, UserState)
    if resource.state == "absent":
        return UserState(exists=False)
    if not state.exists and not resource.create:
        raise ResourceError(f"no user {resource.name} on this host (create: false)")
    keys = resource.authorized_keys
    authorized_keys = state.authorized_keys
    if keys is not None:
        authorized_keys = ("\n".join(keys) + "\n").encode() if keys else b""
    return UserState(
        exists=True,
        groups=tuple(sorted(set(resource.groups))) if resource.groups is not None else state.groups,
        password_hash=_given(resource.password_hash, state.password_hash),
        authorized_keys=authorized_keys,
        shell=_given(resource.shell, state.shell),
        home=state.home if state.exists and state.home else f"/home/{resource.name}",
    )


def _given(value: str | None, otherwise: str | None) -> str | None:
    return value if value is not None else otherwise


def _package(resource: PackageResource, state: State) -> State:
    _expect(state, PackageState)
    assert isinstance(state, PackageState)
    if state.manager is None:
        raise ResourceError("neither apt nor dnf on this host")
    if resource.state == "absent":
        return dataclasses.replace(state, version=None)
    if resource.state == "latest":
        version = state.candidate or state.version
    else:
        version = state.version or state.candidate
    if version is None:
        raise ResourceError(f"no package named {resource.name} available from {state.manager}")
    return dataclasses.replace(state, version=version)


def _service(resource: ServiceResource, state: State) -> State:
    _expect(state, ServiceState)
    assert isinstance(state, ServiceState)
    if not state.exists:
        raise ResourceError(f"no service named {resource.name}")
    running = state.running if resource.state is None else resource.state == "running"
    enabled = state.enabled if resource.enabled is None else resource.enabled
    return dataclasses.replace(state, running=running, enabled=enabled)


def _sysctl(resource: SysctlResource, state: State) -> State:
    _expect(state, SysctlState)
    assert isinstance(state, SysctlState)
    if state.value is None:
        raise ResourceError(f"no kernel parameter {resource.name}")
    if _words(state.value) == _words(resource.value):
        return state  # the kernel prints tabs where the change set has spaces
    return SysctlState(resource.value)


def _words(value: str | None) -> list[str] | None:
    return None if value is None else value.split()


def same_state(observed: State, desired: State) -> bool:
    """Whether nothing needs doing to bring `observed` to `desired`."""
    both_missing = not getattr(observed, "exists", True) and not getattr(desired, "exists", True)
    if both_missing and isinstance(observed, FileState) and isinstance(desired, FileState):
        return "other" not in (observed.kind, desired.kind)  # attributes of no file
    if both_missing and isinstance(observed, UserState) and isinstance(desired, UserState):
        return True
    if isinstance(observed, SysctlState) and isinstance(desired, SysctlState):
        return _words(observed.value) == _words(desired.value)
    if isinstance(observed, PackageState) and isinstance(desired, PackageState):
        return observed.version == desired.version
    return observed == desired
