"""Routes for providers: configure, list, show, check and remove.

Included by the application under `/api/v1`. The secret access key is accepted when a
provider is added and stored sealed; no route ever returns it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from provisor.api.auth import Ctx
from provisor.services import providers

router = APIRouter(tags=["providers"])


class ProviderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique in the tenant; `local` is the built-in provider")
    kind: str = Field(description="provider type: " + ", ".join(providers.KINDS))
    settings: dict[str, Any] = Field(
        default_factory=dict, description="what the type needs, e.g. ec2: region, endpoint"
    )
    secret_access_key: SecretStr | None = Field(
        default=None, description="with settings.access_key_id; stored sealed, never returned"
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in providers.KINDS:
            raise ValueError(f"unknown provider type {value!r}: use {', '.join(providers.KINDS)}")
        return value


class CheckView(BaseModel):
    name: str
    description: str = Field(description="what the provider said about itself")
    seconds: float = Field(description="how long the check took")


@router.get("/providers", response_model=list[providers.ProviderView])
def list_providers(ctx: Ctx) -> list[providers.ProviderView]:
    return providers.list_providers(ctx)


@router.post("/providers", response_model=providers.ProviderView, status_code=201)
def add_provider(ctx: Ctx, body: ProviderRequest) -> providers.ProviderView:
    secret = body.secret_access_key.get_secret_value() if body.secret_access_key else None
    return providers.add_provider(ctx, body.name, body.kind, body.settings, secret)


@router.get("/providers/{name}", response_model=providers.ProviderView)
def get_provider(ctx: Ctx, name: str) -> providers.ProviderView:
    return providers.get_provider(ctx, name)


@router.delete("/providers/{name}", status_code=204)
def remove_provider(ctx: Ctx, name: str) -> Response:
    providers.remove_provider(ctx, name)
    return Response(status_code=204)


@router.post("/providers/{name}/check", response_model=CheckView)
async def check_provider(ctx: Ctx, request: Request, name: str) -> CheckView:
    """Reach the provider with its credentials; a failure answers 502 with the reason."""
    started = time.monotonic()
    description = await providers.check_provider(ctx, request.app.state.settings, name)
    return CheckView(
        name=name, description=description, seconds=round(time.monotonic() - started, 3)
    )
