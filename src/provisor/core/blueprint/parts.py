"""The models of a blueprint's parts (parameters, nodes, and their sizes, volumes,
networks, ingress rules and prices) with the JSON Schema each field publishes, and a
parameter's value rules (`_convert`, `_check_value`) beside `Parameter`; they sit below
the cross-field checks, which look into them and check defaults with those rules,
while the whole `Blueprint`, whose validator runs the checks, is above them in `schema`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    WithJsonSchema,
    model_validator,
)

from provisor.core.blueprint._model import _Model
from provisor.core.blueprint.backup import BackupPolicy
from provisor.core.blueprint.fields import (
    _CURRENCY,
    _DEVICE,
    _KEY,
    _MAX_VALUE,
    _NODE,
    _PARAM,
    _PATTERN,
    _WAIT,
    MAX_COUNT,
    _as_text,
    _cidr,
    _convert_plain,
    _count,
    _currency,
    _device,
    _hostname_pattern,
    _image,
    _key,
    _mount,
    _network_name,
    _node_ref,
    _ports,
    _scalar,
    _script,
    _shown,
    _user_data,
    _wait_ref,
)
from provisor.core.blueprint.health import MAX_STEPS, Checks, RecoveryStep, _action_only
from provisor.core.regex import compile_regex


def _matching(regex: re.Pattern[str] | str, *, nullable: bool = False) -> WithJsonSchema:
    """The JSON Schema of text matching `regex` (the checks themselves say more)."""
    pattern = regex if isinstance(regex, str) else regex.pattern
    schema: dict[str, Any] = {"type": "string", "pattern": f"^(?:{pattern})$"}
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]} if nullable else schema)


Key = Annotated[str, AfterValidator(_key), _matching(_KEY)]
Price = Annotated[float, Field(ge=0)]


class Parameter(_Model):
    """A typed input given when a deployment is requested."""

    type: Literal["string", "int", "bool", "enum", "secret"] = Field(
        default="string", description="string, int, bool, enum or secret"
    )
    description: str = ""
    default: Annotated[str | int | bool | None, BeforeValidator(_scalar)] = Field(
        default=None, description="the value when none is given; without one it is required"
    )
    pattern: str | None = Field(
        default=None,
        description="string and secret: a regular expression (RE2 syntax) the whole value matches",
    )
    min: int | None = Field(default=None, description="int: lowest value; string/secret: length")
    max: int | None = Field(default=None, description="int: highest value; string/secret: length")
    choices: tuple[Annotated[str, BeforeValidator(_as_text)], ...] | None = Field(
        default=None, description="enum: the allowed values"
    )

    @model_validator(mode="before")
    @classmethod
    def _typed_default(cls, data: Any) -> Any:
        """`default: "8080"` of an int parameter is 8080; `default: "yes"` of a bool is true."""
        if isinstance(data, dict) and data.get("default") is not None:
            kind = data.get("type", "string")
            if kind in ("int", "bool") and isinstance(data["default"], str):
                try:
                    converted = _convert_plain(kind, data["default"])
                except ValueError:
                    return data
                return {**data, "default": converted}
        return data

    @property
    def required(self) -> bool:
        return self.default is None


class Size(_Model):
    """The size of a machine: CPUs and memory, or a provider's flavor name."""

    cpu: int = Field(default=1, ge=1, le=1024)
    memory_mb: int = Field(default=512, ge=16, le=16 * 1024 * 1024)
    flavor: str | None = Field(default=None, min_length=1, description="e.g. m1.small, t3.micro")


class Volume(_Model):
    """An extra disk, mounted inside the machine."""

    size_gb: int = Field(ge=1, le=1_000_000)
    mount: Annotated[str, AfterValidator(_mount), _matching("/.+")]
    device: Annotated[str | None, AfterValidator(_device), _matching(_DEVICE, nullable=True)] = (
        Field(default=None, description="where providers with block devices attach it (/dev/sdf)")
    )


class Network(_Model):
    """A network the machine is attached to, and how it gets its address there."""

    name: Annotated[str, AfterValidator(_network_name)]
    ip: Literal["dhcp", "static", "auto"] = "auto"


class Ingress(_Model):
    """Traffic the deployment's machines accept, on providers with firewalls (EC2)."""

    protocol: Literal["tcp", "udp", "icmp"] = "tcp"
    ports: Annotated[
        tuple[int, int] | None,
        BeforeValidator(_ports),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 65535},
                    {"type": "string", "pattern": "^[0-9]{1,5}(?:-[0-9]{1,5})?$"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(default=None, description="a port (22) or range (8000-8100); none for icmp")
    source: Annotated[str, AfterValidator(_cidr)] = Field(
        default="0.0.0.0/0", description="the CIDR allowed in"
    )

    @model_validator(mode="after")
    def _ports_for_protocol(self) -> Self:
        if self.protocol != "icmp" and self.ports is None:
            raise ValueError(f"{self.protocol} needs ports: a port (22) or a range (8000-8100)")
        return self


class Node(_Model):
    """A role in the blueprint; its `count` instances are the machines NODE.1, NODE.2, ..."""

    description: str = ""
    count: Annotated[
        int | str,
        BeforeValidator(_count),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
                    {"type": "string", "pattern": f"^(?:{_PARAM.pattern})$"},
                ]
            }
        ),
    ] = Field(default=1, description="a whole number, or the name of an int parameter")
    image: Annotated[str, AfterValidator(_image)]
    size: Size = Size()
    hostname: Annotated[
        str | None, AfterValidator(_hostname_pattern), _matching(_PATTERN, nullable=True)
    ] = Field(default=None, description="pattern; '#' is replaced by the hostname completion")
    volumes: tuple[Volume, ...] = ()
    networks: tuple[Network, ...] = ()
    public_address: bool = Field(
        default=False, description="an elastic / floating address of its own, where offered"
    )
    user_data: Annotated[
        str | None,
        AfterValidator(_user_data),
        _matching("(?:#cloud-config|#!)[\\s\\S]*", nullable=True),
    ] = Field(default=None, description="cloud-init (#cloud-config) or a script (#!)")
    scripts: tuple[Annotated[str, AfterValidator(_script)], ...] = Field(
        default=(), description="post-install steps run over SSH, in order"
    )
    depends_on: tuple[Annotated[str, AfterValidator(_node_ref), _matching(_NODE)], ...] = Field(
        default=(), description="nodes whose machines are ready before these are launched"
    )
    publishes: tuple[Key, ...] = Field(
        default=(), description="runtime parameters the scripts set with provisor-param set"
    )
    waits_for: tuple[Annotated[str, AfterValidator(_wait_ref), _matching(_WAIT)], ...] = Field(
        default=(), description="NODE.KEY or NODE.INDEX.KEY that must be set before the scripts"
    )
    backup: BackupPolicy | None = Field(
        default=None, description="how its machines are backed up (docs/operations.md, Backups)"
    )
    checks: Checks | None = Field(
        default=None, description="health checks of each machine (docs/operations.md)"
    )
    recovery: tuple[Annotated[RecoveryStep, BeforeValidator(_action_only)], ...] = Field(
        default=(),
        max_length=MAX_STEPS,
        description="the recovery ladder: actions tried in order when a machine is unhealthy",
    )

    @model_validator(mode="after")
    def _recovery_needs_checks(self) -> Self:
        if self.recovery and self.checks is None:
            raise ValueError("recovery needs checks: without them no machine turns unhealthy")
        return self


class Cost(_Model):
    """Prices for estimates: per machine-hour by size, per GB of volume, per address."""

    currency: Annotated[str, AfterValidator(_currency), _matching(_CURRENCY)] = "USD"
    machine_hour: dict[str, Price] = Field(
        default_factory=dict,
        description="price of a machine-hour by size: a flavor name or CPUxMEMORY_MB "
        "(e.g. 2x4096); 'default' for every other size",
    )
    volume_gb_hour: Price = Field(default=0.0, description="price of one GB of volume for an hour")
    address_hour: Price = Field(default=0.0, description="price of one address for an hour")


def size_key(size: Size) -> str:
    """The key a size is priced by in `cost.machine_hour`: its flavor, or CPUxMEMORY_MB."""
    return size.flavor or f"{size.cpu}x{size.memory_mb}"


# A parameter's values: the checks hold defaults to these rules, the inputs given values.


def _convert(p: Parameter, raw: Any) -> Any:
    """A given value as the parameter's type; ValueError says why not (never the secret)."""
    if p.type == "secret":
        if isinstance(raw, SecretStr):
            return raw
        if not isinstance(raw, str):
            raise ValueError("expected text")
        if len(raw) > _MAX_VALUE:
            raise ValueError(f"longer than {_MAX_VALUE:,} characters")
        return SecretStr(raw)
    return _convert_plain(p.type, raw)


def _check_value(p: Parameter, value: Any) -> str | None:
    """What is wrong with a typed value under the parameter's constraints, if anything."""
    if p.type == "int":
        if p.min is not None and value < p.min:
            return f"{value} is below the minimum {p.min}"
        if p.max is not None and value > p.max:
            return f"{value} is above the maximum {p.max}"
        return None
    if p.type == "enum":
        if p.choices is not None and value not in p.choices:
            return f"{_shown(value)} is not one of: {', '.join(p.choices)}"
        return None
    if p.type == "bool":
        return None
    secret = p.type == "secret"
    text = value.get_secret_value() if secret else value
    shown = "the value" if secret else _shown(text)
    if p.min is not None and len(text) < p.min:
        return f"{shown} is shorter than {p.min} characters"
    if p.max is not None and len(text) > p.max:
        return f"{shown} is longer than {p.max} characters"
    if p.pattern is not None and not compile_regex(p.pattern).fullmatch(text):
        return f"{shown} does not match the pattern {p.pattern!r}"
    return None
