"""Users, their role in each tenant, and the API tokens they call the server with.

A token is `pvs_<id>_<secret>`: a 256-bit random secret of which only the SHA-256 is
kept, shown once when made, with a name and an expiry. The owner of the local data
directory manages every user and token; over the API an admin manages the members of
their own tenant, and every user their own tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from provisor.core.access import Action, Role
from provisor.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from provisor.core.names import check_name
from provisor.events import record_event
from provisor.services.context import Context, Store, audited
from provisor.store.identity import ApiToken, Membership, User
from provisor.store.models import Tenant

TOKEN_PREFIX = "pvs"  # noqa: S105 (a label, not a secret: tells provisor tokens apart)
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)
AUTH_TENANT = "system"  # where failed sign-ins are recorded: the caller's tenant is unknown


class MembershipView(BaseModel):
    tenant: str
    role: Role


class UserView(BaseModel):
    name: str
    memberships: list[MembershipView]
    created_at: datetime


class TokenView(BaseModel):
    id: int
    user: str
    tenant: str = Field(description="where it acts unless a request selects another")
    name: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    state: str  # active, expired or revoked


class NewToken(BaseModel):
    """A token just made: `secret` is shown this once and kept nowhere."""

    token: TokenView
    secret: str


@dataclass(frozen=True)
class Principal:
    """Who a request is from, acting in which tenant with which role."""

    user: str
    tenant: str
    role: Role
    memberships: tuple[MembershipView, ...]


# Users and memberships


def _is_owner(ctx: Context) -> bool:
    return ctx.role is None


def _user(session: Session, name: str) -> User:
    user = session.scalar(
        select(User).where(User.name == name).options(selectinload(User.memberships))
    )
    if user is None:
        raise NotFound(f"no user named {name!r}", field="user")
    return user


def _member_of(ctx: Context, user: User) -> bool:
    return any(m.tenant.name == ctx.tenant for m in user.memberships)


def _visible_user(ctx: Context, session: Session, name: str) -> User:
    """A user the caller may manage: any for the owner, a member of the tenant for an
    admin (another tenant's user is not found)."""
    user = _user(session, name)
    if not _is_owner(ctx) and not _member_of(ctx, user):
        raise NotFound(f"no user named {name!r}", field="user")
    return user


def _user_view(user: User, *, tenant: str | None = None) -> UserView:
    memberships = sorted(
        (MembershipView(tenant=m.tenant.name, role=Role(m.role)) for m in user.memberships),
        key=lambda m: m.tenant,
    )
    if tenant is not None:  # a tenant admin sees only their tenant's side of a user
        memberships = [m for m in memberships if m.tenant == tenant]
    return UserView(name=user.name, memberships=memberships, created_at=user.created_at)


def _tenant_row(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=check_name(name, field="tenant"))
        session.add(tenant)
        session.flush()
    return tenant


def grant(ctx: Context, name: str, *, tenant: str, role: Role | str) -> UserView:
    """Give `name` a role in `tenant`, making the user when new; an admin grants in
    their own tenant only."""
    ctx.require(Action.users_manage, name)
    check_name(name, field="user")
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}", field="role"
        ) from None
    if not _is_owner(ctx) and tenant != ctx.tenant:
        raise NotFound(f"no tenant named {tenant!r}", field="tenant")
    with audited(ctx, "user.granted", name) as (session, audit):
        user = session.scalar(
            select(User).where(User.name == name).options(selectinload(User.memberships))
        )
        if user is None:
            user = User(name=name)
            session.add(user)
            session.flush()
        row = _tenant_row(session, tenant)
        membership = next((m for m in user.memberships if m.tenant_id == row.id), None)
        if membership is None:
            user.memberships.append(Membership(tenant=row, role=role.value))
        else:
            membership.role = role.value
        session.flush()
        audit.details = {"tenant": tenant, "role": role.value}
        return _user_view(user, tenant=None if _is_owner(ctx) else ctx.tenant)


def revoke_membership(ctx: Context, name: str, *, tenant: str) -> UserView:
    """Take `name`'s role in `tenant` away (the user and their tokens stay)."""
    ctx.require(Action.users_manage, name)
    if not _is_owner(ctx) and tenant != ctx.tenant:
        raise NotFound(f"no tenant named {tenant!r}", field="tenant")
    with audited(ctx, "user.revoked", name) as (session, audit):
        user = _visible_user(ctx, session, name)
        kept = [m for m in user.memberships if m.tenant.name != tenant]
        if len(kept) == len(user.memberships):
            raise NotFound(f"user {name!r} has no role in tenant {tenant!r}", field="tenant")
        user.memberships = kept
        session.flush()
        audit.details = {"tenant": tenant}
        return _user_view(user, tenant=None if _is_owner(ctx) else ctx.tenant)


def remove_user(ctx: Context, name: str) -> None:
    """Delete a user, their memberships and their tokens (the owner's call only: a user
    may belong to tenants an admin does not see)."""
    if not _is_owner(ctx):
        ctx.require(Action.users_manage, name)
        raise ctx.deny(
            "removing a user is for the owner of the data directory: it may end their "
            f"access to other tenants; take their role in {ctx.tenant!r} away instead",
            name,
        )
    with audited(ctx, "user.removed", name) as (session, _):
        session.delete(_user(session, name))


def memberships_of(ctx: Context, name: str) -> list[MembershipView]:
    """Every tenant `name` belongs to: one's own, or anyone's for the owner."""
    if not _is_owner(ctx) and name != ctx.actor:
        raise NotFound(f"no user named {name!r}", field="user")
    with ctx.store.session() as session:
        return _user_view(_user(session, name)).memberships


def list_users(ctx: Context) -> list[UserView]:
    """Every user for the owner; the members of the tenant for its admin."""
    ctx.require(Action.users_manage)
    with ctx.store.session() as session:
        users = session.scalars(
            select(User).options(selectinload(User.memberships)).order_by(User.name)
        ).all()
        if _is_owner(ctx):
            return [_user_view(u) for u in users]
        return [_user_view(u, tenant=ctx.tenant) for u in users if _member_of(ctx, u)]


# Tokens


def _token_view(row: ApiToken, now: datetime) -> TokenView:
    state = "revoked" if row.revoked_at else "expired" if row.expires_at <= now else "active"
    return TokenView(
        id=row.id,
        user=row.user.name,
        tenant=row.tenant.name,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        state=state,
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _own_or_owner(ctx: Context, user: str) -> None:
    """Tokens are the owner's to give anyone; over the API, a user's own only (an admin
    of one tenant must not mint a key to another tenant the user belongs to)."""
    if not _is_owner(ctx) and user != ctx.actor:
        raise NotFound(f"no user named {user!r}", field="user")


def add_token(
    ctx: Context,
    user: str,
    *,
    tenant: str | None = None,
    name: str = "",
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> NewToken:
    """A new token for `user`, valid for `lifetime`, acting in `tenant` (one of the
    user's; by default the only one, or the caller's over the API). Its secret is in
    the answer only."""
    _own_or_owner(ctx, user)
    if not timedelta(minutes=1) <= lifetime <= MAX_LIFETIME:
        raise InvalidInput(
            f"a token lives between 1 minute and {MAX_LIFETIME.days} days", field="expires"
        )
    label = name or "token"
    if len(label) > 128:
        raise InvalidInput("a token name has at most 128 characters", field="name")
    secret = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with audited(ctx, "token.added", user) as (session, audit):
        owner = _user(session, user)
        home = tenant or (ctx.tenant if not _is_owner(ctx) else None)
        membership = _choose_tenant(tuple(_user_view(owner).memberships), home, user)
        row = ApiToken(
            user=owner,
            tenant=_tenant_row(session, membership.tenant),
            name=label,
            secret_hash=_digest(secret),
            created_at=now,
            expires_at=now + lifetime,
        )
        session.add(row)
        session.flush()
        audit.details = {
            "token": row.id,
            "name": label,
            "tenant": membership.tenant,
            "expires_at": row.expires_at.isoformat(),
        }
        return NewToken(token=_token_view(row, now), secret=f"{TOKEN_PREFIX}_{row.id}_{secret}")


def list_tokens(ctx: Context, user: str | None = None) -> list[TokenView]:
    """Tokens of `user` (the owner: of everyone when None; over the API: one's own)."""
    if not _is_owner(ctx):
        user = ctx.actor if user is None else user
        _own_or_owner(ctx, user)
    now = datetime.now(UTC)
    with ctx.store.session() as session:
        statement = select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id)
        if user is not None:
            statement = statement.where(ApiToken.user_id == _user(session, user).id)
        return [_token_view(row, now) for row in session.scalars(statement)]


def revoke_token(ctx: Context, token_id: int) -> TokenView:
    """Revoke a token at once; revoking again changes nothing."""
    now = datetime.now(UTC)
    with audited(ctx, "token.revoked", str(token_id)) as (session, audit):
        row = session.get(ApiToken, token_id, options=[selectinload(ApiToken.user)])
        if row is None or not (_is_owner(ctx) or row.user.name == ctx.actor):
            raise NotFound(f"no token {token_id}", field="id")
        if row.revoked_at is None:
            row.revoked_at = now
        audit.subject = row.user.name
        audit.details = {"token": row.id, "name": row.name}
        return _token_view(row, now)


# Signing in


def _refuse(store: Store, reason: str, actor: str, client: str) -> Unauthenticated:
    """Record a refused sign-in (every denial is an event) and the error to raise."""
    with store.session() as session:
        record_event(
            session,
            actor=actor,
            tenant=AUTH_TENANT,
            kind="auth.refused",
            subject=actor,
            outcome="failed",
            details={"reason": reason, "client": client},
        )
    return Unauthenticated(reason, field="authorization")


def authenticate(
    store: Store, credential: str | None, *, tenant: str | None = None, client: str = ""
) -> Principal:
    """Who presents `credential` (a token), acting in `tenant` (one they belong to; the
    only one when they belong to one). Unknown, malformed, expired or revoked tokens are
    refused alike in what they reveal to someone who does not hold the secret."""
    if not credential:
        raise _refuse(
            store,
            "a bearer token is required (Authorization: Bearer <token>)",
            "anonymous",
            client,
        )
    prefix, _, rest = credential.partition("_")
    token_id, _, secret = rest.partition("_")
    well_formed = token_id.isascii() and token_id.isdigit() and len(token_id) <= 18
    if prefix != TOKEN_PREFIX or not well_formed or not secret or len(secret) > 128:
        raise _refuse(store, "invalid token", "anonymous", client)
    now = datetime.now(UTC)
    with store.session() as session:
        row = session.get(ApiToken, int(token_id), options=[selectinload(ApiToken.user)])
        if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
            raise _refuse(store, "invalid token", "anonymous", client)
        user = row.user
        if row.revoked_at is not None:
            raise _refuse(store, f"token {row.id} was revoked", user.name, client)
        if row.expires_at <= now:
            raise _refuse(store, f"token {row.id} expired", user.name, client)
        memberships = tuple(_user_view(user).memberships)
        chosen = _choose_tenant(memberships, tenant or row.tenant.name, user.name)
    return Principal(
        user=user.name, tenant=chosen.tenant, role=chosen.role, memberships=memberships
    )


def _choose_tenant(
    memberships: tuple[MembershipView, ...], tenant: str | None, user: str
) -> MembershipView:
    if tenant is not None:
        for membership in memberships:
            if membership.tenant == tenant:
                return membership
        # Not a member: the tenant is not found (its existence is not told either).
        raise NotFound(f"no tenant named {tenant!r} for user {user!r}", field="tenant")
    if len(memberships) == 1:
        return memberships[0]
    if not memberships:
        raise Conflict(f"user {user!r} has no role in any tenant", field="tenant")
    names = ", ".join(m.tenant for m in memberships)
    raise InvalidInput(
        f"user {user!r} belongs to several tenants ({names}): choose one with the "
        "X-Provisor-Tenant header (--tenant)",
        field="tenant",
    )


__all__ = [
    "AUTH_TENANT",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "MembershipView",
    "NewToken",
    "Principal",
    "TokenView",
    "UserView",
    "add_token",
    "authenticate",
    "grant",
    "list_tokens",
    "list_users",
    "memberships_of",
    "remove_user",
    "revoke_membership",
    "revoke_token",
]
