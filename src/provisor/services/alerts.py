"""Alerting: notifiers (where alerts go), rules (which events raise one), alerts (list,
acknowledge) and the dispatcher that delivers them.

A notifier's secret (an SMTP password, a webhook's HMAC key) is sealed before it reaches
the database and never returned, logged or recorded in an event. A `command` notifier
runs a program on the controller: only the data directory's owner (the local CLI)
configures one, never a caller of the API.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisor.core.access import Action
from provisor.core.alerts import (
    MAX_NOTIFIERS_PER_RULE,
    MAX_PATTERNS,
    MAX_REMIND_SECONDS,
    MIN_REMIND_SECONDS,
    NOTIFIER_KINDS,
    SECRETS,
    SEVERITIES,
    check_notifier,
    check_pattern,
    check_severity,
)
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.core.names import check_name
from provisor.services.context import Context, Settings, Store, audited
from provisor.store.alerts import Alert, AlertDelivery, AlertRule, Notifier

_MAX_NAME = 64
MAX_RULES = 200  # per tenant
MAX_NOTIFIERS = 100  # per tenant
MAX_LISTED = 1000  # alerts in one list


class NotifierView(BaseModel):
    name: str
    kind: str = Field(description="log, email, webhook or command")
    settings: dict[str, Any] = Field(description="what the type needs; no secret in here")
    has_secret: bool = Field(description="a secret is stored for it (sealed; never shown)")
    created_at: datetime
    created_by: str


class RuleView(BaseModel):
    name: str
    kinds: list[str] = Field(description="event kinds: exact, a prefix such as backup.*, or *")
    min_severity: str
    deployment: str | None
    node: str | None
    notifiers: list[str]
    remind_seconds: int | None = Field(description="a reminder this often while open")
    created_at: datetime
    created_by: str


class AlertView(BaseModel):
    id: int
    rule: str
    key: str = Field(description="the incident (or rule:kind:subject for an event without)")
    state: str = Field(description="open, resolved (its incident ended) or closed (acked)")
    severity: str
    kind: str
    subject: str
    deployment: str | None
    node: str | None
    machine: str | None
    events: int = Field(description="matching events seen while it is open")
    reminders: int
    opened_at: datetime
    last_seen_at: datetime
    remind_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    deliveries: dict[str, int] = Field(description="deliveries by state: pending, sent, failed")


class DispatchView(BaseModel):
    events: int
    opened: int
    resolved: int
    reminded: int
    sent: int
    failed: int
    busy: str | None = Field(description="another dispatcher holds the lease; it delivers")
    errors: list[str]


# --- notifiers ------------------------------------------------------------------------


def _check_new_name(name: str, what: str) -> str:
    check_name(name, field="name")
    if len(name) > _MAX_NAME:
        raise InvalidInput(f"a {what} name has at most {_MAX_NAME} characters", field="name")
    return name


def _notifier_view(row: Notifier) -> NotifierView:
    return NotifierView(
        name=row.name,
        kind=row.kind,
        settings=dict(row.settings),
        has_secret=row.secret is not None,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _find_notifier(session: Session, tenant_id: int, name: str) -> Notifier:
    row = session.scalar(
        select(Notifier).where(Notifier.tenant_id == tenant_id, Notifier.name == name)
    )
    if row is None:
        raise NotFound(f"no notifier named {name[:80]!r}", field="name")
    return row


def add_notifier(
    ctx: Context, name: str, kind: str, settings: dict[str, Any], secret: str | None
) -> NotifierView:
    """Configure a notifier; its secret (if any) is stored sealed."""
    ctx.require(Action.alerts_manage)
    if kind == "command" and not ctx.is_local:
        raise ctx.deny(
            "a command notifier runs a program on the controller: only the data "
            "directory's owner configures one (the local CLI)",
            name,
            action=Action.alerts_manage.value,
        )
    _check_new_name(name, "notifier")
    if secret is not None and not secret.strip():
        raise InvalidInput("the secret is empty", field="secret")
    checked = check_notifier(kind, settings, secret is not None)
    with audited(ctx, "notifier.added", name) as (session, audit):
        audit.details = {"type": kind, "settings": checked, "has_secret": secret is not None}
        tenant_id = ctx.tenant_id()
        count = len(
            session.scalars(select(Notifier.id).where(Notifier.tenant_id == tenant_id)).all()
        )
        if count >= MAX_NOTIFIERS:
            raise Conflict(f"a tenant has at most {MAX_NOTIFIERS} notifiers", field="name")
        if session.scalar(
            select(Notifier.id).where(Notifier.tenant_id == tenant_id, Notifier.name == name)
        ):
            raise Conflict(f"a notifier named {name!r} already exists", field="name")
        from provisor.orchestrator import secrets  # asyncssh: loaded when needed

        row = Notifier(
            tenant_id=tenant_id,
            name=name,
            kind=kind,
            settings=checked,
            secret=secrets.seal_given(ctx.home, secret),
            created_by=ctx.actor,
        )
        session.add(row)
        session.flush()
        return _notifier_view(row)


def list_notifiers(ctx: Context) -> list[NotifierView]:
    ctx.require(Action.alerts_read)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(Notifier).where(Notifier.tenant_id == ctx.tenant_id()).order_by(Notifier.name)
        ).all()
        return [_notifier_view(r) for r in rows]


def remove_notifier(ctx: Context, name: str) -> None:
    """Forget a notifier; refused while a rule sends to it."""
    ctx.require(Action.alerts_manage)
    with audited(ctx, "notifier.removed", name) as (session, _audit):
        tenant_id = ctx.tenant_id()
        row = _find_notifier(session, tenant_id, name)
        rules = session.scalars(
            select(AlertRule).where(AlertRule.tenant_id == tenant_id).order_by(AlertRule.name)
        ).all()
        using = [r.name for r in rules if name in r.notifiers]
        if using:
            raise Conflict(
                f"notifier {name!r} is used by rule(s) {', '.join(using)}: remove them first",
                field="name",
            )
        session.delete(row)


async def send_test(ctx: Context, name: str) -> float:
    """Send a test notification now (not queued); the seconds it took, or DeliveryError.
    Every test is recorded (`notifier.tested`), failed ones with the reason."""
    from provisor.events.notifiers import DeliveryError, Target, send
    from provisor.orchestrator.secrets import unseal

    ctx.require(Action.alerts_manage)

    def load() -> Target:
        with ctx.store.session() as session:
            row = _find_notifier(session, ctx.tenant_id(), name)
            secret = unseal(ctx.home, row.secret) if row.secret else None
            return Target(row.name, row.kind, dict(row.settings), secret)

    target = await asyncio.to_thread(load)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    payload = {
        "message": "test",
        "tenant": ctx.tenant,
        "alert": {
            "id": 0,
            "rule": "test",
            "state": "test",
            "severity": "info",
            "kind": "notifier.tested",
            "subject": f"test of notifier {name}",
            "opened_at": now,
        },
    }
    started = time.monotonic()
    error: DeliveryError | None = None
    try:
        await send(target, payload, home=ctx.home, delivery=0)
    except DeliveryError as exc:
        error = exc
    seconds = round(time.monotonic() - started, 3)

    def record() -> None:
        with audited(ctx, "notifier.tested", name) as (_session, audit):
            audit.details = {"type": target.kind, "seconds": seconds}
            if error is not None:
                raise error

    await asyncio.to_thread(record)
    return seconds


# --- rules ------------------------------------------------------------------------------


def _rule_view(row: AlertRule) -> RuleView:
    return RuleView(
        name=row.name,
        kinds=list(row.kinds),
        min_severity=row.min_severity,
        deployment=row.deployment,
        node=row.node,
        notifiers=list(row.notifiers),
        remind_seconds=row.remind_seconds,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def add_rule(
    ctx: Context,
    name: str,
    *,
    kinds: list[str],
    notifiers: list[str],
    min_severity: str = "warning",
    deployment: str | None = None,
    node: str | None = None,
    remind_seconds: float | None = None,
) -> RuleView:
    """Raise an alert for events of `kinds` at `min_severity` or above (of `deployment`,
    of `node`, when given) and tell `notifiers`."""
    from provisor.orchestrator.alerts import start_cursor

    ctx.require(Action.alerts_manage)
    _check_new_name(name, "rule")
    if not 1 <= len(kinds) <= MAX_PATTERNS:
        raise InvalidInput(f"from 1 to {MAX_PATTERNS} event kinds are needed", field="kind")
    kinds = [check_pattern(k) for k in dict.fromkeys(kinds)]
    check_severity(min_severity, "severity")
    notifiers = list(dict.fromkeys(notifiers))
    if not 1 <= len(notifiers) <= MAX_NOTIFIERS_PER_RULE:
        raise InvalidInput(
            f"from 1 to {MAX_NOTIFIERS_PER_RULE} notifiers are needed", field="notifier"
        )
    if deployment is not None:
        check_name(deployment, field="deployment")
    if node is not None:
        check_name(node, field="node")
    remind: int | None = None
    if remind_seconds is not None:
        if not MIN_REMIND_SECONDS <= remind_seconds <= MAX_REMIND_SECONDS:
            raise InvalidInput(
                f"a reminder interval is from {MIN_REMIND_SECONDS} s to 30 days",
                field="remind_after",
            )
        remind = int(remind_seconds)
    with audited(ctx, "alert.rule_added", name) as (session, audit):
        audit.details = {"kinds": kinds, "severity": min_severity, "notifiers": notifiers}
        tenant_id = ctx.tenant_id()
        existing = session.scalars(
            select(AlertRule.name).where(AlertRule.tenant_id == tenant_id)
        ).all()
        if name in existing:
            raise Conflict(f"a rule named {name!r} already exists", field="name")
        if len(existing) >= MAX_RULES:
            raise Conflict(f"a tenant has at most {MAX_RULES} rules", field="name")
        known = set(
            session.scalars(
                select(Notifier.name).where(
                    Notifier.tenant_id == tenant_id, Notifier.name.in_(notifiers)
                )
            )
        )
        missing = [n for n in notifiers if n not in known]
        if missing:
            raise NotFound(
                f"no notifier named {missing[0][:80]!r} (`provisor notifiers list`)",
                field="notifier",
            )
        start_cursor(session)  # events from now on are read: none before alerting existed
        row = AlertRule(
            tenant_id=tenant_id,
            name=name,
            kinds=kinds,
            min_severity=min_severity,
            deployment=deployment,
            node=node,
            notifiers=notifiers,
            remind_seconds=remind,
            created_by=ctx.actor,
        )
        session.add(row)
        session.flush()
        return _rule_view(row)


def list_rules(ctx: Context) -> list[RuleView]:
    ctx.require(Action.alerts_read)
    with ctx.store.session() as session:
        rows = session.scalars(
            select(AlertRule).where(AlertRule.tenant_id == ctx.tenant_id()).order_by(AlertRule.name)
        ).all()
        return [_rule_view(r) for r in rows]


def remove_rule(ctx: Context, name: str) -> None:
    """Forget a rule, with its alerts and their pending notifications (the events stay)."""
    ctx.require(Action.alerts_manage)
    with audited(ctx, "alert.rule_removed", name) as (session, _audit):
        row = session.scalar(
            select(AlertRule).where(AlertRule.tenant_id == ctx.tenant_id(), AlertRule.name == name)
        )
        if row is None:
            raise NotFound(f"no rule named {name[:80]!r}", field="name")
        alert_ids = select(Alert.id).where(Alert.rule_id == row.id)
        session.execute(delete(AlertDelivery).where(AlertDelivery.alert_id.in_(alert_ids)))
        session.execute(delete(Alert).where(Alert.rule_id == row.id))
        session.delete(row)


# --- alerts -----------------------------------------------------------------------------


def _alert_view(session: Session, row: Alert) -> AlertView:
    counts: dict[str, int] = {}
    for state in session.scalars(
        select(AlertDelivery.state).where(AlertDelivery.alert_id == row.id)
    ):
        counts[state] = counts.get(state, 0) + 1
    return AlertView(
        id=row.id,
        rule=row.rule,
        key=row.key,
        state=row.state,
        severity=row.severity,
        kind=row.kind,
        subject=row.subject,
        deployment=row.deployment,
        node=row.node,
        machine=row.machine,
        events=row.event_count,
        reminders=row.reminders,
        opened_at=row.opened_at,
        last_seen_at=row.last_seen_at,
        remind_at=row.remind_at,
        acked_at=row.acked_at,
        acked_by=row.acked_by,
        resolved_at=row.resolved_at,
        deliveries=counts,
    )


def list_alerts(ctx: Context, *, include_ended: bool = False, limit: int = 100) -> list[AlertView]:
    """Open alerts, newest first (with `include_ended`, resolved and closed ones too)."""
    ctx.require(Action.alerts_read)
    if not 1 <= limit <= MAX_LISTED:
        raise InvalidInput(f"limit is from 1 to {MAX_LISTED}", field="limit")
    with ctx.store.session() as session:
        statement = select(Alert).where(Alert.tenant_id == ctx.tenant_id())
        if not include_ended:
            statement = statement.where(Alert.state == "open")
        rows = session.scalars(statement.order_by(Alert.id.desc()).limit(limit)).all()
        return [_alert_view(session, r) for r in rows]


def _find_alert(ctx: Context, session: Session, alert_id: int) -> Alert:
    row = session.get(Alert, alert_id)
    if row is None or row.tenant_id != ctx.tenant_id():  # another tenant's: not found
        raise NotFound(f"no alert {alert_id}", field="id")
    return row


def get_alert(ctx: Context, alert_id: int) -> AlertView:
    ctx.require(Action.alerts_read)
    with ctx.store.session() as session:
        return _alert_view(session, _find_alert(ctx, session, alert_id))


def ack_alert(ctx: Context, alert_id: int) -> AlertView:
    """Acknowledge: no more reminders. An alert without an incident (nothing will
    resolve it) is closed by it; the next such event raises a new one."""
    ctx.require(Action.alerts_ack)
    ctx.tenant_id()
    with audited(ctx, "alert.acked", f"alert {alert_id}") as (session, audit):
        row = _find_alert(ctx, session, alert_id)
        audit.details = {"rule": row.rule, "key": row.key}
        if row.acked_at is None:
            row.acked_at = datetime.now(UTC)
            row.acked_by = ctx.actor
            row.remind_at = None
            if not row.incident and row.state == "open":
                row.state = "closed"
        session.flush()
        return _alert_view(session, row)


# --- the dispatcher ---------------------------------------------------------------------


def _dispatch_view(result: Any) -> DispatchView:
    return DispatchView(
        events=result.events,
        opened=result.opened,
        resolved=result.resolved,
        reminded=result.reminded,
        sent=result.sent,
        failed=result.failed,
        busy=result.busy,
        errors=result.errors[:20],
    )


async def dispatch_once(
    ctx: Context, settings: Settings, *, now: datetime | None = None
) -> DispatchView:
    """One dispatcher pass, as `provisor alerts dispatch` (and cron) runs it. Every
    tenant's events are dispatched: only the data directory's owner may."""
    from provisor.orchestrator.alerts import Dispatcher, utcnow

    if not ctx.is_local:
        raise ctx.deny("only the data directory's owner dispatches alerts", "alerts.dispatch")
    clock = (lambda: now) if now is not None else utcnow
    dispatcher = Dispatcher(
        ctx.store, ctx.home, retry_seconds=settings.alert_retry_seconds, clock=clock
    )
    try:
        return _dispatch_view(await dispatcher.run_once())
    finally:
        await asyncio.to_thread(dispatcher.release)


async def run_dispatcher(settings: Settings, store: Store, stopping: asyncio.Event) -> None:
    """Dispatch until `stopping` is set (the server's and the worker's background task)."""
    from provisor.orchestrator.alerts import Dispatcher

    dispatcher = Dispatcher(store, settings.home, retry_seconds=settings.alert_retry_seconds)
    await dispatcher.run(stopping, settings.alert_poll_seconds)


__all__ = [
    "NOTIFIER_KINDS",
    "SECRETS",
    "SEVERITIES",
    "AlertView",
    "DispatchView",
    "NotifierView",
    "RuleView",
    "ack_alert",
    "add_notifier",
    "add_rule",
    "dispatch_once",
    "get_alert",
    "list_alerts",
    "list_notifiers",
    "list_rules",
    "remove_notifier",
    "remove_rule",
    "run_dispatcher",
    "send_test",
]
