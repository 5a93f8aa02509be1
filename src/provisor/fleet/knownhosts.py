"""provisor's known-hosts store, one per tenant, kept in the database so every process
shares it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisor.store import Store
from provisor.store.models import KnownHostKey

log = logging.getLogger(__name__)


class DatabaseHostKeys:
    """One tenant's trusted keys, loaded once; keys first seen are buffered and saved by
    `flush`.

    `trusted` and `remember` run inside the SSH handshake on the event loop, so
    they only touch memory; `flush` does the database work (call it off-loop).
    A tenant never sees another's keys: an address one tenant trusted is a stranger to
    the next, whose first connection trusts (or is refused) on its own.
    """

    def __init__(self, store: Store, tenant_id: int) -> None:
        self._store = store
        self.tenant_id = tenant_id
        with store.session() as session:
            rows = session.execute(
                select(KnownHostKey.address, KnownHostKey.port, KnownHostKey.key).where(
                    KnownHostKey.tenant_id == tenant_id
                )
            )
            self._known: dict[tuple[str, int], str] = {(a, p): k for a, p, k in rows}
        self._new: dict[tuple[str, int], str] = {}

    @property
    def scope(self) -> int:
        """Whose keys these are: pooled connections never cross from one scope to another."""
        return self.tenant_id

    def trusted(self, address: str, port: int) -> str | None:
        return self._known.get((address, port))

    def remember(self, address: str, port: int, key: str) -> None:
        self._known[(address, port)] = key
        self._new[(address, port)] = key

    def pin(self, keys: Mapping[tuple[str, int], str], *, session: Session | None = None) -> None:
        """Trust these keys (by address and port) from now on, replacing any older ones.

        Saved now, or in the caller's `session` (its transaction) when given.
        """
        if not keys:
            return
        self._known.update(keys)
        for endpoint in keys:
            self._new.pop(endpoint, None)
        if session is None:
            with self._store.session() as own:
                self.pin(keys, session=own)
            return
        session.execute(
            delete(KnownHostKey).where(
                KnownHostKey.tenant_id == self.tenant_id,
                tuple_(KnownHostKey.address, KnownHostKey.port).in_(list(keys)),
            )
        )
        session.execute(
            insert(KnownHostKey),
            [
                {"tenant_id": self.tenant_id, "address": a, "port": p, "key": key}
                for (a, p), key in keys.items()
            ],
        )

    def flush(self) -> int:
        """Save keys seen for the first time; returns how many were saved."""
        new, self._new = self._new, {}
        saved = 0
        for (address, port), key in new.items():
            try:
                with self._store.session() as session:
                    session.add(
                        KnownHostKey(tenant_id=self.tenant_id, address=address, port=port, key=key)
                    )
                saved += 1
            except IntegrityError:  # another process trusted this host meanwhile
                log.info("host key of %s:%s was recorded by another process", address, port)
        return saved


def forget_host_key(session: Session, tenant_id: int, address: str, port: int) -> bool:
    """Drop a tenant's trusted key of one endpoint, so its next connection trusts anew."""
    result = session.execute(
        delete(KnownHostKey).where(
            KnownHostKey.tenant_id == tenant_id,
            KnownHostKey.address == address,
            KnownHostKey.port == port,
        )
    )
    return bool(getattr(result, "rowcount", 0))
