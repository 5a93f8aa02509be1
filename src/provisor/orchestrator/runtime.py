"""What the workflows of this process share: store, secrets, providers, SSH, parameters."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from provisor import logmask
from provisor.core.errors import NotFound, ProvisorError
from provisor.core.masking import Masker
from provisor.fleet.knownhosts import DatabaseHostKeys
from provisor.fleet.transport import ScopedPool, SSHPool
from provisor.orchestrator import secrets
from provisor.orchestrator.params import ParameterBoard
from provisor.providers import registry
from provisor.providers.base import Provider
from provisor.providers.registry import BUILT_IN
from provisor.store import Store
from provisor.store.models import ProviderConfig
from provisor.store.orchestration import Deployment


@dataclass
class Runtime:
    store: Store
    home: Path
    local_network: str = "127.100.0.0/16"
    parameter_address: str | None = None  # the controller's address in the machines' network
    param_url: str = ""
    board: ParameterBoard = field(init=False)
    plans: dict[int, Any] = field(default_factory=dict)  # deployment id -> machine plans
    plans_lock: threading.Lock = field(default_factory=threading.Lock)
    maskers: dict[int, Masker] = field(default_factory=dict)  # deployment id -> its secrets
    _providers: dict[tuple[int | None, str], Provider] = field(default_factory=dict)
    _pools: dict[int, SSHPool] = field(default_factory=dict)
    _host_keys: dict[int, DatabaseHostKeys] = field(default_factory=dict)  # by tenant id
    _host_keys_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.board = ParameterBoard(self.store, self.home, self.masker_of)
        self.signing_key = secrets.signing_key(self.home)
        self.controller_key = secrets.controller_key(self.home)
        self.controller_public_key = secrets.controller_public_key(self.home)
        self.param_tls = secrets.parameter_tls(self.home)
        self.param_certificate = secrets.parameter_certificate(self.home)

    def provider(self, name: str, tenant_id: int | None = None) -> Provider:
        """The provider a deployment names: `local`, or one its tenant configured.

        Built once per (tenant, name) and kept; `local` is the same for every tenant.
        """
        key = (None if name == BUILT_IN else tenant_id, name)
        if key not in self._providers:
            self._providers[key] = provider_for(
                self.store,
                self.home,
                self.local_network,
                tenant_id,
                name,
                controller_address=self.parameter_address,
                parameter_url=self.param_url,
            )
        return self._providers[key]

    def host_keys(self, tenant_id: int) -> DatabaseHostKeys:
        """The tenant's trusted keys (its machines' keys are pinned there at launch).

        Loaded once per tenant; launches pin from several threads at once, and all must
        pin into the one copy the tenant's connections are judged by."""
        with self._host_keys_lock:
            if tenant_id not in self._host_keys:
                self._host_keys[tenant_id] = DatabaseHostKeys(self.store, tenant_id)
            return self._host_keys[tenant_id]

    def pool(self, tenant_id: int) -> ScopedPool:
        """SSH to a tenant's machines. One pool per event loop (connections belong to the
        loop that made them), seen through the tenant's own host keys."""
        loop = id(asyncio.get_running_loop())
        if loop not in self._pools:
            self._pools[loop] = SSHPool()
        return self._pools[loop].scoped(self.host_keys(tenant_id), connect_timeout=15.0)

    def masker(self, deployment: Deployment) -> Masker:
        """The deployment's secrets, to mask wherever its output is kept; log lines of
        this process mask them from now on (until `forget_deployment`)."""
        with self.plans_lock:
            known = self.maskers.get(deployment.id)
        if known is not None:
            return known
        masker = deployment_masker(self.store, self.home, deployment)
        with self.plans_lock:
            self.maskers[deployment.id] = masker
        logmask.remember(f"deployment:{deployment.id}", masker)
        return masker

    def masker_of(self, deployment_id: int) -> Masker:
        """`masker` of the deployment with this id (loaded when not known yet)."""
        with self.plans_lock:
            known = self.maskers.get(deployment_id)
        if known is not None:
            return known
        with self.store.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:  # gone: nothing of it is published any more
                return Masker()
            return self.masker(deployment)

    def forget_deployment(self, deployment_id: int) -> None:
        """Its workflow ended in this process: drop what was kept for it."""
        with self.plans_lock:
            self.plans.pop(deployment_id, None)
            self.maskers.pop(deployment_id, None)
        logmask.forget(f"deployment:{deployment_id}")

    def unseal_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            k: secrets.unseal(self.home, v) if secrets.is_sealed(v) else v
            for k, v in inputs.items()
        }

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()


def deployment_masker(store: Store, home: Path, deployment: Deployment) -> Masker:
    """A masker of the deployment's secret inputs and of the credential of the provider
    it runs on."""
    masker = secrets.inputs_masker(home, deployment.inputs)
    if deployment.provider != BUILT_IN:
        try:
            credential = _configured(store, home, deployment.tenant_id, deployment.provider)[2]
        except NotFound:  # removed since: it has nothing left to leak
            credential = None
        masker += Masker.of(credential)
    return masker


def _configured(
    store: Store, home: Path, tenant_id: int, name: str
) -> tuple[str, dict[str, Any], str | None]:
    """A configured provider's kind, settings and secret (unsealed)."""
    with store.session() as session:
        row = session.scalar(
            select(ProviderConfig).where(
                ProviderConfig.tenant_id == tenant_id, ProviderConfig.name == name
            )
        )
        if row is None:
            raise NotFound(f"no provider named {name!r}", field="provider")
        kind, settings, sealed = row.kind, dict(row.settings), row.secret
    secret = None if sealed is None else secrets.unseal(home, sealed)
    if secret:  # masked in this process's log lines from now on
        logmask.remember(f"provider:{tenant_id}:{name}", Masker.of(secret))
    return kind, settings, secret


def provider_for(
    store: Store,
    home: Path,
    local_network: str,
    tenant_id: int | None,
    name: str,
    *,
    controller_address: str | None = None,
    parameter_url: str = "",
) -> Provider:
    """The provider object a deployment of `tenant_id` names: local, or a configured one.

    The secret is unsealed here, just before the provider is built, and kept only
    by the provider object. `controller_address` is where the machines know the
    controller (PROVISOR_PARAMETER_ADDRESS): a cloud opens SSH to it by default.
    """
    if name == BUILT_IN:
        return registry.build(
            BUILT_IN,
            name,
            {},
            None,
            home=home,
            local_network=local_network,
            parameter_url=parameter_url,
        )
    if tenant_id is None:
        raise ProvisorError(
            f"provider {name!r} is configured per tenant: no tenant was given", field="provider"
        )
    kind, settings, secret = _configured(store, home, tenant_id, name)
    controller = hashlib.sha256(secrets.controller_public_key(home).strip().encode())
    return registry.build(
        kind,
        name,
        settings,
        secret,
        home=home,
        local_network=local_network,
        controller=controller.hexdigest()[:12],  # tags this controller's resources
        controller_address=controller_address,
    )


_current: list[Runtime] = []


def install(rt: Runtime) -> Runtime:
    _current[:] = [rt]
    return rt


def runtime() -> Runtime:
    if not _current:
        raise RuntimeError("the orchestrator runtime is not started in this process")
    return _current[0]
