"""Reminders, acknowledgement and resolution, driven by the dispatcher with a clock the
test sets (no waiting, no wall-clock assertion); and the rules' own checks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provisor.core.alerts import (
    Facts,
    RuleSpec,
    alert_key,
    bounded_details,
    check_url,
    severity_of,
)
from provisor.core.errors import InvalidInput, NotFound
from provisor.events import record_event
from provisor.files import private_home
from provisor.services import alerts
from provisor.services.context import Context
from provisor.settings import Settings
from provisor.store import Store

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture
def local(store: Store, tmp_path: Path) -> tuple[Context, Settings]:
    """The data directory's owner, on each backend (SQLite, PostgreSQL)."""
    home = private_home(tmp_path / "home")
    settings = Settings(home=home, tenant="default", database_url=None)
    return Context(store=store, actor="tester", tenant="default", home=home), settings


def emit(ctx: Context, kind: str, subject: str, *, outcome: str = "ok", **details: Any) -> None:
    with ctx.store.session() as session:
        record_event(
            session,
            actor="provisor",
            tenant=ctx.tenant,
            kind=kind,
            subject=subject,
            outcome=outcome,
            details=details,
        )


def _dispatch(ctx: Context, settings: Settings, at: datetime) -> alerts.DispatchView:
    return asyncio.run(alerts.dispatch_once(ctx, settings, now=at))


def _messages(home: Path) -> list[str]:
    path = home / "alerts.log"
    if not path.exists():
        return []
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def _incident(ctx: Context, state: str, severity: str = "critical") -> None:
    emit(
        ctx,
        "health.unhealthy" if state == "open" else "health.healthy",
        "shop/web.2",
        outcome="failed" if state == "open" else "ok",
        severity=severity,
        deployment="shop",
        machine="web.2",
        incident="health:inst1:web.2",
        incident_state=state,
    )


def test_reminded_while_open_until_acked_and_told_of_the_resolution(
    local: tuple[Context, Settings],
) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"], remind_seconds=600)
    _incident(ctx, "open")
    assert _dispatch(ctx, settings, T0).opened == 1
    assert _messages(settings.home) == ["opened"]
    _incident(ctx, "open")  # still failing: the same incident
    assert _dispatch(ctx, settings, T0 + timedelta(minutes=5)).reminded == 0
    assert _dispatch(ctx, settings, T0 + timedelta(minutes=11)).reminded == 1
    assert _dispatch(ctx, settings, T0 + timedelta(minutes=12)).reminded == 0
    assert _dispatch(ctx, settings, T0 + timedelta(minutes=22)).reminded == 1
    assert _messages(settings.home) == ["opened", "reminder", "reminder"]
    (alert,) = alerts.list_alerts(ctx)
    assert (alert.events, alert.reminders) == (2, 2)

    acked = alerts.ack_alert(ctx, alert.id)
    assert acked.acked_by == "tester" and acked.remind_at is None and acked.state == "open"
    assert _dispatch(ctx, settings, T0 + timedelta(hours=5)).reminded == 0

    _incident(ctx, "resolved", severity="info")
    assert _dispatch(ctx, settings, T0 + timedelta(hours=6)).resolved == 1
    assert _messages(settings.home) == ["opened", "reminder", "reminder", "resolved"]
    assert alerts.list_alerts(ctx) == []
    (ended,) = alerts.list_alerts(ctx, include_ended=True)
    assert ended.state == "resolved"


def test_an_alert_without_incident_is_closed_by_its_ack(local: tuple[Context, Settings]) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "leases", kinds=["lease.expiring"], notifiers=["journal"])
    for _ in range(2):
        emit(ctx, "lease.expiring", "shop", severity="warning", deployment="shop")
    _dispatch(ctx, settings, T0)
    (alert,) = alerts.list_alerts(ctx)
    assert alert.events == 2 and alert.key == "leases:lease.expiring:shop"
    assert alerts.ack_alert(ctx, alert.id).state == "closed"
    emit(ctx, "lease.expiring", "shop", severity="warning", deployment="shop")
    _dispatch(ctx, settings, T0 + timedelta(minutes=1))
    (again,) = alerts.list_alerts(ctx)
    assert again.id != alert.id
    assert _messages(settings.home) == ["opened", "opened"]


def test_events_before_alerting_existed_raise_nothing(local: tuple[Context, Settings]) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    _incident(ctx, "open")  # before any rule: history
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"])
    assert _dispatch(ctx, settings, T0).opened == 0
    assert alerts.list_alerts(ctx) == []


def test_removing_a_notifier_in_use_is_refused_and_a_rule_takes_its_alerts(
    local: tuple[Context, Settings],
) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"])
    _incident(ctx, "open")
    _dispatch(ctx, settings, T0)
    with pytest.raises(Exception, match="used by rule"):
        alerts.remove_notifier(ctx, "journal")
    alerts.remove_rule(ctx, "health")
    assert alerts.list_alerts(ctx, include_ended=True) == []
    alerts.remove_notifier(ctx, "journal")
    assert alerts.list_notifiers(ctx) == []


# --- the rules themselves (pure) ----------------------------------------------------------


def _facts(kind: str, outcome: str = "ok", **details: Any) -> Facts:
    return Facts.of(kind, "s", outcome, details)


def test_severity_and_matching() -> None:
    assert severity_of({}, "failed") == "warning"
    assert severity_of({}, "ok") == "info"
    assert severity_of({"severity": "bogus"}, "ok") == "info"
    rule = RuleSpec("r", ["backup.*", "health.unhealthy"], "warning")
    assert rule.matches(_facts("backup.failed", "failed"))
    assert not rule.matches(_facts("backup.completed"))  # info
    assert not rule.matches(_facts("backupx.failed", "failed"))
    assert not rule.matches(_facts("health.unhealthy.extra", severity="critical"))
    everything = RuleSpec("all", ["*"], "info")
    assert not everything.matches(_facts("alert.delivery_failed", "failed"))  # no loops
    assert not everything.matches(_facts("notifier.tested", "failed"))
    assert alert_key("r", _facts("backup.failed", incident="k")) == "k"
    assert _facts("x", machine="web.12").node == "web"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/",
        "http://user:pw@127.0.0.1/hook",
        "http:///nohost",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/\r\nX: 1",
        "http://exa_mple.com/",
        "https://" + "a" * 2001,
        "",
    ],
)
def test_bad_webhook_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url(url)
    assert refused.value.field == "url"


def test_good_webhook_urls() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://hooks.example.com/x?y=1", "http://[::1]/"):
        assert check_url(url) == url


def test_an_incident_that_gets_worse_is_told_once_per_level(
    local: tuple[Context, Settings],
) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"])
    _incident(ctx, "open", severity="warning")
    _dispatch(ctx, settings, T0)
    for _ in range(2):
        _incident(ctx, "open", severity="critical")
    _incident(ctx, "open", severity="warning")
    _dispatch(ctx, settings, T0 + timedelta(minutes=1))
    assert _messages(settings.home) == ["opened", "escalated"]
    (alert,) = alerts.list_alerts(ctx)
    assert (alert.severity, alert.events) == ("critical", 4)


def test_one_dispatcher_at_a_time(local: tuple[Context, Settings]) -> None:
    from provisor.orchestrator.alerts import Dispatcher

    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"])
    first, second = Dispatcher(ctx.store, settings.home), Dispatcher(ctx.store, settings.home)

    async def passes() -> tuple[str | None, str | None, int]:
        held = await first.run_once()
        _incident(ctx, "open")
        refused = await second.run_once()
        first.release()
        taken = await second.run_once()
        return held.busy, refused.busy, taken.opened

    assert asyncio.run(passes()) == (None, first.holder, 1)
    assert _messages(settings.home) == ["opened"]


def test_oversized_event_fields_are_cut_to_what_the_store_keeps() -> None:
    huge = "x" * 100_000
    facts = Facts.of(
        "backup.failed",
        huge,
        "failed",
        {"machine": huge, "node": huge, "deployment": huge, "incident": huge},
    )
    assert len(facts.subject) <= 255 and len(facts.machine or "") <= 128
    assert len(facts.node or "") <= 64 and len(facts.deployment or "") <= 128
    assert len(alert_key("r", facts)) <= 300
    assert len(alert_key("r", Facts.of("k", huge, "failed", {}))) <= 300
    details = bounded_details({"output": huge})
    assert details["truncated"] is True and len(json.dumps(details)) < 20_000


def test_alerted_in_the_tenant_of_the_event_only(local: tuple[Context, Settings]) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "all", kinds=["*"], notifiers=["journal"], min_severity="info")
    other = Context(store=ctx.store, actor="someone", tenant="other", home=settings.home)
    alerts.add_notifier(other, "journal", "log", {}, None)
    emit(other, "health.unhealthy", "theirs", severity="critical")
    emit(ctx, "health.unhealthy", "ours", severity="critical")
    _dispatch(ctx, settings, T0)
    assert [a.subject for a in alerts.list_alerts(ctx)] == ["ours"]
    assert alerts.list_alerts(other) == []
    with pytest.raises(NotFound):
        alerts.ack_alert(other, alerts.list_alerts(ctx)[0].id)


def test_ended_alerts_are_removed_after_90_days(local: tuple[Context, Settings]) -> None:
    ctx, settings = local
    alerts.add_notifier(ctx, "journal", "log", {}, None)
    alerts.add_rule(ctx, "health", kinds=["health.*"], notifiers=["journal"])
    _incident(ctx, "open")
    _dispatch(ctx, settings, T0)
    _incident(ctx, "resolved", severity="info")
    _dispatch(ctx, settings, T0 + timedelta(hours=1))
    _dispatch(ctx, settings, T0 + timedelta(days=89))
    assert len(alerts.list_alerts(ctx, include_ended=True)) == 1
    _dispatch(ctx, settings, T0 + timedelta(days=91))
    assert alerts.list_alerts(ctx, include_ended=True) == []
