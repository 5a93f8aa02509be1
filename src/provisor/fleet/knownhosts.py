"""provisor's known-hosts store, one per tenant, kept in the database so every process
shares it.

A key belongs to an identity (`Endpoint.trusts`), not to an address: an inventory
host (`host:<id>`), a deployment's machine (`machine:<provider>/<instance id>`), or,
for an endpoint outside the inventory, its address and port (`addr:<address>:<port>`).
A cloud address recycled to a new machine, or a host removed and another added at its
address, is never judged by the key of the one before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisor._asyncssh import asyncssh
from provisor.fleet.transport import Endpoint
from provisor.store import Store
from provisor.store.models import KnownHostKey

log = logging.getLogger(__name__)

# Of the keys a machine reports, the one pinned: the controller then asks for that
# algorithm only, so the machine presents exactly the key pinned.
_PREFERRED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
MAX_REPORTED_KEYS = 16


class DatabaseHostKeys:
    """One tenant's trusted keys, loaded once; keys first seen are buffered and saved by
    `flush`.

    `trusted` and `remember` run inside the SSH handshake on the event loop, so
    they only touch memory; `flush` does the database work (call it off-loop).
    A tenant never sees another's keys: a host one tenant trusted is a stranger to
    the next, whose first connection trusts (or is refused) on its own.
    """

    def __init__(self, store: Store, tenant_id: int) -> None:
        self._store = store
        self.tenant_id = tenant_id
        with store.session() as session:
            rows = session.execute(
                select(KnownHostKey.subject, KnownHostKey.key).where(
                    KnownHostKey.tenant_id == tenant_id
                )
            )
            self._known: dict[str, str] = {subject: key for subject, key in rows}
        self._new: dict[str, tuple[Endpoint, str]] = {}

    @property
    def scope(self) -> int:
        """Whose keys these are: pooled connections never cross from one scope to another."""
        return self.tenant_id

    def trusted(self, endpoint: Endpoint) -> str | None:
        return self._known.get(endpoint.trusts)

    def remember(self, endpoint: Endpoint, key: str) -> None:
        self._known[endpoint.trusts] = key
        self._new[endpoint.trusts] = (endpoint, key)

    def pin(self, keys: Mapping[Endpoint, str], *, session: Session | None = None) -> None:
        """Trust these keys (each for its endpoint's identity) from now on, replacing any
        older ones.

        Saved now, or in the caller's `session` (its transaction) when given.
        """
        if not keys:
            return
        for endpoint, key in keys.items():
            self._known[endpoint.trusts] = key
            self._new.pop(endpoint.trusts, None)
        if session is None:
            with self._store.session() as own:
                self.pin(keys, session=own)
            return
        session.execute(
            delete(KnownHostKey).where(
                KnownHostKey.tenant_id == self.tenant_id,
                KnownHostKey.subject.in_([e.trusts for e in keys]),
            )
        )
        session.execute(insert(KnownHostKey), [self._row(e, k) for e, k in keys.items()])

    def flush(self) -> int:
        """Save keys seen for the first time; returns how many were saved.

        All in one statement; only if that fails (another process trusted one of them
        meanwhile, or its host is gone) one by one, so that the others are still saved.
        """
        new, self._new = self._new, {}
        if not new:
            return 0
        try:
            with self._store.session() as session:
                session.execute(insert(KnownHostKey), [self._row(e, k) for e, k in new.values()])
            return len(new)
        except IntegrityError:
            pass
        saved = 0
        for endpoint, key in new.values():
            try:
                with self._store.session() as session:
                    session.execute(insert(KnownHostKey), [self._row(endpoint, key)])
                saved += 1
            except IntegrityError:  # another process trusted it meanwhile, or it is gone
                log.info("host key of %s was not recorded: known already", endpoint.trusts)
        return saved

    def _row(self, endpoint: Endpoint, key: str) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "subject": endpoint.trusts,
            "host_id": endpoint.host_id,
            "address": endpoint.address,
            "port": endpoint.port,
            "key": key,
        }


def forget_host_keys(
    session: Session,
    tenant_id: int,
    *,
    host_ids: Collection[int] = (),
    subjects: Collection[str] = (),
) -> int:
    """Drop a tenant's trusted keys of inventory hosts (whatever identity they were
    recorded under) and of these identities; the next connection trusts anew.
    Returns how many were dropped."""
    which = [KnownHostKey.subject.in_(list(subjects))] if subjects else []
    if host_ids:
        which.append(KnownHostKey.host_id.in_(list(host_ids)))
    if not which:
        return 0
    result = session.execute(
        delete(KnownHostKey).where(KnownHostKey.tenant_id == tenant_id, or_(*which))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def public_keys(text: str) -> list[str]:
    """OpenSSH public key lines (a machine's host keys), checked and without comments;
    ValueError names the first line that is no key."""
    keys: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            key = asyncssh.import_public_key(line.strip())
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(f"not an OpenSSH public key: {line.strip()[:60]!r}") from None
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        keys.append(f"{algorithm} {blob}")
        if len(keys) > MAX_REPORTED_KEYS:
            raise ValueError(f"more than {MAX_REPORTED_KEYS} keys")
    if not keys:
        raise ValueError("no public key given")
    return keys


def preferred_key(keys: Sequence[str]) -> str:
    """The one of a machine's host keys to pin: ed25519 first, then ECDSA, then any other."""
    rank = {algorithm: i for i, algorithm in enumerate(_PREFERRED)}
    return min(keys, key=lambda k: rank.get(k.split()[0], len(rank)))
