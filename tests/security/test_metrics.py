"""`/metrics` of a real server, parsed as Prometheus parses it: the caller's tenant only,
for a role that may read deployments; the workflow queue for admins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from served import Server
from sqlalchemy import update

from db_rows import add_deployment
from provisor.store.backups import Backup
from provisor.store.health import MachineHealth
from provisor.store.models import Tenant
from provisor.store.orchestration import Deployment, Machine


def _scrape(
    server: Server, role: str, tenant: str = "alpha"
) -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {server.token(role, tenant)}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(answer.text)
    }


def _seed(server: Server) -> None:
    add_deployment(server.store, "m-web", tenant="alpha", machines=[("web", 1), ("web", 2)])
    add_deployment(server.store, "m-db", tenant="alpha", machines=[("db", 1)])
    add_deployment(server.store, "m-secret", tenant="beta", machines=[("x", 1)])
    with server.store.session() as session:
        session.execute(update(Machine).values(state="ready"))
        session.execute(
            update(Deployment)
            .where(Deployment.name == "m-db")
            .values(state="stopped", lease_expires_at=datetime.now(UTC) + timedelta(hours=2))
        )
        web = session.query(Deployment).filter_by(name="m-web").one()
        alpha = session.query(Tenant).filter_by(name="alpha").one()
        for index, state in ((1, "healthy"), (2, "unhealthy")):
            session.add(
                MachineHealth(
                    deployment_id=web.id, machine=f"m-web-web-{index}", node="web", state=state
                )
            )
        session.add(
            Backup(
                backup_id="b1",
                tenant_id=alpha.id,
                deployment="m-web",
                instance=web.instance,
                machine="web.1",
                node="web",
                workflow_id="backup:test",
                trigger="manual",
                store="local",
                state="good",
                data_key="sealed",
                finished_at=datetime.now(UTC) - timedelta(hours=1),
            )
        )


def test_metrics_show_the_callers_tenant_by_state(server: Server) -> None:
    _seed(server)
    found = _scrape(server, "auditor")
    deployments = {s["state"]: v for s, v in found["provisor_deployments"]}
    assert deployments["ready"] >= 1 and deployments["stopped"] == 1
    assert {s["tenant"] for s, _ in found["provisor_deployments"]} == {"alpha"}
    machines = {s["state"]: v for s, v in found["provisor_machines"]}
    assert machines["ready"] >= 3
    assert "provisor_jobs" in found
    leases = {s["deployment"]: v for s, v in found["provisor_lease_seconds_left"]}
    assert 7000 < leases["m-db"] <= 7200
    assert "m-secret" not in leases
    health = {s["health"]: v for s, v in found["provisor_machine_health"]}
    assert health["healthy"] == 1 and health["unhealthy"] == 1
    assert {s["state"]: v for s, v in found["provisor_backups"]} == {"good": 1}
    ages = {s["machine"]: v for s, v in found["provisor_backup_age_seconds"]}
    assert 3500 < ages["web.1"] < 3700
    assert {s["result"] for s, _ in found["provisor_recoveries"]} == {
        "started",
        "succeeded",
        "failed",
    }
    assert "provisor_workflows" not in found  # shared by every tenant: admins only
    assert found["provisor_scrape_timestamp_seconds"][0][1] > 0

    beta = _scrape(server, "admin", "beta")
    assert {s["tenant"] for s, _ in beta["provisor_machines"]} == {"beta"}
    assert sum(v for _, v in beta["provisor_machines"]) == 1
    assert beta["provisor_backups"] == [] and beta["provisor_machine_health"] == []
    workflows = {s["status"]: v for s, v in beta["provisor_workflows"]}
    assert set(workflows) == {"PENDING", "ENQUEUED"}
    assert all(v >= 0 for v in workflows.values())


def test_metrics_need_a_token_and_a_role_that_reads_deployments(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
    bad = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": "Bearer pvs_1_nope"}, timeout=30
    )
    assert bad.status_code == 401
    refused = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {server.token('requester')}"},
        timeout=30,
    )
    assert refused.status_code == 403
    assert "may not deployments.read" in refused.json()["error"]["message"]
    # Another tenant, named by the header: the token's user is no member of it.
    other = httpx.get(
        f"{server.url}/metrics",
        headers={
            "Authorization": f"Bearer {server.token('auditor')}",
            "X-Provisor-Tenant": "beta",
        },
        timeout=30,
    )
    assert other.status_code == 404
    assert "m-secret" not in other.text
