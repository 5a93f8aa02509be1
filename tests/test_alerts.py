"""Alerts end to end from the CLI, against real receivers on 127.0.0.1: rules over events
raise one alert per incident, notifiers deliver it (log, webhook, email, command),
reminders while it lasts, a resolution when it ends, retries, and a dispatcher killed
between recording and sending a notification sends it exactly once."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path
from typing import Any

from alert_receivers import emit, webhook_receiver
from provisor_cli import Provisor

KEY = "hook-hmac-key-4f9a1c"  # the webhook's HMAC key: never in output, events or the db
SECRET_ENV = {"PROVISOR_NOTIFIER_SECRET": KEY}


def _failed_backup(home: Path, n: int = 1, **more: Any) -> None:
    for _ in range(n):
        emit(
            home,
            "backup.failed",
            "shop/db.1",
            outcome="failed",
            severity="critical",
            deployment="shop",
            node="db",
            machine="db.1",
            incident="backup:inst1:db.1",
            incident_state="open",
            **more,
        )


def _resolved_backup(home: Path) -> None:
    emit(
        home,
        "backup.completed",
        "shop/db.1",
        severity="info",
        deployment="shop",
        node="db",
        machine="db.1",
        incident="backup:inst1:db.1",
        incident_state="resolved",
    )


def _verify(request: Any, key: str = KEY) -> dict[str, Any]:
    """The webhook's body, once its signature is checked as a receiver would."""
    timestamp = request.headers["x-provisor-timestamp"]
    expected = hmac.new(key.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(
        request.headers["x-provisor-signature"], "sha256=" + expected.hexdigest()
    )
    body: dict[str, Any] = json.loads(request.body)
    return body


def _alerts(provisor: Provisor, *flags: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        provisor("alerts", "list", *flags, "--output", "json").stdout
    )
    return found


def _nothing_secret(provisor: Provisor, *texts: str) -> None:
    for text in texts:
        assert KEY not in text
    with sqlite3.connect(provisor.home / "provisor.db") as db:
        dump = "\n".join(db.iterdump())
    assert KEY not in dump
    events = provisor("events", "--limit", "1000", "--output", "json").stdout
    assert KEY not in events


def test_one_alert_per_incident_by_webhook_and_log_then_resolved(provisor: Provisor) -> None:
    with webhook_receiver() as hook:
        added = provisor(
            "notifiers", "add", "hook", "--type", "webhook", "--url", hook.url, env=SECRET_ENV
        )
        provisor("notifiers", "add", "journal", "--type", "log")
        provisor(
            "alerts",
            "rules",
            "add",
            "backups",
            "--kind",
            "backup.*",
            "--notify",
            "hook",
            "--notify",
            "journal",
            "--severity",
            "warning",
        )
        listed = provisor("notifiers", "list", "--output", "json").stdout
        assert [n["name"] for n in json.loads(listed)] == ["hook", "journal"]
        assert json.loads(listed)[0]["has_secret"] is True

        _failed_backup(provisor.home, 3)  # three failures of one incident
        emit(provisor.home, "backup.started", "shop/db.1", severity="info", deployment="shop")
        run = provisor("alerts", "dispatch", "--once")
        assert "1 alert(s) opened" in run.stdout and "2 notification(s) sent" in run.stdout

        (sent,) = hook.wait_for(1)
        body = _verify(sent)
        assert body["message"] == "opened"
        assert body["alert"]["kind"] == "backup.failed"
        assert body["alert"]["deployment"] == "shop"
        assert body["alert"]["machine"] == "db.1"
        assert body["alert"]["severity"] == "critical"
        assert body["event"]["details"]["incident"] == "backup:inst1:db.1"
        assert sent.headers["x-provisor-delivery"]

        (alert,) = _alerts(provisor)
        assert alert["events"] == 3 and alert["state"] == "open"
        assert alert["deliveries"] == {"sent": 2}
        lines = (provisor.home / "alerts.log").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["alert"]["id"] == alert["id"]

        provisor("alerts", "dispatch", "--once")  # nothing new: nothing sent again
        assert len(hook.received) == 1

        _resolved_backup(provisor.home)
        run = provisor("alerts", "dispatch", "--once")
        assert "1 resolved" in run.stdout
        resolution = _verify(hook.wait_for(2)[1])
        assert resolution["message"] == "resolved" and resolution["alert"]["state"] == "resolved"
        assert _alerts(provisor) == []
        (ended,) = _alerts(provisor, "--all")
        assert ended["state"] == "resolved" and ended["resolved_at"]

        # The same incident failing again later is a new alert.
        _failed_backup(provisor.home)
        provisor("alerts", "dispatch", "--once")
        assert _verify(hook.wait_for(3)[2])["message"] == "opened"
        assert len(_alerts(provisor)) == 1
        _nothing_secret(provisor, added.stdout, added.stderr, listed)


def test_rules_match_kind_severity_deployment_and_node(provisor: Provisor) -> None:
    provisor("notifiers", "add", "journal", "--type", "log")
    provisor(
        "alerts",
        "rules",
        "add",
        "shop-db",
        "--kind",
        "health.unhealthy",
        "--kind",
        "recovery.failed",
        "--deployment",
        "shop",
        "--node",
        "db",
        "--notify",
        "journal",
        "--severity",
        "critical",
    )
    home = provisor.home
    # Not matching: another kind, too low, another deployment, another node.
    emit(home, "health.degraded", "m", severity="critical", deployment="shop", machine="db.1")
    emit(home, "health.unhealthy", "m", severity="warning", deployment="shop", machine="db.1")
    emit(home, "health.unhealthy", "m", severity="critical", deployment="blog", machine="db.1")
    emit(home, "health.unhealthy", "m", severity="critical", deployment="shop", machine="web.2")
    # Another tenant's event, otherwise the same.
    emit(
        home,
        "health.unhealthy",
        "m",
        severity="critical",
        deployment="shop",
        machine="db.1",
        tenant="other",
    )
    provisor("alerts", "dispatch", "--once")
    assert _alerts(provisor) == []
    # Matching: the node comes from the machine (db.2 is a machine of db); without an
    # incident, alerts are told apart by rule, kind and subject.
    emit(
        home,
        "health.unhealthy",
        "shop/db.2",
        severity="critical",
        deployment="shop",
        machine="db.2",
    )
    emit(
        home,
        "recovery.failed",
        "shop/db.2",
        outcome="failed",
        severity="critical",
        deployment="shop",
        node="db",
    )
    emit(
        home,
        "recovery.failed",
        "shop/db.2",
        outcome="failed",
        severity="critical",
        deployment="shop",
        node="db",
    )
    provisor("alerts", "dispatch", "--once")
    found = _alerts(provisor)
    assert sorted((a["kind"], a["events"]) for a in found) == [
        ("health.unhealthy", 1),
        ("recovery.failed", 2),
    ]
    rules = json.loads(provisor("alerts", "rules", "list", "--output", "json").stdout)
    assert rules[0]["kinds"] == ["health.unhealthy", "recovery.failed"]
    assert rules[0]["node"] == "db"


def test_an_event_without_severity_is_a_warning_when_failed(provisor: Provisor) -> None:
    provisor("notifiers", "add", "journal", "--type", "log")
    provisor("alerts", "rules", "add", "all", "--kind", "*", "--notify", "journal")
    emit(provisor.home, "deployment.started", "shop")  # ok: info, below warning
    emit(provisor.home, "provider.checked", "ec2-lab", outcome="failed")  # a warning
    provisor("alerts", "dispatch", "--once")
    (alert,) = _alerts(provisor)
    assert (alert["kind"], alert["severity"]) == ("provider.checked", "warning")
