"""Alerts over the API of a real `provisor server`, which dispatches them itself: tenant
scoped (another tenant's alert answers 404), role checked (403 and an event), secrets
never returned, command notifiers refused, hostile settings refused with the field."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from served import Server, start_server

from alert_receivers import emit, webhook_receiver
from provisor.services.events import list_events
from provisor.store import Store

KEY = "api-hook-key-93ab"


@pytest.fixture(scope="module")
def dispatching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose dispatcher looks for new events every half second."""
    home = tmp_path_factory.mktemp("alerts-server-home")
    with start_server(home, env={"PROVISOR_ALERT_POLL_SECONDS": "0.5"}) as (url, process):
        store = Store(f"sqlite:///{home / 'provisor.db'}")
        try:
            yield Server(url=url, home=home, store=store, process=process)
        finally:
            store.close()


def _wait_for_alerts(server: Server, tenant: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    with server.client("auditor", tenant) as api:
        while True:
            found: list[dict[str, Any]] = api.get("/alerts").json()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def _failure(server: Server, tenant: str, machine: str) -> None:
    emit(
        server.home,
        "backup.failed",
        f"shop/{machine}",
        outcome="failed",
        tenant=tenant,
        severity="critical",
        deployment="shop",
        machine=machine,
        incident=f"backup:{tenant}:{machine}",
        incident_state="open",
    )


def test_the_server_dispatches_and_alerts_stay_in_their_tenant(dispatching: Server) -> None:
    server = dispatching
    with webhook_receiver() as hook:
        with server.client("admin", "alpha") as alpha:
            added = alpha.post(
                "/notifiers",
                json={
                    "name": "hook",
                    "kind": "webhook",
                    "settings": {"url": hook.url},
                    "secret": KEY,
                },
            )
            assert added.status_code == 201, added.text
            assert KEY not in added.text and added.json()["has_secret"] is True
            rule = {"name": "backups", "kinds": ["backup.*"], "notifiers": ["hook"]}
            assert alpha.post("/alert-rules", json=rule).status_code == 201
            assert KEY not in alpha.get("/notifiers").text
        with server.client("admin", "beta") as beta:
            assert beta.post("/notifiers", json={"name": "j", "kind": "log"}).status_code == 201
            rule = {"name": "b", "kinds": ["backup.*"], "notifiers": ["j"], "min_severity": "info"}
            assert beta.post("/alert-rules", json=rule).status_code == 201
        _failure(server, "alpha", "db.1")
        (alert,) = _wait_for_alerts(server, "alpha", 1)
        (sent,) = hook.wait_for(1)
        timestamp = sent.headers["x-provisor-timestamp"]
        mac = hmac.new(KEY.encode(), timestamp.encode() + b"." + sent.body, hashlib.sha256)
        assert sent.headers["x-provisor-signature"] == "sha256=" + mac.hexdigest()
        assert json.loads(sent.body)["alert"]["id"] == alert["id"]

        before = len(list_events(server.owner("alpha"), limit=10000))
        with server.client("admin", "beta") as beta:
            assert beta.get("/alerts").json() == []  # beta's rule sees none of alpha's events
            assert beta.get(f"/alerts/{alert['id']}").status_code == 404
            assert beta.post(f"/alerts/{alert['id']}/ack").status_code == 404
            assert beta.delete("/notifiers/hook").status_code == 404
            assert beta.delete("/alert-rules/backups").status_code == 404
            assert [n["name"] for n in beta.get("/notifiers").json()] == ["j"]
        with server.client("admin", "alpha") as alpha:
            assert alpha.get(f"/alerts/{alert['id']}").json()["acked_at"] is None
        # beta's probes wrote nothing in alpha's log (but the server may dispatch there).
        alpha_kinds = {e.kind for e in list_events(server.owner("alpha"), limit=10000)[before:]}
        assert not alpha_kinds & {"alert.acked", "notifier.removed", "alert.rule_removed"}

        # Roles: an auditor reads but may not acknowledge or configure; an operator may ack.
        with server.client("auditor", "alpha") as auditor:
            assert auditor.get("/alert-rules").status_code == 200
            assert auditor.post(f"/alerts/{alert['id']}/ack").status_code == 403
            assert auditor.post("/notifiers", json={"name": "x", "kind": "log"}).status_code == 403
        with server.client("requester", "alpha") as requester:
            assert requester.get("/alerts").status_code == 403
        with server.client("operator", "alpha") as operator:
            assert operator.delete("/alert-rules/backups").status_code == 403
            acked = operator.post(f"/alerts/{alert['id']}/ack")
            assert acked.status_code == 200 and acked.json()["acked_by"] == "operator-alpha"
        denied = list_events(server.owner("alpha"), kinds=["access.denied"], limit=1000)
        assert {e.actor for e in denied} >= {"auditor-alpha", "requester-alpha", "operator-alpha"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "c", "kind": "command", "settings": {"argv": ["/bin/true"]}}, 403, None),
        (
            {
                "name": "w",
                "kind": "webhook",
                "settings": {"url": "file:///etc/passwd"},
                "secret": "k",
            },
            400,
            "url",
        ),
        ({"name": "w", "kind": "webhook", "settings": {"url": "http://127.0.0.1/"}}, 400, "secret"),
        (
            {
                "name": "w",
                "kind": "webhook",
                "settings": {"url": "http://127.0.0.1/", "headers": {"X": "y"}},
                "secret": "k",
            },
            400,
            "headers",
        ),
        (
            {
                "name": "m",
                "kind": "email",
                "settings": {"host": "127.0.0.1", "from": "a@b.c", "to": ["x@y.z\r\nBcc: v@w.x"]},
            },
            400,
            "to",
        ),
        (
            {
                "name": "m",
                "kind": "email",
                "settings": {"host": "127.0.0.1", "from": "a@b.c", "to": ["x@y.z"] * 21},
            },
            400,
            "to",
        ),
        ({"name": "x" * 65, "kind": "log"}, 422, None),
        ({"name": "bad name", "kind": "log"}, 400, "name"),
        ({"name": "l", "kind": "pager"}, 400, "type"),
        ({"name": "l", "kind": "log", "secret": "s"}, 400, "secret"),
        ({"name": "l", "kind": "log", "extra": 1}, 422, None),
    ],
)
def test_hostile_notifiers_are_refused(
    dispatching: Server, body: dict[str, Any], status: int, field: str | None
) -> None:
    with dispatching.client("admin", "gamma") as api:
        answer = api.post("/notifiers", json=body)
    assert answer.status_code == status, answer.text
    if field is not None:
        assert answer.json()["error"]["field"] == field
    assert "sealed" not in answer.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kinds": ["backup failed"], "notifiers": ["j"]}, "kind"),
        ({"kinds": ["backup.**"], "notifiers": ["j"]}, "kind"),
        ({"kinds": ["backup.*"], "notifiers": ["nobody"]}, "notifier"),
        ({"kinds": ["backup.*"], "notifiers": ["j"], "min_severity": "fatal"}, "severity"),
        ({"kinds": ["backup.*"], "notifiers": ["j"], "remind_seconds": 0}, "remind_after"),
        ({"kinds": ["backup.*"], "notifiers": ["j"], "deployment": "a b"}, "deployment"),
        ({"kinds": [], "notifiers": ["j"]}, "kind"),
    ],
)
def test_hostile_rules_are_refused(dispatching: Server, body: dict[str, Any], field: str) -> None:
    with dispatching.client("admin", "delta") as api:
        if not api.get("/notifiers").json():
            assert api.post("/notifiers", json={"name": "j", "kind": "log"}).status_code == 201
        answer = api.post("/alert-rules", json={"name": "r", **body})
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"]["field"] == field
