"""Routes for blueprints: validate, add a version, list, show.

Included by the application under `/api/v1`. A blueprint with problems answers 400
with one entry per problem in `error.errors`, each located `source:line:column`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from provisor.api.auth import Ctx
from provisor.core.access import Action
from provisor.services import blueprints

router = APIRouter(tags=["blueprints"])


class BlueprintText(BaseModel):
    text: str = Field(description="the blueprint's YAML")
    source: str = Field(default="<upload>", description="name used in error locations")


class ValidateRequest(BlueprintText):
    params: dict[str, str | int | bool] = Field(
        default_factory=dict, description="inputs to check as well, NAME -> VALUE"
    )


@router.post("/blueprints/validate", response_model=blueprints.BlueprintSummary)
def validate_blueprint(ctx: Ctx, body: ValidateRequest) -> blueprints.BlueprintSummary:
    """Check a blueprint (and parameters) without storing anything."""
    ctx.require(Action.catalog_read)
    bp = blueprints.validate_blueprint(body.text, body.source)
    return blueprints.summarize_blueprint(bp, body.params or None)


@router.post("/blueprints", response_model=blueprints.BlueprintView, status_code=201)
def add_blueprint(ctx: Ctx, body: BlueprintText) -> blueprints.BlueprintView:
    return blueprints.add_blueprint(ctx, body.text, body.source)


@router.get("/blueprints", response_model=list[blueprints.BlueprintView])
def list_blueprints(
    ctx: Ctx, name: Annotated[str | None, Query(description="only this blueprint")] = None
) -> list[blueprints.BlueprintView]:
    return blueprints.list_blueprints(ctx, name=name)


@router.get("/blueprints/{name}", response_model=blueprints.BlueprintDetail)
def get_blueprint(
    ctx: Ctx,
    name: str,
    version: Annotated[str | None, Query(description="default: the latest")] = None,
) -> blueprints.BlueprintDetail:
    return blueprints.get_blueprint(ctx, name, version)
