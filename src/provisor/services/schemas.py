"""What services take and return: validated inputs and plain views of rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provisor.core.errors import invalid_input
from provisor.core.facts import fact_path, nest
from provisor.core.names import check_address, check_name, check_port, check_tag_key

HOST_STATES = ("new", "active", "unreachable", "maintenance", "retired")
HostState = Literal["new", "active", "unreachable", "maintenance", "retired"]

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Build `model` from `data`, turning pydantic's error into one that names the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def _check_credentials(value: str | None) -> str | None:
    if value is None or value == "agent":
        return value
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in ("key", "secret") or not rest:
        raise ValueError(
            f"invalid credentials reference {value!r}: use 'key:NAME' (a stored key), "
            "'key:/path/to/key' (a file; the CLI only), 'secret:NAME' or 'agent' (the CLI only)"
        )
    return value


def _check_jump(value: str | None) -> str | None:
    """`[user@]host[:port]`: the bastion a host is reached through."""
    if value is None:
        return value
    _user, _, hostport = value.rpartition("@")
    host, _, port = hostport.partition(":")
    check_address(host.strip("[]"), field="proxy_jump")
    if port:
        if not port.isdigit():
            raise ValueError(f"invalid port in proxy jump {value!r}")
        check_port(int(port), field="proxy_jump")
    return value


def _check_tags(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        check_tag_key(key)
    return value


def _nested_facts(value: dict[str, Any]) -> dict[str, Any]:
    """A new host's facts: dotted names become nested objects (`cpu.count`)."""
    return nest(value)


def _fact_names(value: dict[str, Any]) -> dict[str, Any]:
    """Changes to facts: each name a dotted path, checked here, applied in order."""
    for name in value:
        fact_path(name)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HostSpec(_Strict):
    """A host to add. `address` defaults to the name."""

    name: str
    address: str | None = None
    port: int = 22
    user: str | None = Field(default=None, max_length=64)
    credentials: str | None = None
    proxy_jump: str | None = Field(default=None, description="[user@]host[:port] of a bastion")
    tags: dict[str, str] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    state: HostState = "new"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v)

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        return check_port(v)

    _credentials = field_validator("credentials")(_check_credentials)
    _jump = field_validator("proxy_jump")(_check_jump)
    _tags = field_validator("tags")(_check_tags)
    _facts = field_validator("facts")(_nested_facts)

    @model_validator(mode="after")
    def _default_address(self) -> HostSpec:
        if self.address is None:
            self.address = check_address(self.name)
        return self


class HostChanges(_Strict):
    """A partial update; tags and facts given here are merged, `null` removes a key.
    A fact's name is a dotted path (`cpu.count`); an object merges into an object."""

    address: str | None = None
    port: int | None = None
    user: str | None = Field(default=None, max_length=64)
    credentials: str | None = None
    proxy_jump: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    state: HostState | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v)

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        return None if v is None else check_port(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for key in v:
            check_tag_key(key)
        return v

    _credentials = field_validator("credentials")(_check_credentials)
    _jump = field_validator("proxy_jump")(_check_jump)
    _facts = field_validator("facts")(_fact_names)


class HostView(BaseModel):
    name: str
    address: str
    port: int
    user: str | None
    credentials: str | None
    proxy_jump: str | None
    state: str
    tags: dict[str, Any]
    facts: dict[str, Any]
    groups: list[str]
    tenant: str
    created_at: datetime
    updated_at: datetime


class GroupSpec(_Strict):
    """A group to add: smart when it has a rule, static otherwise."""

    name: str
    parent: str | None = None
    rule: str | None = None
    description: str = ""
    proxy_jump: str | None = Field(default=None, description="bastion for members without one")
    members: list[str] = Field(default_factory=list)

    @field_validator("name", "parent")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)

    _jump = field_validator("proxy_jump")(_check_jump)

    @model_validator(mode="after")
    def _smart_has_no_members(self) -> GroupSpec:
        if self.rule is not None and self.members:
            raise ValueError("a smart group's members come from its rule; give no members")
        return self


class GroupView(BaseModel):
    name: str
    kind: Literal["static", "smart"]
    parent: str | None
    children: list[str]
    rule: str | None
    description: str
    proxy_jump: str | None
    members: list[str]  # resolved: explicit, from child groups, or matching the rule
    tenant: str
    created_at: datetime


class ImportReport(BaseModel):
    source: str
    format: str
    hosts_created: list[str]
    hosts_updated: list[str]
    hosts_skipped: list[str]
    groups_created: list[str]
