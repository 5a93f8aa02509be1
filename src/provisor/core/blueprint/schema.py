"""The `Blueprint` model itself, its JSON Schema (docs/blueprint.schema.json) and the
order of versions; it sits above the cross-field checks because its own validator runs
them, so a `Blueprint` that exists is consistent, and its parts are the models of
`parts`.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from provisor.core.blueprint._model import _Model
from provisor.core.blueprint.checks import _problems
from provisor.core.blueprint.fields import (
    _LEASE,
    _LEASE_UNITS,
    _NODE,
    _PARAM,
    _VERSION,
    _lease,
    _name,
    _provider,
    _version,
)
from provisor.core.blueprint.parts import Cost, Ingress, Node, Parameter, _matching
from provisor.core.timespec import parse_duration
from provisor.core.yamlpos import dotted


class Blueprint(_Model):
    """A versioned template of a multi-machine service."""

    name: Annotated[str, AfterValidator(_name)]
    version: Annotated[str, AfterValidator(_version), _matching(_VERSION)]
    description: str = ""
    approval: Literal["required", "none"] = Field(
        default="none", description="whether a deployment waits for an approver"
    )
    lease: Annotated[
        str | None, AfterValidator(_lease), _matching(f"{_LEASE.pattern}|none", nullable=True)
    ] = Field(
        default=None, description="default lifetime of a deployment: 90m, 12h, 30d, 2w, or none"
    )
    lease_end: Literal["stop", "terminate"] = Field(
        default="stop",
        description="at the end of the lease: stop the machines (disks kept) or terminate them",
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
        # The loader finds and locates them all again; here the first few say enough.
        problems = _problems(self.parameters, self.nodes, self.outputs, self.cost, limit=20)
        if problems:
            raise ValueError("; ".join(f"{dotted(p.path)}: {p.message}" for p in problems[:20]))
        return self

    @property
    def lease_duration(self) -> timedelta | None:
        """The default lease as a duration, or None for no lease."""
        if self.lease is None:
            return None
        return parse_duration(self.lease, units=_LEASE_UNITS)


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
