"""Blueprints: versioned YAML templates of multi-machine services, and what they expand to.

A blueprint names its **parameters** (typed inputs), its **nodes** (roles with a count,
an image, a size, volumes, networks, a hostname pattern, user data, post-install
scripts, and the runtime parameters each publishes and waits for) and its
**outputs** (text rendered from runtime parameters once a deployment is ready).
The format is documented in docs/blueprints.md; its JSON Schema, exported by
`schema_text()`, is docs/blueprint.schema.json.

- `load_blueprint(text, source)` reads and checks a blueprint; every problem (YAML
  syntax, schema, cross references, dependency cycles) is reported at once in one
  `ParseErrors`, each error with its line, column and dotted field path.
- `resolve_inputs(bp, given)` turns `-p key=value` strings into typed inputs.
- `expand(bp, inputs, deployment=..., completion=...)` gives one `MachinePlan`
  per machine; `node_order(bp)` the launch waves; `render_outputs` the outputs;
  `estimate_cost` the cost.

Pure: no I/O, nothing imported from the other layers.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.names import check_name
from provisor.core.yamlpos import Document, Path, dotted, located_errors, parse_yaml, prefer_text

__all__ = [
    "AUTOMATIC_KEYS",
    "MAX_COUNT",
    "Blueprint",
    "Cost",
    "MachinePlan",
    "Network",
    "Node",
    "Parameter",
    "Size",
    "Volume",
    "estimate_cost",
    "expand",
    "json_schema",
    "load_blueprint",
    "node_counts",
    "node_order",
    "output_references",
    "render_outputs",
    "resolve_inputs",
    "schema_text",
    "size_key",
    "version_key",
]

AUTOMATIC_KEYS = ("address", "hostname")
"""Runtime parameters provisor publishes for every machine at launch: they never change
afterwards, and machines cannot set them."""

MAX_COUNT = 1000
"""The most machines one node may have."""

MAX_ERRORS = 1000
"""Errors reported per blueprint."""

_NODE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_PARAM = re.compile(r"[a-z][a-z0-9_]{0,62}")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_PATTERN = re.compile(r"[A-Za-z0-9#-]{1,63}")
_DEVICE = re.compile(r"/dev/[a-z][a-z0-9]{1,15}")
_COMPLETION = re.compile(r"[A-Za-z0-9-]{1,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LEASE = re.compile(r"([1-9][0-9]{0,5})([mhdw])")
_CURRENCY = re.compile(r"[A-Z]{3}")
_OUTPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_WAIT = re.compile(r"([a-z][a-z0-9-]*)(?:\.([0-9]+))?\.([a-z][a-z0-9_]*)")
_REF = re.compile(
    r"(?:params\.([a-z][a-z0-9_]*))|(?:([a-z][a-z0-9-]*)\.([0-9]+)\.([a-z][a-z0-9_]*))"
)
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")
_LEASE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_MAX_VALUE = 65_536  # characters of one parameter value
# Parameters become environment variables: these names would break the machine's shell.
_RESERVED_ENV = frozenset(
    {"path", "home", "user", "shell", "pwd", "oldpwd", "lang", "term", "logname", "hostname"}
    | {"ifs", "ps1", "ps2", "tmpdir", "tz", "mail", "lc_all", "ssh_auth_sock", "env"}
)


# ---------------------------------------------------------------------------
# Field checks (each raises ValueError, which pydantic reports at the field)
# ---------------------------------------------------------------------------


def _name(value: str) -> str:
    return check_name(value, field="name")


def _version(value: str) -> str:
    if not _VERSION.fullmatch(value):
        raise ValueError(
            f"invalid version {value!r}: use letters, digits, '.', '-', '+', '_' "
            "(at most 64), e.g. 1.0 or 2.1.0-rc1"
        )
    return value


def _lease(value: str | None) -> str | None:
    if value is None or value.strip().lower() == "none":
        return None
    if not _LEASE.fullmatch(value.strip()):
        raise ValueError(f"invalid lease {value!r}: use a duration like 90m, 12h, 30d, 2w, or none")
    return value.strip()


def _currency(value: str) -> str:
    if not _CURRENCY.fullmatch(value):
        raise ValueError(f"invalid currency {value!r}: use a 3-letter code like EUR or USD")
    return value


def _key(value: str) -> str:
    if not _KEY.fullmatch(value):
        raise ValueError(
            f"invalid runtime parameter name {value!r}: start with a lower-case letter, "
            "then lower-case letters, digits and '_'"
        )
    if value in AUTOMATIC_KEYS:
        raise ValueError(f"{value!r} is published automatically by every machine; do not list it")
    return value


def _node_ref(value: str) -> str:
    if not _NODE.fullmatch(value):
        raise ValueError(f"invalid node name {value!r}")
    return value


def _wait_ref(value: str) -> str:
    match = _WAIT.fullmatch(value)
    if match is None:
        raise ValueError(
            f"invalid runtime parameter reference {value!r}: use NODE.KEY (every machine "
            "of the node) or NODE.INDEX.KEY (one machine), e.g. db.ready or db.1.address"
        )
    index = match.group(2)
    if index is not None and int(index) < 1:
        raise ValueError(f"invalid machine index in {value!r}: machines are numbered from 1")
    return value


def _hostname_pattern(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PATTERN.fullmatch(value) or not _DNS_LABEL.fullmatch(value.replace("#", "a")):
        raise ValueError(
            f"invalid hostname pattern {value!r}: letters, digits and '-' (not first or last), "
            "with '#' where the deployment's hostname completion goes, e.g. sap#-db"
        )
    return value


def _mount(value: str) -> str:
    if not value.startswith("/") or value == "/" or "\0" in value or "\n" in value:
        raise ValueError(f"invalid mount point {value!r}: an absolute path other than /")
    return value


def _provider(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value, field="provider")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None  # the position names the field


def _network_name(value: str) -> str:
    return check_name(value, field="name")


def _user_data(value: str | None) -> str | None:
    if value is not None and not value.startswith(("#cloud-config", "#!")):
        raise ValueError(
            "user data must be a cloud-init file (first line #cloud-config) "
            "or a script (first line #!/bin/sh or another interpreter)"
        )
    return value


def _script(value: str) -> str:
    if not value.strip():
        raise ValueError("a script cannot be empty")
    return value


def _device(value: str | None) -> str | None:
    if value is not None and not _DEVICE.fullmatch(value):
        raise ValueError(f"invalid device {value!r}: e.g. /dev/sdf or /dev/xvdf")
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r}: e.g. 10.0.0.0/8 or 0.0.0.0/0") from None


def _ports(value: Any) -> Any:
    """`22`, `"22"` or `"8000-8100"` as (first, last)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        first, _, last = value.strip().partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            low, high = int(first), int(last or first)
            if 1 <= low <= high <= 65535:
                return (low, high)
        raise ValueError(f"invalid ports {value!r}: a port (22) or a range (8000-8100)")
    return value


def _image(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"invalid image {value!r}: a name or id without spaces")
    return value


def _count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_COUNT:
            raise ValueError(f"count must be between 0 and {MAX_COUNT}")
        return value
    if isinstance(value, str) and _PARAM.fullmatch(value.strip()):
        return value.strip()
    raise ValueError(
        "count must be a whole number or the name of an int parameter, e.g. count: workers"
    )


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    raise ValueError("must be one value: text, a whole number, or true/false")


def _as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# ---------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        default=None, description="string and secret: a regular expression the whole value matches"
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


class Blueprint(_Model):
    """A versioned template of a multi-machine service."""

    name: Annotated[str, AfterValidator(_name)]
    version: Annotated[str, AfterValidator(_version), _matching(_VERSION)]
    description: str = ""
    approval: Literal["required", "none"] = Field(
        default="none", description="whether a deployment waits for an approver"
    )
    lease: Annotated[
        str | None, AfterValidator(_lease), _matching("[1-9][0-9]{0,5}[mhdw]|none", nullable=True)
    ] = Field(
        default=None, description="default lifetime of a deployment: 90m, 12h, 30d, 2w, or none"
    )
    cost: Cost | None = None
    provider: Annotated[str | None, AfterValidator(_provider)] = Field(
        default=None, description="the configured provider to deploy on unless --provider says"
    )
    ingress: tuple[Ingress, ...] = Field(
        default=(), description="traffic the machines accept (SSH from the controller always)"
    )
    parameters: dict[str, Parameter] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"pattern": f"^{_PARAM.pattern}$"}},
    )
    nodes: dict[str, Node] = Field(
        min_length=1, json_schema_extra={"propertyNames": {"pattern": f"^{_NODE.pattern}$"}}
    )
    outputs: dict[str, str] = Field(
        default_factory=dict, description="text with {{ NODE.INDEX.KEY }} or {{ params.NAME }}"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _problems(self.parameters, self.nodes, self.outputs, self.cost)
        if problems:
            raise ValueError("; ".join(f"{dotted(p.path)}: {p.message}" for p in problems))
        return self

    @property
    def lease_duration(self) -> timedelta | None:
        """The default lease as a duration, or None for no lease."""
        if self.lease is None:
            return None
        match = _LEASE.fullmatch(self.lease)
        assert match is not None
        return timedelta(**{_LEASE_UNITS[match.group(2)]: int(match.group(1))})


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a blueprint (docs/blueprint.schema.json)."""
    schema = Blueprint.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "provisor blueprint",
        **schema,
    }


def schema_text() -> str:
    """`json_schema()` as the text of docs/blueprint.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def version_key(version: str) -> tuple[Any, ...]:
    """Sorts versions sensibly: 1.9 < 1.10 < 2.0-rc1 < 2.0 (numbers as numbers)."""
    release, _, pre = version.partition("+")[0].partition("-")

    def parts(text: str) -> tuple[tuple[int, int | str], ...]:
        pieces = re.split(r"[._]", text) if text else []
        return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in pieces)

    return (parts(release), 0 if pre else 1, parts(pre), version)


def size_key(size: Size) -> str:
    """The key a size is priced by in `cost.machine_hour`: its flavor, or CPUxMEMORY_MB."""
    return size.flavor or f"{size.cpu}x{size.memory_mb}"


# ---------------------------------------------------------------------------
# Cross-field checks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    path: Path
    message: str
    key: bool = False  # located at the mapping key rather than the value


def _suggest(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class _Scope:
    """What cross-field checks look things up in.

    `param_names`/`node_names` are every declared name, valid or not, so a reference
    to a broken item is not called unknown; `broken` lists, per `nodes.NAME` or
    `parameters.NAME`, the fields that failed validation (checks that need them are
    skipped: their errors are already reported).
    """

    params: Mapping[str, Parameter]
    nodes: Mapping[str, Node]
    cost: Cost | None
    param_names: Collection[str]
    node_names: Collection[str]
    broken: Mapping[str, Collection[str]] = field(default_factory=dict)

    def sure(self, section: str, name: str, field_name: str) -> bool:
        return field_name not in self.broken.get(f"{section}.{name}", ())


def _problems(
    params: Mapping[str, Parameter],
    nodes: Mapping[str, Node],
    outputs: Mapping[str, str],
    cost: Cost | None,
    *,
    param_names: Collection[str] | None = None,
    node_names: Collection[str] | None = None,
    broken: Mapping[str, Collection[str]] | None = None,
) -> list[_Problem]:
    """Everything wrong between fields (see `_Scope` for the keyword arguments)."""
    scope = _Scope(
        params,
        nodes,
        cost,
        params.keys() if param_names is None else param_names,
        nodes.keys() if node_names is None else node_names,
        broken or {},
    )
    problems: list[_Problem] = []
    for name, parameter in params.items():
        if not scope.broken.get(f"parameters.{name}"):
            problems += _parameter_problems(name, parameter)
    for name, node in nodes.items():
        problems += _node_problems(name, node, scope)
    problems += _cycle_problems(nodes)
    for name, template in outputs.items():
        problems += _output_problems(name, template, scope)
    return problems


def _parameter_problems(name: str, p: Parameter) -> list[_Problem]:
    at: Path = ("parameters", name)
    found: list[_Problem] = []
    if not _PARAM.fullmatch(name):
        found.append(
            _Problem(
                at,
                f"invalid parameter name {name!r}: start with a lower-case letter, then "
                "lower-case letters, digits and '_' (it becomes the variable "
                f"{name.upper()})",
                key=True,
            )
        )
    elif name in _RESERVED_ENV or name.startswith(("provisor_", "ld_")):
        found.append(
            _Problem(
                at,
                f"parameter name {name!r} is reserved: as {name.upper()} it would "
                "replace a variable the machine's shell needs",
                key=True,
            )
        )
    texty = p.type in ("string", "secret")
    if p.pattern is not None:
        if not texty:
            found.append(
                _Problem((*at, "pattern"), f"pattern applies to string and secret, not {p.type}")
            )
        else:
            try:
                re.compile(p.pattern)
            except (re.error, OverflowError, RecursionError, ValueError) as exc:
                found.append(_Problem((*at, "pattern"), f"invalid regular expression: {exc}"))
                return found
    if (p.min is not None or p.max is not None) and not (texty or p.type == "int"):
        which = "min" if p.min is not None else "max"
        found.append(
            _Problem((*at, which), f"{which} applies to int, string and secret, not {p.type}")
        )
    if texty and any(bound is not None and bound < 0 for bound in (p.min, p.max)):
        found.append(_Problem((*at, "min"), "a length cannot be negative"))
    if p.min is not None and p.max is not None and p.min > p.max:
        found.append(_Problem((*at, "max"), f"max ({p.max}) is below min ({p.min})"))
    if p.type == "enum":
        if not p.choices:
            found.append(_Problem(at, "an enum parameter needs choices: [a, b, ...]"))
        elif len(set(p.choices)) != len(p.choices):
            found.append(_Problem((*at, "choices"), "choices are listed twice"))
    elif p.choices is not None:
        found.append(_Problem((*at, "choices"), f"choices apply to enum, not {p.type}"))
    if p.type == "secret" and p.default is not None:
        found.append(
            _Problem(
                (*at, "default"),
                "a secret parameter cannot have a default: blueprints are stored in clear, "
                f"so give it when deploying (-p {name}=...)",
            )
        )
    elif p.default is not None and not found:
        try:
            value = _convert(p, p.default)
        except ValueError as exc:
            found.append(_Problem((*at, "default"), f"invalid default: {exc}"))
        else:
            problem = _check_value(p, value)
            if problem:
                found.append(_Problem((*at, "default"), f"invalid default: {problem}"))
    return found


def _node_problems(name: str, node: Node, scope: _Scope) -> list[_Problem]:
    at: Path = ("nodes", name)
    node_names, cost = scope.node_names, scope.cost
    found: list[_Problem] = []
    if not _NODE.fullmatch(name) or name == "params":
        found.append(
            _Problem(
                at,
                f"invalid node name {name!r}: lower-case letters, digits and '-', starting "
                "with a letter, at most 32 ('params' is reserved)",
                key=True,
            )
        )
    if isinstance(node.count, str):
        counted = scope.params.get(node.count)
        if node.count not in scope.param_names:
            found.append(
                _Problem(
                    (*at, "count"),
                    f"count refers to unknown parameter {node.count!r}"
                    + _suggest(node.count, scope.param_names),
                )
            )
        elif counted is not None and counted.type != "int":
            found.append(
                _Problem(
                    (*at, "count"),
                    f"count refers to parameter {node.count!r}, a {counted.type}; "
                    "it must be an int parameter",
                )
            )
    seen: set[str] = set()
    for i, other in enumerate(node.depends_on):
        where = (*at, "depends_on", i)
        if other == name:
            found.append(_Problem(where, f"node {name!r} cannot depend on itself"))
        elif other not in node_names:
            found.append(_Problem(where, f"unknown node {other!r}" + _suggest(other, node_names)))
        elif other in seen:
            found.append(_Problem(where, f"{other!r} is listed twice"))
        seen.add(other)
    if len(set(node.publishes)) != len(node.publishes):
        found.append(_Problem((*at, "publishes"), "a runtime parameter is listed twice"))
    for i, ref in enumerate(node.waits_for):
        problem = _wait_problem(name, ref, scope)
        if problem:
            found.append(_Problem((*at, "waits_for", i), problem))
    mounts = [v.mount for v in node.volumes]
    for i, mount in enumerate(mounts):
        if mount in mounts[:i]:
            found.append(_Problem((*at, "volumes", i, "mount"), f"{mount} is mounted twice"))
    networks = [n.name for n in node.networks]
    for i, network in enumerate(networks):
        if network in networks[:i]:
            found.append(_Problem((*at, "networks", i, "name"), f"network {network!r} given twice"))
    priced = cost is not None and cost.machine_hour and "default" not in cost.machine_hour
    if cost is not None and priced and scope.sure("nodes", name, "size"):
        key = size_key(node.size)
        if key not in cost.machine_hour:
            found.append(
                _Problem(
                    (*at, "size"),
                    f"no machine-hour price for size {key!r}: add it to cost.machine_hour, "
                    "or a 'default' price",
                )
            )
    return found


def _wait_problem(name: str, ref: str, scope: _Scope) -> str | None:
    match = _WAIT.fullmatch(ref)
    assert match is not None  # checked by the field validator
    target, index, key = match.group(1), match.group(2), match.group(3)
    if target not in scope.node_names:
        return f"{ref!r} refers to unknown node {target!r}" + _suggest(target, scope.node_names)
    if target == name and key not in AUTOMATIC_KEYS:
        return (
            f"node {name!r} cannot wait for its own runtime parameter {key!r}; "
            "split the role into two nodes (e.g. primary and replica)"
        )
    return _key_problem(ref, target, index, key, scope)


def _key_problem(ref: str, target: str, index: str | None, key: str, scope: _Scope) -> str | None:
    """What is wrong with a reference to runtime parameter `key` of node `target`."""
    other = scope.nodes.get(target)
    if other is None:
        return None  # a node that is itself invalid: reported there
    sure = scope.sure("nodes", target, "publishes")
    if sure and key not in AUTOMATIC_KEYS and key not in other.publishes:
        published = ", ".join(other.publishes) or "nothing"
        return (
            f"{ref!r}: node {target!r} does not publish {key!r} (it publishes {published}; "
            f"every machine publishes {' and '.join(AUTOMATIC_KEYS)})"
        )
    if (
        index is not None
        and scope.sure("nodes", target, "count")
        and isinstance(other.count, int)
        and int(index) > other.count
    ):
        return f"{ref!r}: node {target!r} has {other.count} machine(s)"
    return None


def _cycle_problems(nodes: Mapping[str, Node]) -> list[_Problem]:
    """Deadlocks between launches and scripts.

    Each node has three moments: launched (L), scripts started (S), done (D), with
    L < S < D. `depends_on: [b]` means D(b) < L(a); waiting for b's own key means
    S(b) < S(a) (b's scripts publish it); waiting for b's address or hostname means
    L(b) < S(a). A cycle among these moments can never make progress.
    """
    edges: dict[tuple[str, str], list[tuple[tuple[str, str], Path]]] = {}

    def add(before: tuple[str, str], after: tuple[str, str], where: Path | None) -> None:
        edges.setdefault(before, []).append((after, where or ()))

    for name, node in nodes.items():
        add((name, "L"), (name, "S"), None)
        add((name, "S"), (name, "D"), None)
        for i, other in enumerate(node.depends_on):
            if other in nodes and other != name:
                add((other, "D"), (name, "L"), ("nodes", name, "depends_on", i))
        for i, ref in enumerate(node.waits_for):
            match = _WAIT.fullmatch(ref)
            assert match is not None
            other, key = match.group(1), match.group(3)
            if other in nodes and other != name:
                moment = "L" if key in AUTOMATIC_KEYS else "S"
                add((other, moment), (name, "S"), ("nodes", name, "waits_for", i))
    problems = []
    for cycle in _cycles(edges):
        declared = [where for _, where in cycle if where]
        names = [moment[0] for moment, _ in reversed(cycle)]
        route = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
        if route[-1] == route[0] and len(route) > 1:
            route.pop()
        owner = str(declared[-1][1])  # the node whose entry the error points at
        start = route.index(owner) if owner in route else 0
        route = route[start:] + route[:start]
        text = " -> ".join([*route, route[0]])
        problems.append(
            _Problem(
                declared[-1],
                f"dependency cycle: {text} (each needs the next, through depends_on and "
                "waits_for); no machine of these nodes could ever finish",
            )
        )
    return problems


def _cycles(
    edges: Mapping[tuple[str, str], list[tuple[tuple[str, str], Path]]],
) -> list[list[tuple[tuple[str, str], Path]]]:
    """One cycle per strongly connected component (Tarjan), as (moment, edge-origin) pairs."""
    index: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    stack: list[tuple[str, str]] = []
    on_stack: set[tuple[str, str]] = set()
    components: list[set[tuple[str, str]]] = []

    def visit(start: tuple[str, str]) -> None:
        work = [(start, iter(edges.get(start, [])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            vertex, successors = work[-1]
            advanced = False
            for successor, _ in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, []))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[vertex] = min(low[vertex], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[vertex])
            if low[vertex] == index[vertex]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == vertex:
                        break
                if len(component) > 1:
                    components.append(component)

    for vertex in list(edges):
        if vertex not in index:
            visit(vertex)
    return [_cycle_in(component, edges) for component in components]


def _cycle_in(
    component: set[tuple[str, str]],
    edges: Mapping[tuple[str, str], list[tuple[tuple[str, str], Path]]],
) -> list[tuple[tuple[str, str], Path]]:
    """A cycle through the component's first vertex: breadth-first back to it."""
    start = min(component)
    came: dict[tuple[str, str], tuple[tuple[str, str], Path]] = {}
    queue = [start]
    while queue:
        vertex = queue.pop(0)
        for successor, where in edges.get(vertex, []):
            if successor not in component or successor in came:
                continue
            came[successor] = (vertex, where)
            if successor == start:
                queue = []
                break
            queue.append(successor)
    path: list[tuple[tuple[str, str], Path]] = []
    vertex = start
    while True:
        previous, where = came[vertex]
        path.append((previous, where))
        vertex = previous
        if vertex == start:
            break
    path.reverse()
    return path


def output_references(template: str) -> list[str]:
    """The references in an output template, in order: `lb.1.address`, `params.port`.

    Raises ValueError for an unclosed `{{` or a reference that is not NODE.INDEX.KEY
    or params.NAME.
    """
    found: list[str] = []
    for ref, _, _ in _template_parts(template):
        if ref is not None:
            found.append(ref)
    return found


def _template_parts(template: str) -> list[tuple[str | None, int, int]]:
    """(reference or None, start, end) for each `{{ ... }}` of the template."""
    parts: list[tuple[str | None, int, int]] = []
    position = 0
    while True:
        start = template.find("{{", position)
        if start < 0:
            return parts
        end = template.find("}}", start + 2)
        if end < 0:
            raise ValueError(f"unclosed '{{{{' at character {start + 1}")
        ref = template[start + 2 : end].strip()
        if not _REF.fullmatch(ref):
            raise ValueError(
                f"invalid reference {{{{ {ref} }}}}: use {{{{ NODE.INDEX.KEY }}}} "
                "(e.g. lb.1.address) or {{ params.NAME }}"
            )
        parts.append((ref, start, end + 2))
        position = end + 2


def _output_problems(name: str, template: str, scope: _Scope) -> list[_Problem]:
    at: Path = ("outputs", name)
    params, param_names, node_names = scope.params, scope.param_names, scope.node_names
    found: list[_Problem] = []
    if not _OUTPUT.fullmatch(name):
        found.append(
            _Problem(at, f"invalid output name {name!r}: letters, digits, '_' and '-'", key=True)
        )
    try:
        refs = output_references(template)
    except ValueError as exc:
        return [*found, _Problem(at, str(exc))]
    for ref in refs:
        match = _REF.fullmatch(ref)
        assert match is not None
        param, target, index, key = match.groups()
        if param is not None:
            if param not in param_names:
                found.append(
                    _Problem(at, f"unknown parameter {param!r}" + _suggest(param, param_names))
                )
            elif param in params and params[param].type == "secret":
                found.append(_Problem(at, f"parameter {param!r} is a secret: outputs are shown"))
            continue
        if target not in node_names:
            found.append(
                _Problem(
                    at, f"{ref!r} refers to unknown node {target!r}" + _suggest(target, node_names)
                )
            )
        elif int(index) < 1:
            found.append(_Problem(at, f"{ref!r}: machines are numbered from 1"))
        else:
            problem = _key_problem(ref, target, index, key, scope)
            if problem:
                found.append(_Problem(at, problem))
    return found


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_blueprint(text: str, source: str = "<blueprint>") -> Blueprint:
    """Read a blueprint; raises one `ParseErrors` listing every problem, each located."""
    document = parse_yaml(text, source)
    data = document.data
    if not isinstance(data, dict):
        at = document.mark(())
        raise ParseErrors(
            [
                InvalidInput(
                    "a blueprint is a YAML mapping with at least name, version and nodes",
                    source=source,
                    line=at.line,
                    column=at.column,
                )
            ],
            source=source,
        )
    prefer_text(document, Blueprint)
    _defaults_as_written(document)
    errors: list[InvalidInput] = []
    blueprint: Blueprint | None = None
    try:
        blueprint = Blueprint.model_validate(data)
    except ValidationError as exc:
        located = located_errors(exc, document, source, Blueprint)
        errors += [e for e in located if e.field is not None]  # the rest: cross checks below
    if blueprint is None:
        for problem in _partial_problems(data):
            at = document.mark(problem.path, key=problem.key)
            errors.append(
                InvalidInput(
                    problem.message,
                    source=source,
                    line=at.line,
                    column=at.column,
                    field=dotted(problem.path),
                )
            )
    if errors or blueprint is None:
        raise _collected(errors, source)
    return blueprint


def _collected(errors: list[InvalidInput], source: str) -> ParseErrors:
    unique: dict[tuple[Any, ...], ProvisorError] = {}
    for error in errors:
        unique.setdefault((error.line, error.column, error.field, error.message), error)
    ordered = sorted(unique.values(), key=lambda e: (e.line or 0, e.column or 0))
    if len(ordered) > MAX_ERRORS:
        ordered = ordered[:MAX_ERRORS]
        ordered.append(
            InvalidInput(f"too many errors: only the first {MAX_ERRORS} are shown", source=source)
        )
    if not ordered:  # cannot happen: a failed validation always says why
        ordered = [InvalidInput("invalid blueprint", source=source)]
    return ParseErrors(ordered, source=source)


def _defaults_as_written(document: Document) -> None:
    """A string or enum parameter's `default: 1.10` is the text "1.10"."""
    params = document.data.get("parameters")
    if not isinstance(params, dict):
        return
    for name, spec in params.items():
        if not isinstance(spec, dict) or spec.get("type", "string") not in ("string", "enum"):
            continue
        default = spec.get("default")
        if default is not None and not isinstance(default, str | list | dict):
            spec["default"] = document.texts.get(("parameters", name, "default"), str(default))


_PLACEHOLDERS = {"image": "unknown"}  # for required fields that failed validation


def _salvage(
    section: str, raw: Any, model: type[_Model], broken: dict[str, Collection[str]]
) -> dict[str, Any]:
    """The section's items as models, each without the fields that failed validation
    (recorded in `broken`), so the rest of it can still be cross-checked."""
    found: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return found
    for name, spec in raw.items():
        try:
            found[name] = model.model_validate(spec)
            continue
        except ValidationError as exc:
            locs = [error["loc"] for error in exc.errors()]
        if not isinstance(spec, dict) or any(not loc for loc in locs):
            continue
        bad = {str(loc[0]) for loc in locs}
        if section == "parameters" and "type" in bad:
            continue  # what it is decides everything else
        kept = {k: v for k, v in spec.items() if k not in bad}
        kept.update({k: v for k, v in _PLACEHOLDERS.items() if k in bad})
        with contextlib.suppress(ValidationError):
            found[name] = model.model_validate(kept)
            broken[f"{section}.{name}"] = bad
    return found


def _partial_problems(data: dict[str, Any]) -> list[_Problem]:
    """Cross-field problems among the parts of a blueprint that could be read."""

    def names(key: str) -> Collection[str] | None:
        raw = data.get(key)
        if raw is None:
            return set()
        return set(raw) if isinstance(raw, dict) else None

    broken: dict[str, Collection[str]] = {}
    params = _salvage("parameters", data.get("parameters"), Parameter, broken)
    nodes = _salvage("nodes", data.get("nodes"), Node, broken)
    raw_outputs = data.get("outputs")
    outputs = (
        {k: v for k, v in raw_outputs.items() if isinstance(v, str)}
        if isinstance(raw_outputs, dict)
        else {}
    )
    cost: Cost | None = None
    if isinstance(data.get("cost"), dict):
        with contextlib.suppress(ValidationError):
            cost = Cost.model_validate(data["cost"])
    param_names, node_names = names("parameters"), names("nodes")
    return _problems(
        params,
        nodes,
        outputs if param_names is not None and node_names is not None else {},
        cost,
        param_names=param_names if param_names is not None else _Everything(),
        node_names=node_names if node_names is not None else _Everything(),
        broken=broken,
    )


class _Everything(Collection[str]):
    """Stands for the names of a section that could not be read: every name is in it."""

    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert_plain(kind: str, raw: Any) -> Any:
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _INTEGER.fullmatch(raw):
            return int(raw)
        raise ValueError(f"expected a whole number, got {_shown(raw)}")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError(f"expected true or false (or yes/no), got {_shown(raw)}")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected text, got {_shown(raw)}")
    if len(raw) > _MAX_VALUE:
        raise ValueError(f"longer than {_MAX_VALUE:,} characters")
    return raw


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
    if p.pattern is not None and re.fullmatch(p.pattern, text) is None:
        return f"{shown} does not match the pattern {p.pattern!r}"
    return None


def _input_errors(
    bp: Blueprint, given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[InvalidInput]]:
    values: dict[str, Any] = {}
    errors: list[InvalidInput] = []
    for name in given:
        if name not in bp.parameters:
            known = ", ".join(bp.parameters) or "none"
            errors.append(
                InvalidInput(
                    f"unknown parameter {name!r}{_suggest(name, bp.parameters)}; "
                    f"the blueprint's parameters: {known}",
                    field=f"parameters.{name}",
                )
            )
    for name, p in bp.parameters.items():
        if name in given:
            try:
                value = _convert(p, given[name])
            except ValueError as exc:
                errors.append(InvalidInput(str(exc), field=f"parameters.{name}"))
                continue
        elif p.default is not None:
            value = p.default
        else:
            errors.append(
                InvalidInput(
                    f"missing required parameter {name!r} ({p.type}, no default)",
                    field=f"parameters.{name}",
                )
            )
            continue
        problem = _check_value(p, value)
        if problem:
            errors.append(InvalidInput(problem, field=f"parameters.{name}"))
            continue
        values[name] = value
    return values, errors


def resolve_inputs(bp: Blueprint, given: Mapping[str, Any]) -> dict[str, Any]:
    """Typed inputs from `-p name=value` strings (typed values are accepted too).

    Defaults fill in what is not given; a secret becomes a `SecretStr`. Unknown and
    missing parameters and values out of bounds are all reported in one `ParseErrors`.
    """
    values, errors = _input_errors(bp, given)
    if errors:
        raise ParseErrors([*errors])
    return values


def node_counts(bp: Blueprint, inputs: Mapping[str, Any]) -> dict[str, int]:
    """How many machines each node has with these inputs (defaults fill in)."""
    counts: dict[str, int] = {}
    errors: list[ProvisorError] = []
    for name, node in bp.nodes.items():
        if isinstance(node.count, int):
            counts[name] = node.count
            continue
        p = bp.parameters[node.count]
        raw = inputs.get(node.count, p.default)
        try:
            if raw is None:
                raise ValueError(f"parameter {node.count!r} is required (no default)")
            value = _convert(p, raw)
            problem = _check_value(p, value)
            if problem:
                raise ValueError(problem)
            if not 0 <= value <= MAX_COUNT:
                raise ValueError(f"{value} machines: a node has 0 to {MAX_COUNT}")
        except ValueError as exc:
            errors.append(
                InvalidInput(f"count of node {name!r}: {exc}", field=f"parameters.{node.count}")
            )
            continue
        counts[name] = value
    if errors:
        raise ParseErrors(errors)
    return counts


# ---------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MachinePlan:
    """One machine of a deployment, fully resolved.

    `waits_for` lists concrete `NODE.INDEX.KEY` runtime parameters; `publishes` the
    keys this machine's scripts set (besides `address` and `hostname`). `env` holds
    the parameters (secrets in clear: scripts need them) and is left out of `repr`;
    `secret_env` names the variables that hold secrets.
    """

    node: str
    index: int
    name: str
    hostname: str
    image: str
    size: Size
    volumes: tuple[Volume, ...]
    networks: tuple[Network, ...]
    user_data: str | None
    scripts: tuple[str, ...]
    depends_on: tuple[str, ...]
    publishes: tuple[str, ...]
    waits_for: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False, compare=False)
    secret_env: frozenset[str] = frozenset()
    public_address: bool = False
    ingress: tuple[Ingress, ...] = ()

    @property
    def key(self) -> str:
        """`app.2`: how runtime parameters name this machine."""
        return f"{self.node}.{self.index}"


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def _count_variable(node: str) -> str:
    return "PROVISOR_COUNT_" + node.upper().replace("-", "_")


def _hostname(pattern: str, index: int, count: int, completion: str) -> str:
    hostname = pattern.replace("#", completion)
    if count > 1:
        hostname += ("-" if hostname[-1].isdigit() else "") + str(index)
    return hostname


def expand(
    bp: Blueprint,
    inputs: Mapping[str, Any],
    *,
    deployment: str,
    completion: str | None = None,
) -> list[MachinePlan]:
    """Every machine of a deployment, in launch order (`node_order`, then index).

    `inputs` are those of `resolve_inputs` (raw strings are converted the same way).
    The machine name is DEPLOYMENT-NODE-INDEX; the hostname comes from the node's
    pattern (default: the node name) with `#` replaced by `completion`, and the index
    appended when the node has more than one machine (`app1`, `app2`; `web2-1` when
    the pattern ends in a digit).
    """
    errors: list[ProvisorError] = []
    try:
        check_name(deployment, field="deployment")
    except InvalidInput as exc:
        errors.append(exc)
    if completion is not None and not _COMPLETION.fullmatch(completion):
        errors.append(
            InvalidInput(
                f"invalid hostname completion {completion!r}: letters, digits and '-'",
                field="completion",
            )
        )
    values, input_errors = _input_errors(bp, inputs)
    errors += input_errors
    if errors:
        raise ParseErrors(errors)
    counts = node_counts(bp, values)
    env: dict[str, str] = {name.upper(): _env_text(v) for name, v in values.items()}
    env["PROVISOR_DEPLOYMENT"] = deployment
    env.update({_count_variable(n): str(c) for n, c in counts.items()})
    secret_env = frozenset(n.upper() for n, p in bp.parameters.items() if p.type == "secret")
    plans: list[MachinePlan] = []
    hostnames: dict[str, str] = {}
    for wave in node_order(bp):
        for node_name in wave:
            node = bp.nodes[node_name]
            pattern = node.hostname or node_name
            if "#" in pattern and completion is None:
                errors.append(
                    InvalidInput(
                        f"node {node_name!r} has the hostname pattern {pattern!r}: give the "
                        "hostname completion that replaces '#'",
                        field="completion",
                    )
                )
                continue
            waits = _concrete_waits(node_name, node, counts, errors)
            for index in range(1, counts[node_name] + 1):
                hostname = _hostname(pattern, index, counts[node_name], completion or "")
                machine = f"{node_name}.{index}"
                if not _DNS_LABEL.fullmatch(hostname):
                    errors.append(
                        InvalidInput(
                            f"hostname {hostname!r} of {machine} is not a valid DNS label "
                            "(letters, digits, '-', at most 63)",
                            field=f"nodes.{node_name}.hostname",
                        )
                    )
                    continue
                if hostname.lower() in hostnames:
                    errors.append(
                        InvalidInput(
                            f"{machine} and {hostnames[hostname.lower()]} would both be "
                            f"named {hostname!r}",
                            field=f"nodes.{node_name}.hostname",
                        )
                    )
                    continue
                hostnames[hostname.lower()] = machine
                plan_name = f"{deployment}-{node_name}-{index}"
                plans.append(
                    MachinePlan(
                        node=node_name,
                        index=index,
                        name=plan_name,
                        hostname=hostname,
                        image=node.image,
                        size=node.size,
                        volumes=node.volumes,
                        networks=node.networks,
                        user_data=node.user_data,
                        scripts=node.scripts,
                        depends_on=node.depends_on,
                        publishes=node.publishes,
                        waits_for=waits,
                        env=MappingProxyType(
                            {
                                **env,
                                "PROVISOR_NODE": node_name,
                                "PROVISOR_INDEX": str(index),
                                "PROVISOR_MACHINE": plan_name,
                                "PROVISOR_HOSTNAME": hostname,
                            }
                        ),
                        secret_env=secret_env,
                        public_address=node.public_address,
                        ingress=bp.ingress,
                    )
                )
    try:
        for plan in plans:
            check_name(plan.name, field="deployment")
    except InvalidInput as exc:
        errors.append(InvalidInput(f"machine name too long: {exc.message}", field="deployment"))
    if errors:
        raise ParseErrors(errors)
    return plans


def _concrete_waits(
    name: str, node: Node, counts: Mapping[str, int], errors: list[ProvisorError]
) -> tuple[str, ...]:
    waits: list[str] = []
    for ref in node.waits_for:
        match = _WAIT.fullmatch(ref)
        assert match is not None
        target, index, key = match.group(1), match.group(2), match.group(3)
        if index is None:
            waits += [f"{target}.{i}.{key}" for i in range(1, counts[target] + 1)]
        elif int(index) > counts[target]:
            errors.append(
                InvalidInput(
                    f"{name} waits for {ref}, but node {target!r} has {counts[target]} machine(s)",
                    field=f"nodes.{name}.waits_for",
                )
            )
        else:
            waits.append(f"{target}.{int(index)}.{key}")
    return tuple(dict.fromkeys(waits))


def node_order(bp: Blueprint) -> list[list[str]]:
    """The nodes in launch waves: each wave depends only on earlier ones (`depends_on`).

    Within a wave nodes keep their order in the blueprint. A loaded blueprint has no
    cycles; were there one, its nodes would be left out.
    """
    remaining = {name: set(node.depends_on) for name, node in bp.nodes.items()}
    waves: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        wave = [name for name, needs in remaining.items() if needs <= done]
        if not wave:
            break
        waves.append(wave)
        done.update(wave)
        for name in wave:
            del remaining[name]
    return waves


# ---------------------------------------------------------------------------
# Outputs and cost
# ---------------------------------------------------------------------------


def render_outputs(
    bp: Blueprint, params: Mapping[str, str], *, inputs: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The outputs with `{{ NODE.INDEX.KEY }}` replaced by `params["NODE.INDEX.KEY"]` (the
    runtime parameters) and `{{ params.NAME }}` by the input `NAME`.

    A plain substitution, not a template language; every reference that has no value
    is reported, naming it, in one `ParseErrors`.
    """
    rendered: dict[str, str] = {}
    errors: list[ProvisorError] = []
    for name, template in bp.outputs.items():
        pieces: list[str] = []
        position = 0
        for ref, start, end in _template_parts(template):
            assert ref is not None
            pieces.append(template[position:start])
            position = end
            if ref.startswith("params."):
                param = ref.removeprefix("params.")
                if inputs is None or param not in inputs:
                    errors.append(
                        InvalidInput(f"input {param!r} is not given", field=f"outputs.{name}")
                    )
                    continue
                pieces.append(_env_text(inputs[param]))
            elif ref in params:
                pieces.append(str(params[ref]))
            else:
                errors.append(
                    InvalidInput(f"runtime parameter {ref!r} is not set", field=f"outputs.{name}")
                )
        pieces.append(template[position:])
        rendered[name] = "".join(pieces)
    if errors:
        raise ParseErrors(errors)
    return rendered


def estimate_cost(bp: Blueprint, inputs: Mapping[str, Any], *, hours: float) -> dict[str, Any]:
    """What a deployment with these inputs costs over `hours`, by the blueprint's prices.

    Each machine is priced by its size (`size_key`), each GB of volume and each
    address (one per network a machine is on, at least one per machine) per hour.
    Without a `cost` section every price is 0 and the currency is None.
    """
    if not hours >= 0 or hours == float("inf"):
        raise InvalidInput(f"invalid duration {hours} hours", field="hours")
    counts = node_counts(bp, inputs)
    cost = bp.cost or Cost()
    per_node: dict[str, dict[str, Any]] = {}
    totals = {"machines": 0, "volume_gb": 0, "addresses": 0}
    money = {"machine_cost": 0.0, "volume_cost": 0.0, "address_cost": 0.0}
    for name, node in bp.nodes.items():
        count = counts[name]
        key = size_key(node.size)
        hourly = cost.machine_hour.get(key, cost.machine_hour.get("default", 0.0))
        gigabytes = count * sum(v.size_gb for v in node.volumes)
        addresses = count * max(1, len(node.networks))
        machine_cost = count * hourly * hours
        volume_cost = gigabytes * cost.volume_gb_hour * hours
        address_cost = addresses * cost.address_hour * hours
        per_node[name] = {
            "count": count,
            "size": key,
            "machine_hour": hourly,
            "volume_gb": gigabytes,
            "addresses": addresses,
            "cost": round(machine_cost + volume_cost + address_cost, 4),
        }
        totals["machines"] += count
        totals["volume_gb"] += gigabytes
        totals["addresses"] += addresses
        money["machine_cost"] += machine_cost
        money["volume_cost"] += volume_cost
        money["address_cost"] += address_cost
    return {
        "currency": bp.cost.currency if bp.cost else None,
        "hours": hours,
        **totals,
        **{k: round(v, 4) for k, v in money.items()},
        "total": round(sum(money.values()), 4),
        "nodes": per_node,
    }
