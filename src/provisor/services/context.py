"""Who is acting, for which tenant, against which store; and the audit wrapper."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisor.core.errors import ProvisorError
from provisor.core.names import check_name
from provisor.events import record_event
from provisor.files import private_home
from provisor.settings import Settings, get_settings
from provisor.store import Store, Tenant


@dataclass
class Context:
    """Everything a service call needs to know about its caller."""

    store: Store
    actor: str
    tenant: str
    home: Path = field(default_factory=lambda: get_settings().home)  # job output files
    _tenant_id: int | None = field(default=None, repr=False)

    def tenant_id(self) -> int:
        """The tenant's row id, creating the tenant on first use.

        Resolved in its own short transaction (and cached) before a unit of work
        starts, so that unit never has to upgrade a read lock to a write.
        """
        if self._tenant_id is None:
            with self.store.session() as session:
                found = session.scalar(select(Tenant.id).where(Tenant.name == self.tenant))
            self._tenant_id = found if found is not None else self._create_tenant()
        return self._tenant_id

    def _create_tenant(self) -> int:
        name = check_name(self.tenant, field="tenant")
        try:
            with self.store.session() as session:
                tenant = Tenant(name=name)
                session.add(tenant)
                session.flush()
                return tenant.id
        except IntegrityError:  # another process created it first
            with self.store.session() as session:
                return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


def open_context(
    settings: Settings | None = None, *, actor: str | None = None, tenant: str | None = None
) -> Context:
    settings = settings or get_settings()
    private_home(settings.home)  # before anything is written there
    return Context(
        store=Store(settings.effective_database_url),
        actor=actor or _os_user(),
        tenant=tenant or settings.tenant,
        home=settings.home,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


_MAX_ERROR = 4000  # characters of an error kept in a failed event


@dataclass
class Audit:
    """What the event of an audited call will say; filled in by the call."""

    subject: str
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(ctx: Context, kind: str, subject: str) -> Iterator[tuple[Session, Audit]]:
    """A unit of work that leaves an event behind whatever happens.

    On success the event commits with the change. On a refused change the
    transaction is rolled back and a `failed` event is written on its own, so
    the audit log shows attempts too.
    """
    audit = Audit(subject=subject)
    ctx.tenant_id()
    try:
        with ctx.store.session() as session:
            yield session, audit
            record_event(
                session,
                actor=ctx.actor,
                tenant=ctx.tenant,
                kind=kind,
                subject=audit.subject,
                details=audit.details,
            )
    except ProvisorError as exc:
        with ctx.store.session() as session:
            record_event(
                session,
                actor=ctx.actor,
                tenant=ctx.tenant,
                kind=kind,
                subject=audit.subject,
                outcome="failed",
                details={**audit.details, "error": str(exc)[:_MAX_ERROR]},
            )
        raise


__all__ = ["Audit", "Context", "Settings", "Store", "audited", "get_settings", "open_context"]
