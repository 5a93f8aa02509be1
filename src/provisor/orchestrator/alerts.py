"""The alert dispatcher: reads new events after a stored cursor, turns those the rules
match into alerts (one per incident), records each notification to send, and sends it.

Durable and bounded:
- the cursor advances in the same transaction that records the alerts and deliveries
  an event makes: a dispatcher killed at any point neither loses nor doubles them;
- a delivery is a row (alert x notifier x message) written before it is sent and
  marked after: on restart only unsent ones go out; a failed one is retried with
  backoff, each failure recorded as an `alert.delivery_failed` event (events about
  alerting never raise alerts: core.alerts.QUIET_PREFIXES);
- one dispatcher at a time (a lease in the cursor row, taken over when it expires or,
  on the same computer, at once when its process is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisor.core.alerts import (
    Facts,
    RuleSpec,
    alert_key,
    at_least,
    bounded_details,
    one_line,
)
from provisor.core.errors import ProvisorError
from provisor.events import record_event
from provisor.events.notifiers import DeliveryError, Target, send
from provisor.store import Event, Store, Tenant
from provisor.store.alerts import Alert, AlertCursor, AlertDelivery, AlertRule, Notifier

log = logging.getLogger(__name__)

CURSOR_ID = 1
LEASE = timedelta(minutes=10)
EVENT_BATCH = 500  # events per transaction
MAX_BATCHES = 20  # per pass: a backlog is worked through over several passes
SEND_BATCH = 50  # deliveries per round
MAX_ROUNDS = 20  # send rounds per pass
CONCURRENCY = 8  # sends at once
MAX_ATTEMPTS = 10  # then a delivery is given up (state failed)
MAX_BACKOFF = timedelta(minutes=30)
KEEP_ENDED = timedelta(days=90)  # resolved and closed alerts, then removed (events stay)
GAP_GRACE = timedelta(seconds=60)  # an id missing this long is a rolled-back insert
_ERROR = 1000  # characters of a send error kept


def utcnow() -> datetime:
    return datetime.now(UTC)


def _holder_alive(holder: str) -> bool:
    """Whether the dispatcher named `holder` may still run: on another computer it may;
    on this one, only if its process is there."""
    host, _, rest = holder.partition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(rest.split(":", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


def start_cursor(session: Session) -> AlertCursor:
    """The cursor row, made at the newest event on first use: history before alerting
    was set up raises no alerts."""
    cursor = session.get(AlertCursor, CURSOR_ID)
    if cursor is not None:
        return cursor
    newest = session.scalar(select(func.max(Event.id))) or 0
    try:
        with session.begin_nested():  # another process may make it at the same moment
            session.add(AlertCursor(id=CURSOR_ID, last_event_id=newest))
    except IntegrityError:
        pass
    made = session.get(AlertCursor, CURSOR_ID)
    assert made is not None
    return made


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule": alert.rule,
        "key": alert.key,
        "state": alert.state,
        "severity": alert.severity,
        "kind": alert.kind,
        "subject": alert.subject,
        "deployment": alert.deployment,
        "node": alert.node,
        "machine": alert.machine,
        "opened_at": alert.opened_at.isoformat(timespec="seconds"),
        "events": alert.event_count,
        "acked": alert.acked_at is not None,
    }


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.time.isoformat(timespec="seconds"),
        "kind": event.kind,
        "subject": event.subject,
        "outcome": event.outcome,
        "actor": event.actor,
        "details": bounded_details(event.details),
    }


def record_deliveries(
    session: Session,
    alert: Alert,
    rule: AlertRule,
    message: str,
    tenant: str,
    event: Event | None,
    now: datetime,
) -> int:
    """One pending delivery per notifier of `rule` (names no longer configured are
    skipped); the number recorded."""
    notifiers = session.scalars(
        select(Notifier).where(
            Notifier.tenant_id == rule.tenant_id, Notifier.name.in_(rule.notifiers)
        )
    ).all()
    payload: dict[str, Any] = {
        "message": message.split(".")[0],
        "tenant": tenant,
        "alert": alert_json(alert),
    }
    if event is not None:
        payload["event"] = _event_json(event)
    for notifier in notifiers:
        session.add(
            AlertDelivery(
                alert_id=alert.id,
                notifier_id=notifier.id,
                message=message,
                payload=payload,
                due_at=now,
                created_at=now,
            )
        )
    return len(notifiers)


@dataclass
class PassResult:
    """What one pass did; `busy` names the other dispatcher when it did nothing."""

    events: int = 0
    opened: int = 0
    resolved: int = 0
    reminded: int = 0
    sent: int = 0
    failed: int = 0
    busy: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Send:
    delivery: int
    alert: int
    tenant: str
    message: str
    target: Target
    payload: dict[str, Any]
    error: str | None = None  # known before sending: it is not sent


class Dispatcher:
    def __init__(
        self,
        store: Store,
        home: Path,
        *,
        retry_seconds: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.home = home
        self.retry = timedelta(seconds=retry_seconds)
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    # --- the lease ---------------------------------------------------------------------

    def _take_lease(self) -> str | None:
        """None when this dispatcher holds the lease now, else who does."""
        real_now = utcnow()
        with self.store.session() as session:
            cursor = start_cursor(session)
            current = cursor.holder
        free = [AlertCursor.holder.is_(None), AlertCursor.holder == self.holder]
        free.append(AlertCursor.lease_until < real_now)
        if current and current != self.holder and not _holder_alive(current):
            free.append(AlertCursor.holder == current)
        with self.store.session() as session:
            taken = session.execute(
                update(AlertCursor)
                .where(AlertCursor.id == CURSOR_ID, or_(*free))
                .values(holder=self.holder, lease_until=real_now + LEASE)
            )
            if getattr(taken, "rowcount", 0) == 1:
                return None
            return session.scalar(select(AlertCursor.holder).where(AlertCursor.id == CURSOR_ID))

    def release(self) -> None:
        with self.store.session() as session:
            session.execute(
                update(AlertCursor)
                .where(AlertCursor.id == CURSOR_ID, AlertCursor.holder == self.holder)
                .values(holder=None, lease_until=None)
            )

    # --- events to alerts --------------------------------------------------------------

    def _read_events(self, result: PassResult) -> bool:
        """Work through one batch of new events; whether there may be more."""
        now = self.clock()
        with self.store.session() as session:
            cursor = start_cursor(session)
            events = session.scalars(
                select(Event)
                .where(Event.id > cursor.last_event_id)
                .order_by(Event.id)
                .limit(EVENT_BATCH)
            ).all()
            if not events:
                return False
            rules = session.scalars(select(AlertRule).order_by(AlertRule.id)).all()
            tenants = {name: id_ for name, id_ in session.execute(select(Tenant.name, Tenant.id))}
            expected = cursor.last_event_id + 1
            for event in events:
                # A missing id is a transaction still open (PostgreSQL hands out ids before
                # commit) or rolled back: wait for it a while rather than skip it.
                if event.id != expected and utcnow() - event.time < GAP_GRACE:
                    return False
                expected = event.id + 1
                self._one_event(session, event, tenants.get(event.tenant), rules, now, result)
                cursor.last_event_id = event.id
                result.events += 1
            return len(events) == EVENT_BATCH

    def _one_event(
        self,
        session: Session,
        event: Event,
        tenant_id: int | None,
        rules: Any,
        now: datetime,
        result: PassResult,
    ) -> None:
        if tenant_id is None:
            return
        facts = Facts.of(event.kind, event.subject, event.outcome, event.details or {})
        if facts.resolved and facts.incident:
            self._resolve(session, event, tenant_id, facts.incident, now, result)
            return
        for rule in rules:
            if rule.tenant_id != tenant_id:
                continue
            spec = RuleSpec(rule.name, rule.kinds, rule.min_severity, rule.deployment, rule.node)
            if not spec.matches(facts):
                continue
            key = alert_key(rule.name, facts)
            alert = session.scalar(
                select(Alert).where(
                    Alert.tenant_id == tenant_id,
                    Alert.rule_id == rule.id,
                    Alert.key == key,
                    Alert.state == "open",
                )
            )
            if alert is not None:  # the same incident again: counted, not sent again...
                alert.event_count += 1
                alert.last_event_id = event.id
                alert.last_seen_at = now
                if not at_least(alert.severity, facts.severity):  # ...unless it got worse
                    alert.severity = facts.severity
                    message = f"escalated.{facts.severity}"
                    record_deliveries(session, alert, rule, message, event.tenant, event, now)
                continue
            remind = timedelta(seconds=rule.remind_seconds) if rule.remind_seconds else None
            alert = Alert(
                tenant_id=tenant_id,
                rule_id=rule.id,
                rule=rule.name,
                key=key,
                incident=facts.incident is not None,
                state="open",
                kind=facts.kind,
                severity=facts.severity,
                subject=facts.subject,
                deployment=facts.deployment,
                node=facts.node,
                machine=facts.machine,
                first_event_id=event.id,
                last_event_id=event.id,
                event_count=1,
                opened_at=now,
                last_seen_at=now,
                remind_at=now + remind if remind else None,
            )
            session.add(alert)
            session.flush()
            record_deliveries(session, alert, rule, "opened", event.tenant, event, now)
            result.opened += 1

    def _resolve(
        self,
        session: Session,
        event: Event,
        tenant_id: int,
        incident: str,
        now: datetime,
        result: PassResult,
    ) -> None:
        found = session.execute(
            select(Alert, AlertRule)
            .join(AlertRule, AlertRule.id == Alert.rule_id)
            .where(Alert.tenant_id == tenant_id, Alert.key == incident, Alert.state == "open")
        ).all()
        for alert, rule in found:
            alert.state = "resolved"
            alert.resolved_at = now
            alert.remind_at = None
            alert.last_event_id = event.id
            record_deliveries(session, alert, rule, "resolved", event.tenant, event, now)
            result.resolved += 1

    def _remind(self, result: PassResult) -> None:
        now = self.clock()
        with self.store.session() as session:
            due = session.execute(
                select(Alert, AlertRule, Tenant.name)
                .join(AlertRule, AlertRule.id == Alert.rule_id)
                .join(Tenant, Tenant.id == Alert.tenant_id)
                .where(Alert.state == "open", Alert.acked_at.is_(None), Alert.remind_at <= now)
                .order_by(Alert.id)
                .limit(SEND_BATCH)
            ).all()
            for alert, rule, tenant in due:
                alert.reminders += 1
                every = rule.remind_seconds
                alert.remind_at = now + timedelta(seconds=every) if every else None
                record_deliveries(
                    session, alert, rule, f"reminder.{alert.reminders}", tenant, None, now
                )
                result.reminded += 1

    def _prune(self) -> None:
        """Remove alerts ended more than KEEP_ENDED ago, with their deliveries (bounded)."""
        cutoff = self.clock() - KEEP_ENDED
        with self.store.session() as session:
            old = select(Alert.id).where(
                Alert.state != "open",
                func.coalesce(Alert.resolved_at, Alert.acked_at, Alert.last_seen_at) < cutoff,
            )
            ids = list(session.scalars(old.limit(EVENT_BATCH)))
            if ids:
                session.execute(delete(AlertDelivery).where(AlertDelivery.alert_id.in_(ids)))
                session.execute(delete(Alert).where(Alert.id.in_(ids)))

    # --- sending -------------------------------------------------------------------------

    def _due(self, tried: set[int]) -> list[_Send]:
        """Deliveries due now, but not those tried in this pass (a failed one waits for
        its backoff, and for the next pass at least)."""
        from provisor.orchestrator.secrets import unseal

        now = self.clock()
        with self.store.session() as session:
            rows = session.execute(
                select(AlertDelivery, Notifier, Tenant.name)
                .join(Notifier, Notifier.id == AlertDelivery.notifier_id)
                .join(Tenant, Tenant.id == Notifier.tenant_id)
                .where(AlertDelivery.state == "pending", AlertDelivery.due_at <= now)
                .where(AlertDelivery.id.not_in(tried))
                .order_by(AlertDelivery.id)
                .limit(SEND_BATCH)
            ).all()
            due = []
            for delivery, notifier, tenant in rows:
                secret, error = None, None
                try:
                    secret = unseal(self.home, notifier.secret) if notifier.secret else None
                except ProvisorError as exc:  # another data directory's key: say so, go on
                    error = f"cannot open the notifier's secret: {exc}"
                target = Target(notifier.name, notifier.kind, dict(notifier.settings), secret)
                payload = dict(delivery.payload)
                due.append(
                    _Send(
                        delivery.id,
                        delivery.alert_id,
                        tenant,
                        delivery.message,
                        target,
                        payload,
                        error,
                    )
                )
            return due

    def _mark(self, item: _Send, error: str | None, result: PassResult) -> None:
        now = self.clock()
        with self.store.session() as session:
            delivery = session.get(AlertDelivery, item.delivery)
            if delivery is None or delivery.state != "pending":
                return  # the alert was removed with its rule meanwhile
            delivery.attempts += 1
            if error is None:
                delivery.state, delivery.sent_at, delivery.last_error = "sent", now, None
                result.sent += 1
                return
            delivery.last_error = error[:_ERROR]
            gave_up = delivery.attempts >= MAX_ATTEMPTS
            backoff = min(self.retry * 2 ** (delivery.attempts - 1), MAX_BACKOFF)
            if gave_up:
                delivery.state = "failed"
            else:
                delivery.due_at = now + backoff
            result.failed += 1
            result.errors.append(f"{item.target.name}: {error}")
            details: dict[str, Any] = {
                "severity": "critical" if gave_up else "warning",
                "alert": item.alert,
                "notifier": item.target.name,
                "type": item.target.kind,
                "message": item.message,
                "attempt": delivery.attempts,
                "error": error[:_ERROR],
                "gave_up": gave_up,
            }
            if not gave_up:
                details["retry_at"] = delivery.due_at.isoformat(timespec="seconds")
            record_event(
                session,
                actor="provisor",
                tenant=item.tenant,
                kind="alert.delivery_failed",
                subject=f"alert {item.alert} via {item.target.name}",
                outcome="failed",
                details=details,
            )

    async def _send_one(self, item: _Send, gate: asyncio.Semaphore, result: PassResult) -> None:
        async with gate:
            # Recorded, not yet sent: a crash here must send it once on restart.
            sys.audit("provisor.step", f"alert-send:{item.delivery}")
            error = item.error
            try:
                if error is None:
                    await send(item.target, item.payload, home=self.home, delivery=item.delivery)
            except DeliveryError as exc:
                error = exc.message
            except Exception as exc:  # a notifier's bug must not stop the others
                log.exception("sending alert %d via %s", item.alert, item.target.name)
                error = one_line(f"{type(exc).__name__}: {exc}", _ERROR)
            await asyncio.to_thread(self._mark, item, error, result)

    # --- a pass, and the loop ------------------------------------------------------------

    async def run_once(self) -> PassResult:
        """One pass: new events, reminders due, deliveries due. Bounded in work."""
        result = PassResult()
        busy = await asyncio.to_thread(self._take_lease)
        if busy is not None:
            result.busy = busy
            return result
        for _ in range(MAX_BATCHES):
            if not await asyncio.to_thread(self._read_events, result):
                break
        await asyncio.to_thread(self._remind, result)
        await asyncio.to_thread(self._prune)
        gate = asyncio.Semaphore(CONCURRENCY)
        tried: set[int] = set()
        for round_ in range(MAX_ROUNDS):
            # Still ours? (A pass slower than the lease lets another dispatcher take over.)
            if round_ and await asyncio.to_thread(self._take_lease) is not None:
                break
            due = await asyncio.to_thread(self._due, tried)
            if not due:
                break
            tried.update(item.delivery for item in due)
            await asyncio.gather(*(self._send_one(item, gate, result) for item in due))
        return result

    async def run(self, stopping: asyncio.Event, poll_seconds: float) -> None:
        """Pass after pass until `stopping` is set; a failing pass is logged, not fatal."""
        try:
            while not stopping.is_set():
                try:
                    await self.run_once()
                except Exception:
                    log.exception("alert dispatch pass failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll_seconds)
        finally:
            await asyncio.to_thread(self.release)


__all__ = ["Dispatcher", "PassResult", "alert_json", "record_deliveries", "start_cursor"]
