"""Persistence: SQLAlchemy models and the database they live in.

The package loads the database layer and the core models (models.py); each other
model module (alerts, backups, ...) loads with the code that uses it, so a command pays
only for the tables it touches. `Base` taken from here is the whole schema: it loads
every model module first, for whoever compares or clears all of it (migrations, tests).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from provisor.store.db import Store, StoreUnavailable, migrate
from provisor.store.models import Event, Group, Host, Tenant

if TYPE_CHECKING:
    from provisor.store.models import Base

MODEL_MODULES = (
    "alerts",
    "backups",
    "changes",
    "health",
    "identity",
    "orchestration",
    "passwords",
    "patches",
)


def __getattr__(name: str) -> Any:
    if name == "Base":
        for module in MODEL_MODULES:
            importlib.import_module(f"provisor.store.{module}")
        from provisor.store.models import Base

        return Base
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Base", "Event", "Group", "Host", "Store", "StoreUnavailable", "Tenant", "migrate"]
