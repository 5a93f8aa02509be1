"""The fleet engine: one operation over many hosts in parallel, over pooled SSH."""

from provisor.fleet.engine import execute
from provisor.fleet.operations import Copy, Fetch, Kill, Operation, Run
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint, HostKeys, SSHPool, TransportError

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
    "TransportError",
    "execute",
]
