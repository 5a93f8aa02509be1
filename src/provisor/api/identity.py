"""Routes for who calls: themselves (`/me`), their tokens, and their tenant's members.

Included by the application under `/api/v1`. A token's secret is in the answer that
makes it, once; no route returns it again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from provisor.api.auth import Ctx, Id
from provisor.core.access import Role
from provisor.core.errors import InvalidInput
from provisor.core.timespec import parse_duration
from provisor.services import identity

router = APIRouter(tags=["identity"])


class Me(BaseModel):
    user: str
    tenant: str = Field(description="the tenant this request acts in")
    role: Role
    tenants: list[identity.MembershipView] = Field(description="every tenant of the user")


@router.get("/me", response_model=Me)
def me(ctx: Ctx) -> Me:
    """Who the token belongs to, and what it may do where."""
    assert ctx.role is not None
    return Me(
        user=ctx.actor,
        tenant=ctx.tenant,
        role=ctx.role,
        tenants=identity.memberships_of(ctx, ctx.actor),
    )


class TokenRequest(BaseModel):
    name: Annotated[str, Field(max_length=128, description="what the token is for")] = ""
    expires_in: str = Field(default="90d", description="lifetime: 30m, 12h, 90d, 52w")


@router.get("/tokens", response_model=list[identity.TokenView])
def list_tokens(ctx: Ctx) -> list[identity.TokenView]:
    """The caller's own tokens (never their secrets)."""
    return identity.list_tokens(ctx, ctx.actor)


@router.post("/tokens", response_model=identity.NewToken, status_code=201)
def add_token(ctx: Ctx, body: TokenRequest) -> identity.NewToken:
    """A new token for the caller; its secret is shown in this answer only."""
    try:
        lifetime = parse_duration(body.expires_in, units="mhdw")
    except ValueError as exc:
        raise InvalidInput(str(exc), field="expires_in") from None
    return identity.add_token(ctx, ctx.actor, name=body.name, lifetime=lifetime)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(ctx: Ctx, token_id: Id) -> Response:
    """Revoke one of the caller's tokens."""
    identity.revoke_token(ctx, token_id)
    return Response(status_code=204)


class Grant(BaseModel):
    role: Role


@router.get("/users", response_model=list[identity.UserView])
def list_users(ctx: Ctx) -> list[identity.UserView]:
    """The tenant's members (admin)."""
    return identity.list_users(ctx)


@router.put("/users/{name}", response_model=identity.UserView)
def grant(ctx: Ctx, name: str, body: Grant) -> identity.UserView:
    """Give a user a role in the tenant, making the user when new (admin)."""
    return identity.grant(ctx, name, tenant=ctx.tenant, role=body.role)


@router.delete("/users/{name}", response_model=identity.UserView)
def revoke(ctx: Ctx, name: str) -> identity.UserView:
    """Take a user's role in the tenant away (admin); the user stays."""
    return identity.revoke_membership(ctx, name, tenant=ctx.tenant)
