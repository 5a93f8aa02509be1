"""Use cases on blueprints: validate, add a version, list, show.

A blueprint is stored as the YAML text it was added with, one row per version, per
tenant. Nothing secret is ever stored: a secret parameter cannot have a default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provisor.core.access import Action
from provisor.core.blueprint import (
    Blueprint,
    estimate_cost,
    load_blueprint,
    node_counts,
    node_order,
    resolve_inputs,
    version_key,
)
from provisor.core.errors import Conflict, NotFound, ParseErrors
from provisor.services.context import Context, audited
from provisor.store.models import Blueprint as BlueprintRow

__all__ = [
    "BlueprintDetail",
    "BlueprintSummary",
    "BlueprintView",
    "ParameterSummary",
    "add_blueprint",
    "get_blueprint",
    "list_blueprints",
    "load_stored_blueprint",
    "summarize_blueprint",
    "validate_blueprint",
]


class ParameterSummary(BaseModel):
    type: str
    required: bool
    default: str | int | bool | None = None
    description: str = ""


class BlueprintSummary(BaseModel):
    """What a valid blueprint holds, for people checking it."""

    name: str
    version: str
    description: str
    approval: str
    lease: str | None
    nodes: dict[str, int | str] = Field(description="each node's count, or the parameter giving it")
    machines: int | None = Field(
        description="machines with the default (and given) inputs; null when a count "
        "parameter has no default and was not given"
    )
    waves: list[list[str]] = Field(description="launch order: each wave after the previous")
    parameters: dict[str, ParameterSummary]
    outputs: list[str]
    currency: str | None = None
    cost_per_hour: float | None = Field(default=None, description="with the same inputs")


class BlueprintView(BaseModel):
    """One stored version of a blueprint."""

    name: str
    version: str
    description: str
    approval: str
    nodes: dict[str, int | str]
    parameters: dict[str, str] = Field(description="name -> type")
    sha256: str
    created_by: str
    created_at: datetime
    tenant: str


class BlueprintDetail(BlueprintView):
    text: str = Field(description="the YAML, as it was added")


def validate_blueprint(text: str, source: str = "<blueprint>") -> Blueprint:
    """Check a blueprint without storing it; raises `ParseErrors` listing every problem."""
    return load_blueprint(text, source)


def summarize_blueprint(bp: Blueprint, given: Mapping[str, Any] | None = None) -> BlueprintSummary:
    """The blueprint in brief. With `given` inputs, they are checked too (`ParseErrors`)."""
    inputs: dict[str, Any] = resolve_inputs(bp, given) if given else {}
    machines: int | None = None
    cost: float | None = None
    try:
        machines = sum(node_counts(bp, inputs).values())
    except ParseErrors as exc:
        if any("is required" not in e.message for e in exc.errors):
            raise  # counts `up` would refuse (too many machines), not just unknown ones
    else:
        if bp.cost is not None:
            cost = estimate_cost(bp, inputs, hours=1)["total"]
    return BlueprintSummary(
        name=bp.name,
        version=bp.version,
        description=bp.description,
        approval=bp.approval,
        lease=bp.lease,
        nodes={name: node.count for name, node in bp.nodes.items()},
        machines=machines,
        waves=node_order(bp),
        parameters={
            name: ParameterSummary(
                type=p.type, required=p.required, default=p.default, description=p.description
            )
            for name, p in bp.parameters.items()
        },
        outputs=list(bp.outputs),
        currency=bp.cost.currency if bp.cost else None,
        cost_per_hour=cost,
    )


def _view(row: BlueprintRow, tenant: str) -> BlueprintView:
    return BlueprintView(
        name=row.name,
        version=row.version,
        description=row.description,
        approval=row.approval,
        nodes=dict(row.summary.get("nodes", {})),
        parameters=dict(row.summary.get("parameters", {})),
        sha256=row.sha256,
        created_by=row.created_by,
        created_at=row.created_at,
        tenant=tenant,
    )


def _detail(row: BlueprintRow, tenant: str) -> BlueprintDetail:
    return BlueprintDetail(**_view(row, tenant).model_dump(), text=row.text)


def add_blueprint(ctx: Context, text: str, source: str = "<blueprint>") -> BlueprintView:
    """Store a new version of the blueprint named in the text, at its `version`.

    Adding the same name and version again is a no-op when the text is identical
    and a `Conflict` otherwise: a stored version never changes.
    """
    ctx.require(Action.catalog_write)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with audited(ctx, "blueprint.added", source) as (session, audit):
        bp = load_blueprint(text, source)
        audit.subject = bp.name
        audit.details = {"version": bp.version, "sha256": digest, "source": source}
        tenant_id = ctx.tenant_id()
        existing = session.scalar(
            select(BlueprintRow).where(
                BlueprintRow.tenant_id == tenant_id,
                BlueprintRow.name == bp.name,
                BlueprintRow.version == bp.version,
            )
        )
        if existing is not None:
            if existing.text == text:
                audit.details["unchanged"] = True
                return _view(existing, ctx.tenant)
            raise Conflict(
                f"blueprint {bp.name!r} version {bp.version!r} is already stored with a "
                "different text; stored versions never change, so give this one a new version",
                field="version",
            )
        row = BlueprintRow(
            tenant_id=tenant_id,
            name=bp.name,
            version=bp.version,
            description=bp.description,
            approval=bp.approval,
            text=text,
            sha256=digest,
            summary={
                "nodes": {name: node.count for name, node in bp.nodes.items()},
                "parameters": {name: p.type for name, p in bp.parameters.items()},
            },
            created_by=ctx.actor,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                f"blueprint {bp.name!r} version {bp.version!r} was added at the same time "
                "by someone else",
                field="version",
            ) from None
        return _view(row, ctx.tenant)


def _rows(ctx: Context, name: str | None = None) -> list[BlueprintRow]:
    tenant_id = ctx.tenant_id()
    with ctx.store.session() as session:
        query = select(BlueprintRow).where(BlueprintRow.tenant_id == tenant_id)
        if name is not None:
            query = query.where(BlueprintRow.name == name)
        rows = list(session.scalars(query))
    return sorted(rows, key=lambda r: (r.name, version_key(r.version)))


def list_blueprints(ctx: Context, *, name: str | None = None) -> list[BlueprintView]:
    """Every stored version (of one blueprint, with `name`), by name then version."""
    ctx.require(Action.catalog_read)
    return [_view(row, ctx.tenant) for row in _rows(ctx, name)]


_LISTED = 20  # stored names or versions an error lists at most


def get_blueprint(ctx: Context, name: str, version: str | None = None) -> BlueprintDetail:
    """One version of a blueprint with its text: the given one, or the latest
    (versions compare part by part, numbers as numbers: 1.10 is after 1.9)."""
    ctx.require(Action.catalog_read)
    rows = _rows(ctx, name)
    if not rows:
        stored = sorted({r.name for r in _rows(ctx, None)})
        raise NotFound(
            f"no blueprint named {name!r} in the catalog: give the blueprint's file (a path "
            "ending in .yaml), or store it first (provisor blueprints add FILE; "
            "POST /blueprints)"
            + (f"; stored: {', '.join(stored[:_LISTED])}" if stored else "; the catalog is empty"),
            field="name",
        )
    if version is None:
        return _detail(rows[-1], ctx.tenant)
    for row in rows:
        if row.version == version:
            return _detail(row, ctx.tenant)
    versions = [r.version for r in rows]  # oldest first
    shown = ", ".join(versions[-_LISTED:])
    raise NotFound(
        f"blueprint {name!r} has no version {version!r} in the catalog; stored: "
        + (f"{shown} (and {len(versions) - _LISTED} older)" if len(versions) > _LISTED else shown)
        + f". Give {name}@{versions[-1]} (or {name} alone, the newest), the file of version "
        f"{version}, or store it first: provisor blueprints add FILE",
        field="version",
    )


def load_stored_blueprint(
    ctx: Context, name: str, version: str | None = None
) -> tuple[BlueprintDetail, Blueprint]:
    """A stored version, read back into a `Blueprint` (for deployments)."""
    ctx.require(Action.catalog_read)
    detail = get_blueprint(ctx, name, version)
    return detail, load_blueprint(detail.text, f"{detail.name}@{detail.version}")
