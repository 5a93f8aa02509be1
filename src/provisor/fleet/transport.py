"""SSH transport: a pool of warm asyncssh connections with provisor's host-key policy."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from provisor._asyncssh import asyncssh
from provisor.fleet.results import Outcome


@dataclass(frozen=True)
class Endpoint:
    """How to reach one host. `name` is what reports call it.

    `trust_id` says whose host key this is, so a key is never judged by another
    identity's: an inventory host's (`host_trust_id`) or a deployment machine's
    (`machine_trust_id`); None for an endpoint outside the inventory, whose key is then
    that of its address and port. `host_id` is the inventory host it is, if any.
    """

    name: str
    address: str
    port: int = 22
    user: str | None = None
    identity: str | None = None  # private key file; None: the pool's default keys
    proxy_jump: str | None = None  # "[user@]host[:port]" of a bastion
    client_key: str | None = field(default=None, repr=False)  # a stored private key itself
    trust_id: str | None = None
    host_id: int | None = None

    @property
    def key(self) -> tuple[str, str, int, str | None, str | None, str | None, str | None]:
        # The identity too: a connection verified for one host never serves another
        # that happens to share its address.
        return (
            self.trusts,
            self.address,
            self.port,
            self.user,
            self.identity,
            self.proxy_jump,
            self.client_key,
        )

    @property
    def trusts(self) -> str:
        """The identity whose trusted key this endpoint is judged by."""
        return self.trust_id or address_trust_id(self.address, self.port)


def host_trust_id(host_id: int) -> str:
    """The identity of an inventory host: its id, never its address."""
    return f"host:{host_id}"


def machine_trust_id(provider: str, instance_id: str) -> str:
    """The identity of a deployment's machine: its provider's instance id."""
    return f"machine:{provider}/{instance_id}"


def address_trust_id(address: str, port: int) -> str:
    """The identity of an endpoint outside the inventory: its address and port."""
    return f"addr:{address}:{port}"


# AES-GCM first: one call into OpenSSL per packet, where asyncssh's
# chacha20-poly1305 makes several Python-level calls; the rest are fallbacks.
_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


class HostKeys(Protocol):
    """Where trusted host keys live (provisor's own known-hosts store, one per tenant)."""

    @property
    def scope(self) -> Hashable:
        """Whose keys these are; a connection verified in one scope serves no other."""
        ...

    def trusted(self, endpoint: Endpoint) -> str | None:
        """The key trusted for the endpoint's identity (`Endpoint.trusts`), if any."""
        ...

    def remember(self, endpoint: Endpoint, key: str) -> None:
        """Trust `key` for the endpoint's identity from now on (first use)."""
        ...


class TransportError(Exception):
    """A connection problem, already classified into a host outcome."""

    def __init__(
        self, outcome: Outcome, message: str, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.details = details or {}


class _Client(asyncssh.SSHClient):
    """Trust on first use; refuse a changed key, naming both fingerprints."""

    def __init__(self, keys: HostKeys, endpoint: Endpoint) -> None:
        self._keys = keys
        self._endpoint = endpoint
        self.refused: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        presented = key.export_public_key("openssh").decode().strip()
        known = self._keys.trusted(self._endpoint)
        if known is None:
            self._keys.remember(self._endpoint, presented)
            return True
        if _same_key(known, presented):
            return True
        old = asyncssh.import_public_key(known).get_fingerprint()
        self.refused = (
            f"host key of {_where(self._endpoint)} is not the one trusted for it: trusted "
            f"{old}, offered {key.get_fingerprint()}; if the change is expected, run: "
            f"provisor hosts rekey {_rekey_name(self._endpoint)}"
        )
        return False


def _where(endpoint: Endpoint) -> str:
    return f"{endpoint.name} ({endpoint.address}:{endpoint.port})"


def _rekey_name(endpoint: Endpoint) -> str:
    """What `provisor hosts rekey` takes for this endpoint: an inventory host's name, or
    the address and port of an endpoint outside the inventory."""
    if endpoint.trust_id is not None:
        return endpoint.name
    address = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    return f"{address}:{endpoint.port}"


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Lift the soft open-files limit toward the hard one; 5,000 hosts need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def classify(exc: BaseException, refused: str | None = None) -> TransportError:
    """Map what asyncssh or the socket raised onto a host outcome."""
    if isinstance(exc, TransportError):
        return exc
    if refused is not None:
        return TransportError(Outcome.hostkey, refused)
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return TransportError(Outcome.hostkey, f"host key not verifiable: {exc.reason}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return TransportError(Outcome.auth, f"authentication failed: {exc.reason}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TransportError(
            Outcome.timeout, "connect timeout: no SSH handshake in time", {"limit": "connect"}
        )
    if isinstance(exc, ConnectionRefusedError):
        return TransportError(Outcome.unreachable, "connection refused")
    if isinstance(exc, socket.gaierror):
        return TransportError(Outcome.unreachable, f"cannot resolve address: {exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    ):
        return TransportError(Outcome.unreachable, os.strerror(exc.errno or 0))
    if isinstance(exc, asyncssh.ConnectionLost | ConnectionResetError | BrokenPipeError):
        return TransportError(Outcome.unreachable, f"connection lost during the handshake: {exc}")
    if isinstance(exc, asyncssh.DisconnectError):
        return TransportError(Outcome.error, f"server disconnected: {exc.reason}")
    return TransportError(Outcome.error, f"{type(exc).__name__}: {exc}")


class SSHPool:
    """Connections kept open and reused while the pool lives.

    A second job on the same hosts in the same process (the server) pays no
    handshake. Handshakes are bounded separately from commands, because they
    are the CPU-heavy part for both ends. The pool trusts no key itself: each job
    reaches it through `scoped(host_keys)`, which verifies new handshakes against
    that job's keys and reuses only connections verified in the same scope.
    """

    def __init__(
        self,
        *,
        identities: list[str] | None = None,
        keepalive_interval: float = 30.0,
        max_handshakes: int = 100,
        ssh_config: list[str] | None = None,
    ) -> None:
        raise_nofile_limit()
        self._keepalive = keepalive_interval
        self._handshakes = asyncio.Semaphore(max_handshakes)
        self._connections: dict[tuple[object, ...], asyncssh.SSHClientConnection] = {}
        self._pending: dict[tuple[object, ...], asyncio.Future[asyncssh.SSHClientConnection]] = {}
        self._key_cache: dict[str, asyncssh.SSHKey] = {}
        self._default_identities = identities
        # The operator's aliases, users, ports and keys, as their ssh would use them.
        if ssh_config is None:
            default = Path("~/.ssh/config").expanduser()
            ssh_config = [str(default)] if default.is_file() else []
        self._config = ssh_config
        self.handshakes_done = 0

    def scoped(
        self,
        host_keys: HostKeys,
        *,
        password: str | None = None,
        connect_timeout: float = 10.0,
        server_credentials: bool = True,
    ) -> ScopedPool:
        """The pool as one job (of one tenant) sees it: handshakes judged by `host_keys`,
        with that job's password (-A) and connect timeout. Without `server_credentials`
        (a job from the API) it logs in with the endpoints' stored keys only: never a key
        file, the SSH agent or the ssh configuration of this computer."""
        return ScopedPool(
            self,
            host_keys,
            password=password,
            connect_timeout=connect_timeout,
            server_credentials=server_credentials,
        )

    def _keys_for(self, endpoint: Endpoint, job: ScopedPool) -> list[asyncssh.SSHKey] | None:
        if endpoint.client_key:
            return [self._cached(endpoint.client_key, asyncssh.import_private_key, "stored key")]
        if not job.server_credentials:
            if endpoint.identity:
                raise TransportError(
                    Outcome.auth,
                    f"{endpoint.name}: its credentials name a key file on the server, which "
                    "jobs from the API may not use; store the key and use key:NAME",
                )
            return None
        paths = [endpoint.identity] if endpoint.identity else self._default_identities
        if not paths:
            return None  # asyncssh's defaults: ~/.ssh/id_* and the agent
        return [self._cached(path, asyncssh.read_private_key, path) for path in paths]

    def _cached(
        self, source: str, load: Callable[[str], asyncssh.SSHKey], what: str
    ) -> asyncssh.SSHKey:
        if source not in self._key_cache:
            try:
                self._key_cache[source] = load(source)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise TransportError(
                    Outcome.auth, f"cannot load private key {what}: {exc}"
                ) from None
        return self._key_cache[source]

    async def _connect(self, endpoint: Endpoint, job: ScopedPool) -> asyncssh.SSHClientConnection:
        key = (job.host_keys.scope, job.server_credentials, *endpoint.key)
        existing = self._connections.get(key)
        if existing is not None and not existing.is_closed():
            return existing
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[asyncssh.SSHClientConnection] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[key] = future
        try:
            connection = await self._open(endpoint, job)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(connection)
            self._connections[key] = connection
            return connection
        finally:
            del self._pending[key]

    async def _open(self, endpoint: Endpoint, job: ScopedPool) -> asyncssh.SSHClientConnection:
        client = _Client(job.host_keys, endpoint)
        trusted = job.host_keys.trusted(endpoint)
        if trusted is None and job.password is not None:
            # -A: a password goes only to a host that proved it is the one trusted before;
            # trusting a stranger's key on first use would hand it the password.
            raise TransportError(
                Outcome.hostkey,
                f"host key of {_where(endpoint)} is not trusted yet, and a password (-A) "
                "is sent only to hosts whose key is: connect once without -A (its key is "
                "then trusted on first use) or have its key pinned, then run again",
            )
        tunnel: asyncssh.SSHClientConnection | None = None
        if endpoint.proxy_jump:
            tunnel = await self._connect(_jump_endpoint(endpoint.proxy_jump, endpoint), job)
        keys = self._keys_for(endpoint, job)
        algorithms: list[str] = []
        if trusted is not None:
            try:
                key = asyncssh.import_public_key(trusted)
                algorithms = [a.decode() for a in key.sig_algorithms]
            except asyncssh.KeyImportError:
                algorithms = []
        async with self._handshakes:
            try:
                connection = await asyncio.wait_for(
                    asyncssh.connect(
                        endpoint.address,
                        endpoint.port,
                        tunnel=tunnel if tunnel is not None else (),
                        username=endpoint.user or (),
                        client_factory=_factory(client),
                        # () is asyncssh's "the defaults"; None is "none at all"
                        client_keys=keys or (() if job.server_credentials else None),
                        agent_path=() if job.server_credentials else None,
                        password=job.password,
                        known_hosts=([], [], []),  # nothing pre-trusted: the client decides
                        server_host_key_algs=algorithms or (),
                        connect_timeout=job.connect_timeout,
                        encryption_algs=_CIPHERS,
                        keepalive_interval=self._keepalive,
                        keepalive_count_max=3,
                        config=(self._config or None) if job.server_credentials else None,
                    ),
                    job.connect_timeout,
                )
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if isinstance(exc, TimeoutError) and client.refused is None:
                    raise TransportError(
                        Outcome.timeout,
                        f"connect timeout: no SSH handshake within {job.connect_timeout:g}s "
                        "(--connect-timeout)",
                        {"limit": "connect", "seconds": job.connect_timeout},
                    ) from None
                if tunnel is not None and isinstance(exc, asyncssh.ChannelOpenError):
                    raise TransportError(
                        Outcome.unreachable,
                        f"jump host {endpoint.proxy_jump} would not forward to "
                        f"{endpoint.address}:{endpoint.port}: {exc.reason}",
                    ) from None
                raise classify(exc, client.refused) from None
        self.handshakes_done += 1
        return connection

    def _forget(self, job: ScopedPool, endpoint: Endpoint) -> None:
        connection = self._connections.pop(
            (job.host_keys.scope, job.server_credentials, *endpoint.key), None
        )
        if connection is not None:
            connection.abort()

    def _release(self, job: ScopedPool, endpoint: Endpoint) -> None:
        connection = self._connections.pop(
            (job.host_keys.scope, job.server_credentials, *endpoint.key), None
        )
        if connection is not None:
            connection.close()  # its socket goes once the goodbye is written, not at exit

    def _has_live(self, job: ScopedPool, endpoint: Endpoint) -> bool:
        connection = self._connections.get(
            (job.host_keys.scope, job.server_credentials, *endpoint.key)
        )
        return connection is not None and not connection.is_closed()

    def __len__(self) -> int:
        return sum(1 for c in self._connections.values() if not c.is_closed())

    async def close(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close()
        await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)


class ScopedPool:
    """One job's way into a pool: new handshakes are verified against its own host keys,
    and only connections verified in the same scope (tenant) are reused."""

    def __init__(
        self,
        pool: SSHPool,
        host_keys: HostKeys,
        *,
        password: str | None = None,
        connect_timeout: float = 10.0,
        server_credentials: bool = True,
    ) -> None:
        self.pool = pool
        self.host_keys = host_keys
        self.password = password
        self.connect_timeout = connect_timeout
        self.server_credentials = server_credentials

    async def connect(self, endpoint: Endpoint) -> asyncssh.SSHClientConnection:
        """A live connection to the endpoint: a pooled one, or a new handshake."""
        return await self.pool._connect(endpoint, self)

    def forget(self, endpoint: Endpoint) -> None:
        """Drop a connection that misbehaved, so the next use makes a fresh one."""
        self.pool._forget(self, endpoint)

    def release(self, endpoint: Endpoint) -> None:
        """Close the endpoint's connection: no later job of this process will use it."""
        self.pool._release(self, endpoint)

    def has_live(self, endpoint: Endpoint) -> bool:
        return self.pool._has_live(self, endpoint)


def _factory(client: _Client) -> Callable[[], asyncssh.SSHClient]:
    return lambda: client


def _jump_endpoint(spec: str, behind: Endpoint) -> Endpoint:
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 22
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
        port = int(port_text)
    return Endpoint(
        name=f"{spec} (jump host of {behind.name})",
        address=host,
        port=port,
        user=user or behind.user,
        identity=behind.identity,
        client_key=behind.client_key,
    )
