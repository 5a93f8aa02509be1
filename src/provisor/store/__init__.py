"""Persistence: SQLAlchemy models and the database they live in."""

from provisor.store import (  # noqa: F401 - register their tables
    alerts,
    backups,
    changes,
    health,
    identity,
    orchestration,
    passwords,
    patches,
)
from provisor.store.db import Store, StoreUnavailable, migrate
from provisor.store.models import Base, Event, Group, Host, Tenant

__all__ = ["Base", "Event", "Group", "Host", "Store", "StoreUnavailable", "Tenant", "migrate"]
