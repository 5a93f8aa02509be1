"""Configured providers: add, list, show, check and remove; and build one for a deployment.

A configured provider is a name in a tenant, a kind (`ec2`), settings checked by the
kind (`provisor.providers.registry`) and at most one secret, sealed before it reaches
the database and never returned, logged or recorded in an event. `local` is built in:
it is always there and needs no configuration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisor.core.access import Action
from provisor.core.errors import Conflict, InvalidInput, NotFound, ProvisorError
from provisor.core.names import check_name
from provisor.providers import registry
from provisor.providers.base import Provider, ProviderError
from provisor.services.context import Context, audited
from provisor.settings import Settings
from provisor.store import Store
from provisor.store.models import ProviderConfig
from provisor.store.orchestration import Deployment

logger = logging.getLogger(__name__)

BUILT_IN = registry.BUILT_IN
KINDS = registry.KINDS  # the provider types provisor can drive
_MAX_NAME = 64  # a deployment records its provider's name in 64 characters

# Per kind: the setting whose presence means a secret is stored with it, and what
# that secret is called (the API field, and the field named in errors).
_SECRETS: dict[str, tuple[str, str]] = {"ec2": ("access_key_id", "secret_access_key")}


class ProviderView(BaseModel):
    """A provider as shown to people and programs; its secret never leaves the store."""

    name: str
    kind: str = Field(description="the provider type: local (built in) or ec2")
    settings: dict[str, Any] = Field(description="what the type needs; no secret in here")
    has_secret: bool = Field(description="a secret is stored for it (sealed; never shown)")
    created_at: datetime | None = Field(description="none for the built-in provider")
    created_by: str | None = Field(description="none for the built-in provider")


def _view(row: ProviderConfig) -> ProviderView:
    return ProviderView(
        name=row.name,
        kind=row.kind,
        settings=dict(row.settings),
        has_secret=row.secret is not None,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _built_in_view() -> ProviderView:
    return ProviderView(
        name=BUILT_IN,
        kind=BUILT_IN,
        settings={},
        has_secret=False,
        created_at=None,
        created_by=None,
    )


def _find(session: Session, tenant_id: int, name: str, *, field: str = "name") -> ProviderConfig:
    row = session.scalar(
        select(ProviderConfig).where(
            ProviderConfig.tenant_id == tenant_id, ProviderConfig.name == name
        )
    )
    if row is None:
        raise NotFound(f"no provider named {name!r}", field=field)
    return row


def _configured_names(session: Session, tenant_id: int) -> list[str]:
    return list(
        session.scalars(
            select(ProviderConfig.name)
            .where(ProviderConfig.tenant_id == tenant_id)
            .order_by(ProviderConfig.name)
        )
    )


def _check_new_name(name: str) -> str:
    check_name(name, field="name")
    if len(name) > _MAX_NAME:
        raise InvalidInput(
            f"invalid name {name!r}: a provider name has at most {_MAX_NAME} characters",
            field="name",
        )
    if name.lower() == BUILT_IN:
        raise Conflict(f"{name!r} is the built-in provider's name; pick another name", field="name")
    return name


def _check_secret(kind: str, settings: Mapping[str, Any], secret: str | None) -> None:
    """A kind's secret goes with the setting that names the credential, and only with it."""
    setting, secret_field = _SECRETS.get(kind, ("", "secret"))
    if not setting:
        if secret is not None:
            raise InvalidInput(f"a provider of type {kind} takes no secret", field=secret_field)
        return
    if secret is not None and not secret.strip():
        raise InvalidInput(f"the {secret_field} is empty", field=secret_field)
    named = settings.get(setting) is not None
    if named and secret is None:
        raise InvalidInput(
            f"{setting} is given: give its {secret_field} as well", field=secret_field
        )
    if secret is not None and not named:
        raise InvalidInput(
            f"a {secret_field} goes with {setting}: give both, or neither to use the "
            "SDK's own credentials",
            field=secret_field,
        )


def add_provider(
    ctx: Context, name: str, kind: str, settings: dict[str, Any], secret: str | None
) -> ProviderView:
    """Configure a provider under a name; its secret (if any) is stored sealed."""
    ctx.require(Action.providers_write)
    _check_new_name(name)
    checked = registry.check_settings(kind, settings)
    _check_secret(kind, checked, secret)
    with audited(ctx, "provider.added", name) as (session, audit):
        # What was configured, never the secret itself.
        audit.details = {"kind": kind, "settings": checked, "has_secret": secret is not None}
        tenant_id = ctx.tenant_id()
        existing = session.scalar(
            select(ProviderConfig.id).where(
                ProviderConfig.tenant_id == tenant_id, ProviderConfig.name == name
            )
        )
        if existing is not None:
            raise Conflict(f"a provider named {name!r} already exists", field="name")
        from provisor.orchestrator import secrets  # asyncssh: loaded when needed

        row = ProviderConfig(
            tenant_id=tenant_id,
            name=name,
            kind=kind,
            settings=checked,
            secret=secrets.seal_given(ctx.home, secret),
            created_by=ctx.actor,
        )
        session.add(row)
        session.flush()
        return _view(row)


def list_providers(ctx: Context) -> list[ProviderView]:
    """The built-in `local`, then the tenant's configured providers by name."""
    ctx.require(Action.providers_read)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(ProviderConfig)
            .where(ProviderConfig.tenant_id == ctx.tenant_id())
            .order_by(ProviderConfig.name)
        ).all()
        return [_built_in_view(), *(_view(r) for r in rows)]


def provider_names(ctx: Context) -> list[str]:
    """Every name a deployment of this tenant may use, `local` first."""
    with ctx.store.session() as session:
        return [BUILT_IN, *_configured_names(session, ctx.tenant_id())]


def get_provider(ctx: Context, name: str) -> ProviderView:
    ctx.require(Action.providers_read)
    if name == BUILT_IN:
        return _built_in_view()
    with ctx.store.session() as session:
        return _view(_find(session, ctx.tenant_id(), name))


def remove_provider(ctx: Context, name: str) -> None:
    """Forget a provider; refused while a deployment still uses it."""
    ctx.require(Action.providers_write)
    if name == BUILT_IN:
        raise Conflict("the built-in provider local cannot be removed", field="name")
    with audited(ctx, "provider.removed", name) as (session, audit):
        tenant_id = ctx.tenant_id()
        row = _find(session, tenant_id, name)
        audit.details = {"kind": row.kind}
        using = session.scalars(
            select(Deployment.name)
            .where(
                Deployment.tenant_id == tenant_id,
                Deployment.provider == name,
                Deployment.state != "terminated",
            )
            .order_by(Deployment.name)
        ).all()
        if using:
            raise Conflict(
                f"provider {name!r} is used by deployment(s) {', '.join(using)}: "
                "remove them first (`provisor down NAME`)",
                field="name",
            )
        session.delete(row)


def provider_for(
    source: Context | Store, home: Path, local_network: str, tenant_id: int | None, name: str
) -> Provider:
    """The provider object a deployment of `tenant_id` names (see the runtime's)."""
    from provisor.orchestrator.runtime import provider_for as build  # asyncssh: when needed

    store = source.store if isinstance(source, Context) else source
    return build(store, home, local_network, tenant_id, name)


def _close(provider: Provider | None) -> None:
    """Release what a backend holds (an SDK's thread pool), for those that hold anything."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kind_and_tenant(ctx: Context, name: str) -> tuple[str, int]:
    tenant_id = ctx.tenant_id()
    if name == BUILT_IN:
        return BUILT_IN, tenant_id
    with ctx.store.session() as session:
        return _find(session, tenant_id, name).kind, tenant_id


def _record_check(
    ctx: Context,
    name: str,
    kind: str,
    seconds: float,
    description: str,
    error: ProvisorError | None,
) -> None:
    with audited(ctx, "provider.checked", name) as (_session, audit):
        audit.details = {"kind": kind, "seconds": seconds}
        if error is not None:
            raise error  # audited() records it as a failed check and raises it on
        audit.details["description"] = description


async def check_provider(ctx: Context, settings: Settings, name: str) -> str:
    """Reach the provider with its credentials: its one-line description, or a ProviderError.

    Every check is recorded (`provider.checked`), failed ones with the error.
    """
    ctx.require(Action.providers_read)
    kind, tenant_id = await asyncio.to_thread(_kind_and_tenant, ctx, name)
    started = time.monotonic()
    description = ""
    error: ProvisorError | None = None
    provider: Provider | None = None
    try:
        provider = await asyncio.to_thread(
            provider_for, ctx, ctx.home, settings.local_network, tenant_id, name
        )
        description = _one_line(await provider.check())
    except ProvisorError as exc:
        error = exc
    except Exception as exc:  # an SDK error the backend let through: still one clear line
        logger.debug("check of provider %s failed", name, exc_info=True)
        error = ProviderError(_one_line(f"{type(exc).__name__}: {exc}"), call="check")
    finally:
        _close(provider)
    seconds = round(time.monotonic() - started, 3)
    await asyncio.to_thread(_record_check, ctx, name, kind, seconds, description, error)
    return description


__all__ = [
    "BUILT_IN",
    "KINDS",
    "ProviderView",
    "add_provider",
    "check_provider",
    "get_provider",
    "list_providers",
    "provider_for",
    "provider_names",
    "remove_provider",
]
