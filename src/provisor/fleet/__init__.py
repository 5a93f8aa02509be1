"""The fleet engine: one operation over many hosts in parallel, over pooled SSH.

Names are loaded on first use (PEP 562), so code that only needs the result
types does not pay for importing asyncssh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisor.core.lazy import lazy_exports
from provisor.fleet.results import HostResult, Outcome

if TYPE_CHECKING:
    from provisor.fleet.engine import execute
    from provisor.fleet.operations import Copy, Fetch, Kill, Operation, Run
    from provisor.fleet.transport import (
        Endpoint,
        HostKeys,
        ScopedPool,
        SSHPool,
        TransportError,
    )

_LAZY = {
    "execute": "provisor.fleet.engine",
    "Copy": "provisor.fleet.operations",
    "Fetch": "provisor.fleet.operations",
    "Kill": "provisor.fleet.operations",
    "Operation": "provisor.fleet.operations",
    "Run": "provisor.fleet.operations",
    "Endpoint": "provisor.fleet.transport",
    "HostKeys": "provisor.fleet.transport",
    "ScopedPool": "provisor.fleet.transport",
    "SSHPool": "provisor.fleet.transport",
    "TransportError": "provisor.fleet.transport",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Copy",
    "Endpoint",
    "Fetch",
    "HostKeys",
    "HostResult",
    "Kill",
    "Operation",
    "Outcome",
    "Run",
    "SSHPool",
    "ScopedPool",
    "TransportError",
    "execute",
]
