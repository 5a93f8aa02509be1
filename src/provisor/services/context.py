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

from provisor.core.access import Action, Role, allows
from provisor.core.errors import Forbidden, ProvisorError
from provisor.core.names import check_name
from provisor.events import record_event
from provisor.files import private_home
from provisor.settings import Settings, get_settings
from provisor.store import Store, Tenant


@dataclass
class Context:
    """Everything a service call needs to know about its caller.

    `role` is the caller's role in `tenant` (from its API token); None is the owner of
    the local data directory, who may do everything.
    """

    store: Store
    actor: str
    tenant: str
    home: Path = field(default_factory=lambda: get_settings().home)  # job output files
    role: Role | None = None
    _tenant_id: int | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        """The owner of the local data directory, on this computer: the only caller whose
        requests may name files here (keys, target lists, files to copy)."""
        return self.role is None

    def allows(self, action: Action) -> bool:
        return allows(self.role, action)

    def require(self, action: Action, subject: str = "") -> None:
        """Go on only if the caller's role allows `action`; a refusal is an event."""
        if not self.allows(action):
            raise self.deny(
                f"role {self.role} in tenant {self.tenant!r} may not {action.value}",
                subject or action.value,
                action=action.value,
            )

    def deny(self, message: str, subject: str, **details: str) -> Forbidden:
        """Record a refusal (every denial is an event) and return the error to raise."""
        self.record_refusal("access.denied", subject, message, **details)
        return Forbidden(message)

    def record_refusal(self, kind: str, subject: str, reason: str, **details: str) -> None:
        """An event for a request that was refused (`access.denied`, `access.not_found`),
        written on its own: the request changed nothing else."""
        with self.store.session() as session:
            record_event(
                session,
                actor=self.actor,
                tenant=self.tenant,
                kind=kind,
                subject=subject[:500],
                outcome="failed",
                details={**details, "role": str(self.role), "reason": reason[:1000]},
            )

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


__all__ = [
    "Action",
    "Audit",
    "Context",
    "Settings",
    "Store",
    "audited",
    "get_settings",
    "open_context",
]
