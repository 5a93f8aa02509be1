"""Routes for blueprints: validate, add a version, list, show.

Included by the application under `/api/v1`. A blueprint with problems answers 400
with one entry per problem in `error.errors`, each located `source:line:column`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from provisor.api.routes import Ctx
from provisor.services import blueprints as service

router = APIRouter(tags=["blueprints"])


class BlueprintText(BaseModel):
    text: str = Field(description="the blueprint's YAML")
    source: str = Field(default="<upload>", description="name used in error locations")


class ValidateRequest(BlueprintText):
    params: dict[str, str | int | bool] = Field(
        default_factory=dict, description="inputs to check as well, NAME -> VALUE"
    )


@router.post("/blueprints/validate", response_model=service.BlueprintSummary)
def validate_blueprint(body: ValidateRequest) -> service.BlueprintSummary:
    bp = service.validate_blueprint(body.text, body.source)
    return service.summarize_blueprint(bp, body.params or None)


@router.post("/blueprints", response_model=service.BlueprintView, status_code=201)
def add_blueprint(ctx: Ctx, body: BlueprintText) -> service.BlueprintView:
    return service.add_blueprint(ctx, body.text, body.source)


@router.get("/blueprints", response_model=list[service.BlueprintView])
def list_blueprints(
    ctx: Ctx, name: Annotated[str | None, Query(description="only this blueprint")] = None
) -> list[service.BlueprintView]:
    return service.list_blueprints(ctx, name=name)


@router.get("/blueprints/{name}", response_model=service.BlueprintDetail)
def get_blueprint(
    ctx: Ctx,
    name: str,
    version: Annotated[str | None, Query(description="default: the latest")] = None,
) -> service.BlueprintDetail:
    return service.get_blueprint(ctx, name, version)
