"""What a change set says (resources) and what a host has (object states).

A change set is a list of resources, each a desired state of part of a host. Several
resources may act on one *object* of the host: `file`, `line` and `hosts_entry` all act
on a file (`/etc/hosts` for the last), `user` on a user account, `package` on an
installed package, `service` on a service, `sysctl` on a kernel parameter. A host's
objects are read (probed) as *states*; the desired state of each object is its state
with its resources applied in document order (`desired.py`); what changes is the
difference (`diff.py`). Applying writes the desired state; rolling back writes the
state recorded before (its snapshot): one writer for both.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_FILE_BYTES = 1024 * 1024
"""The largest file a change set writes or a snapshot keeps (content is held in the
database and in memory per host)."""

MAX_RESOURCES = 200
"""Resources in one change set."""

AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/[^\x00\n]*$", max_length=4096)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")]
Mode = Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3,4}$")]


class _Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = Field(default=None, max_length=128, description="a name for messages")


class FileResource(_Resource):
    type: Literal["file"]
    path: AbsolutePath
    state: Literal["present", "absent"] = "present"
    content: str | None = Field(default=None, description="the file's text, as is")
    template: str | None = Field(
        default=None, description="Jinja2 text rendered per host with `host`, `facts`, `vars`"
    )
    mode: Mode | None = None
    owner: Name | None = None
    group: Name | None = None


class LineResource(_Resource):
    type: Literal["line"]
    path: AbsolutePath
    state: Literal["present", "absent"] = "present"
    line: str | None = Field(default=None, description="the whole line (no newline)")
    regexp: str | None = Field(
        default=None,
        description="present: the last matching line is replaced by `line` (appended when "
        "none matches); absent: every matching line is removed (RE2)",
    )
    create: bool = Field(default=False, description="make the file when it does not exist")


class HostsEntry(_Resource):
    type: Literal["hosts_entry"]
    address: str = Field(description="an IPv4 or IPv6 address")
    names: list[Name] = Field(default_factory=list, max_length=32)
    state: Literal["present", "absent"] = "present"
    path: AbsolutePath = "/etc/hosts"


class UserResource(_Resource):
    type: Literal["user"]
    name: Name
    state: Literal["present", "absent"] = "present"
    groups: list[Name] | None = Field(
        default=None, description="the supplementary groups, exactly (None: left as they are)"
    )
    password_hash: str | None = Field(
        default=None, max_length=512, description="crypt(3) hash for /etc/shadow (secret)"
    )
    authorized_keys: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="the lines of ~/.ssh/authorized_keys, exactly (None: left as they are)",
    )
    shell: AbsolutePath | None = None
    create: bool = Field(
        default=True, description="make the user when it does not exist (false: an error)"
    )


class PackageResource(_Resource):
    type: Literal["package"]
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$")]
    state: Literal["present", "latest", "absent"] = "present"


class ServiceResource(_Resource):
    type: Literal["service"]
    name: Name
    state: Literal["running", "stopped"] | None = None
    enabled: bool | None = None
    restart_on: list[AbsolutePath] = Field(
        default_factory=list,
        max_length=100,
        description="files whose change (in the same apply) restarts the service",
    )


class SysctlResource(_Resource):
    type: Literal["sysctl"]
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")]
    value: str = Field(max_length=4096)
    persist: bool = Field(
        default=True, description="also set in /etc/sysctl.d/99-provisor.conf (a file object)"
    )


Resource = Annotated[
    FileResource
    | LineResource
    | HostsEntry
    | UserResource
    | PackageResource
    | ServiceResource
    | SysctlResource,
    Field(discriminator="type"),
]

Variables = dict[str, Any]


class ChangeSet(BaseModel):
    """A change set document."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=4096)
    vars: Variables = Field(default_factory=dict, description="variables for every host")
    host_vars: dict[str, Variables] = Field(
        default_factory=dict, description="variables per host name (override vars)"
    )
    group_vars: dict[str, Variables] = Field(
        default_factory=dict,
        description="variables per group name, for hosts in that group (override vars; "
        "host_vars override them)",
    )
    resources: list[Resource] = Field(min_length=1, max_length=MAX_RESOURCES)


# Objects of a host and their states

ObjectKind = Literal["file", "user", "package", "service", "sysctl"]


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: ObjectKind
    name: str  # a path, user, package, service or sysctl name

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class FileState:
    exists: bool
    content: bytes | None = None  # None when absent (or not a regular file: see kind)
    mode: int | None = None  # permission bits, e.g. 0o644
    owner: str | None = None
    group: str | None = None
    kind: Literal["file", "missing", "other"] = "file"  # other: a directory, a link...


@dataclass(frozen=True)
class UserState:
    exists: bool
    groups: tuple[str, ...] = ()  # supplementary, sorted
    password_hash: str | None = None  # the shadow field, a secret
    authorized_keys: bytes | None = None  # ~/.ssh/authorized_keys; None: no such file
    shell: str | None = None
    home: str | None = None


@dataclass(frozen=True)
class PackageState:
    version: str | None  # installed version; None: not installed
    candidate: str | None = None  # what the package manager would install (probe only)
    manager: Literal["apt", "dnf"] | None = None  # None: the host has neither


@dataclass(frozen=True)
class ServiceState:
    exists: bool
    running: bool | None = None
    enabled: bool | None = None
    manager: Literal["systemd", "sysv"] | None = None


@dataclass(frozen=True)
class SysctlState:
    value: str | None  # None: the kernel has no such parameter


State: TypeAlias = FileState | UserState | PackageState | ServiceState | SysctlState

_STATE_TYPES: dict[str, type[Any]] = {
    "file": FileState,
    "user": UserState,
    "package": PackageState,
    "service": ServiceState,
    "sysctl": SysctlState,
}
_BYTES_FIELDS = {"content", "authorized_keys"}


def state_json(state: State) -> dict[str, Any]:
    """A state as JSON (bytes in base64): how snapshots are kept."""
    data = asdict(state)
    for name in _BYTES_FIELDS & data.keys():
        if data[name] is not None:
            data[name] = base64.b64encode(data[name]).decode()
    if "groups" in data:
        data["groups"] = list(data["groups"])
    return data


def state_from_json(kind: ObjectKind, data: dict[str, Any]) -> State:
    values = dict(data)
    for name in _BYTES_FIELDS & values.keys():
        if values[name] is not None:
            values[name] = base64.b64decode(values[name])
    if "groups" in values:
        values["groups"] = tuple(values["groups"])
    state: State = _STATE_TYPES[kind](**values)
    return state


@dataclass(frozen=True)
class Write:
    """One object brought to a state on a host: by an apply (to the desired state) or a
    rollback (to the snapshot). `before` guards the write: a file whose content is no
    longer `before`'s is not overwritten (someone changed it since it was read)."""

    key: ObjectKey
    before: State
    after: State
    restart: bool = False  # service: restart it (a file in restart_on changed)


@dataclass(frozen=True)
class Change:
    """What differs for one object: shown by plan and check, done by apply."""

    key: ObjectKey
    before: State
    after: State
    summary: str  # one line, e.g. "content, mode 0644 -> 0600"
    diff: str = ""  # a unified diff for file content; never a secret
    restart: bool = False
    notes: tuple[str, ...] = field(default=())  # e.g. what a rollback cannot restore
