"""Routes for stored SSH keys: upload one (its content, never a path), list, remove.

Included by the application under `/api/v1`. A private key goes in once and is never
returned; hosts name it in their credentials as `key:NAME`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, SecretStr

from provisor.api.auth import Ctx
from provisor.services import keys

router = APIRouter(tags=["keys"])


class KeyUpload(BaseModel):
    name: str = Field(description="what hosts call it: credentials key:NAME")
    private_key: SecretStr = Field(description="the private key itself, OpenSSH or PEM")


@router.get("/keys", response_model=list[keys.KeyView])
def list_keys(ctx: Ctx) -> list[keys.KeyView]:
    return keys.list_keys(ctx)


@router.post("/keys", response_model=keys.KeyView, status_code=201)
def add_key(ctx: Ctx, body: KeyUpload) -> keys.KeyView:
    """Store a private key, sealed; the answer shows its public half and fingerprint."""
    return keys.add_key(ctx, body.name, body.private_key.get_secret_value())


@router.delete("/keys/{name}", status_code=204)
def remove_key(ctx: Ctx, name: str) -> Response:
    keys.remove_key(ctx, name)
    return Response(status_code=204)
