"""The monitor's infrastructure checks against a real EC2 API (moto_server) whose answers
the fault proxy turns into errors: the provider's outage pauses its machines' checks,
is one `infrastructure.down` event however long it lasts, and `infrastructure.up` when
it ends; then the checks go on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db_rows import add_deployment
from ec2_fixtures import MotoEc2
from provisor.orchestrator.health_monitor import Monitor
from provisor.orchestrator.runtime import Runtime
from provisor.services.context import Context
from provisor.services.providers import add_provider
from provisor.store import Store
from provisor.store.health import MachineHealth
from provisor.store.models import Event
from provisor.store.orchestration import Deployment, Machine

BLUEPRINT = """name: cl
version: '1'
nodes:
  web:
    image: debian-12
    checks: {interval: 1s, timeout: 1s, failures: 3, successes: 1, probes: [provider]}
"""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 never looks for credentials beyond loopback (instance metadata, ~/.aws)."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _kinds(store: Store) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(select(Event.kind).where(Event.actor == "health").order_by(Event.id))
        )


def _failures(store: Store) -> int | None:
    with store.session() as session:
        return session.scalar(select(MachineHealth.failures))


def test_a_provider_outage_pauses_its_machines_checks(moto: MotoEc2, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        owner = Context(store=store, actor="owner", tenant="default", home=home)
        settings = {
            "region": moto.region,
            "endpoint": moto.proxy_url,
            "access_key_id": "testing",
            "max_attempts": 1,
            "call_timeout": 3,
        }
        add_provider(owner, "cloud", "ec2", settings, "testing")
        deployment_id = add_deployment(store, "cl", provider="cloud", machines=[("web", 1)])
        with store.session() as session:
            session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id)
                .values(blueprint_text=BLUEPRINT, workflow_id="deploy-cl")
            )
            session.execute(
                update(Machine).values(
                    state="ready", address="127.0.0.1", provider_id="i-0123456789abcdef0"
                )
            )
        monitor = Monitor(Runtime(store, home))

        def tick() -> None:
            monitor._due.clear()  # every machine due now (no waiting for its interval)
            asyncio.run(monitor.tick())

        tick()  # the provider answers; moto does not know the machine: a failed round
        assert _kinds(store) == ["health.degraded"] and _failures(store) == 1
        moto.proxy.server_errors(100_000, status=503)  # the EC2 API is down
        tick()
        assert _kinds(store) == ["health.degraded", "infrastructure.down"]
        assert _failures(store) == 1  # its machines were not checked
        for _ in range(3):  # as long as it lasts: no machine check, no second alert
            monitor._infra_at = -1e9
            tick()
        assert _kinds(store) == ["health.degraded", "infrastructure.down"]
        assert _failures(store) == 1
        with store.session() as session:
            down = session.scalars(select(Event).where(Event.kind == "infrastructure.down")).one()
            assert down.details["severity"] == "critical"
            assert down.details["incident_state"] == "open"
            assert down.details["incident"].startswith("infrastructure:provider:")
            assert "testing" not in str(down.details)  # the credential is never shown
        moto.proxy.clear()
        monitor._infra_at = -1e9
        tick()
        assert _kinds(store) == ["health.degraded", "infrastructure.down", "infrastructure.up"]
        assert _failures(store) == 2  # checked again
    finally:
        store.close()
