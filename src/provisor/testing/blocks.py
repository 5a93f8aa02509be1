"""The loopback blocks testbed hosts live in: 127.X.0.0/16, X from `BLOCKS`."""

from __future__ import annotations

import ipaddress

BLOCKS = range(64, 251)  # second octet of the 127.X.0.0/16 blocks tests may use


def busy_blocks() -> set[int]:
    """The X of every 127.X.0.0/16 block something listens in now."""
    from provisor.machines import procs

    busy = set()
    for sock in procs.listeners():
        if isinstance(sock.address, ipaddress.IPv4Address) and sock.address.is_loopback:
            busy.add(sock.address.packed[1])
    return busy
