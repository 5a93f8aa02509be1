"""Alerting rules, pure: notifier settings, rule matching, severities, incident keys and
the text of a notification. No I/O: the dispatcher (orchestrator/alerts.py) does that."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from provisor.core.errors import InvalidInput
from provisor.core.names import check_address, check_port

SEVERITIES = ("info", "warning", "critical")
NOTIFIER_KINDS = ("log", "email", "webhook", "command")
# Kinds whose notifiers take a secret: (required, what it is called).
SECRETS: dict[str, tuple[bool, str]] = {
    "email": (False, "SMTP password"),
    "webhook": (True, "HMAC key"),
}
# Events about alerting itself never raise alerts: no loop of alerts about alerts.
QUIET_PREFIXES = ("alert.", "notifier.")
MESSAGES = ("opened", "escalated", "reminder", "resolved", "test")

MAX_RECIPIENTS = 20
MAX_PATTERNS = 20
MAX_NOTIFIERS_PER_RULE = 10
MAX_ARGS = 32
MAX_ARG = 4096
MAX_URL = 2000
MAX_TEXT = 255  # a subject, a field in a line
MAX_DETAILS = 16_384  # bytes of an event's details carried in a notification
MIN_REMIND_SECONDS = 1
MAX_REMIND_SECONDS = 30 * 86_400

_KIND = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def one_line(text: object, limit: int = MAX_TEXT) -> str:
    """`text` with every control character (CR, LF: header injection) made a space, cut
    to `limit` characters."""
    flat = _CONTROL.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- notifier settings ---------------------------------------------------------------


def _bounded_number(
    settings: Mapping[str, Any], key: str, default: float, low: float, high: float
) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput(f"{key} must be a number from {low:g} to {high:g}", field=key)
    return float(value)


def _email_address(value: object, field: str) -> str:
    if not isinstance(value, str) or not _EMAIL.fullmatch(value):
        raise InvalidInput(f"invalid email address {str(value)[:80]!r}", field=field)
    return value


def check_url(value: object, field: str = "url") -> str:
    """An http or https URL with a host; no credentials in it (they would be stored in
    clear: the HMAC key is the secret)."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise InvalidInput(f"a URL of at most {MAX_URL} characters is needed", field=field)
    if _CONTROL.search(value) or " " in value:
        raise InvalidInput("the URL contains spaces or control characters", field=field)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"invalid URL {value[:80]!r}: {exc}", field=field) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"invalid URL {value[:80]!r}: only http:// and https:// are allowed", field=field
        )
    if not parts.hostname:
        raise InvalidInput(f"invalid URL {value[:80]!r}: no host", field=field)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "no credentials in the URL: the webhook's HMAC key signs the requests", field=field
        )
    check_address(parts.hostname.strip("[]"), field=field)
    if port is not None:
        check_port(port, field=field)
    return value


def _check_email(settings: Mapping[str, Any]) -> dict[str, Any]:
    security = settings.get("security", "starttls")
    if security not in ("starttls", "tls", "none"):
        raise InvalidInput("security is starttls, tls or none", field="security")
    host = settings.get("host")
    if not isinstance(host, str):
        raise InvalidInput("the SMTP server's host is needed", field="host")
    default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
    port = settings.get("port", default_port)
    if not isinstance(port, int) or isinstance(port, bool):
        raise InvalidInput("port is a number", field="port")
    recipients = settings.get("to")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise InvalidInput(f"from 1 to {MAX_RECIPIENTS} recipients (to) are needed", field="to")
    username = settings.get("username")
    if username is not None and (not isinstance(username, str) or one_line(username) != username):
        raise InvalidInput("invalid username", field="username")
    checked: dict[str, Any] = {
        "host": check_address(host, field="host"),
        "port": check_port(port),
        "security": security,
        "from": _email_address(settings.get("from"), "from"),
        "to": [_email_address(r, "to") for r in recipients],
        "timeout": _bounded_number(settings, "timeout", 30, 1, 120),
    }
    if username:
        checked["username"] = username
    return checked


def _check_command(settings: Mapping[str, Any]) -> dict[str, Any]:
    argv = settings.get("argv")
    if not isinstance(argv, list) or not 1 <= len(argv) <= MAX_ARGS:
        raise InvalidInput(f"argv is a list of 1 to {MAX_ARGS} strings", field="argv")
    for arg in argv:
        if not isinstance(arg, str) or len(arg) > MAX_ARG or "\x00" in arg:
            raise InvalidInput(f"each argument is a string of at most {MAX_ARG}", field="argv")
    if not argv[0].startswith("/"):
        raise InvalidInput(
            f"the program {argv[0][:80]!r} must be an absolute path (no shell, no PATH search)",
            field="argv",
        )
    return {"argv": argv, "timeout": _bounded_number(settings, "timeout", 30, 1, 300)}


_KNOWN = {
    "log": set[str](),
    "email": {"host", "port", "security", "from", "to", "username", "timeout"},
    "webhook": {"url", "timeout"},
    "command": {"argv", "timeout"},
}


def check_notifier(kind: str, settings: Mapping[str, Any], has_secret: bool) -> dict[str, Any]:
    """A notifier's settings checked and completed with defaults; raises InvalidInput
    naming the setting that is wrong."""
    if kind not in NOTIFIER_KINDS:
        raise InvalidInput(
            f"unknown notifier type {kind[:40]!r}: use {', '.join(NOTIFIER_KINDS)}", field="type"
        )
    unknown = sorted(set(settings) - _KNOWN[kind])
    if unknown:
        raise InvalidInput(
            f"a {kind} notifier has no setting {unknown[0][:40]!r}", field=unknown[0]
        )
    required, secret_name = SECRETS.get(kind, (False, ""))
    if has_secret and not secret_name:
        raise InvalidInput(f"a {kind} notifier takes no secret", field="secret")
    if required and not has_secret:
        raise InvalidInput(f"a {kind} notifier needs its {secret_name}", field="secret")
    if kind == "email":
        checked = _check_email(settings)
        if has_secret and "username" not in checked:
            raise InvalidInput("an SMTP password goes with a username", field="username")
        return checked
    if kind == "webhook":
        return {
            "url": check_url(settings.get("url")),
            "timeout": _bounded_number(settings, "timeout", 10, 1, 60),
        }
    if kind == "command":
        return _check_command(settings)
    return {}


# --- rules ----------------------------------------------------------------------------


def check_pattern(pattern: str) -> str:
    """An event kind (`backup.failed`), a prefix (`backup.*`), or `*` (every kind)."""
    stem = pattern.removesuffix(".*")
    if pattern == "*" or (len(pattern) <= 64 and _KIND.fullmatch(stem)):
        return pattern
    raise InvalidInput(
        f"invalid event kind {pattern[:80]!r}: a kind (backup.failed), a prefix (backup.*) or *",
        field="kind",
    )


def kind_matches(pattern: str, kind: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return kind.startswith(pattern[:-1])
    return kind == pattern


def check_severity(value: str, field: str = "severity") -> str:
    if value not in SEVERITIES:
        raise InvalidInput(f"severity is one of {', '.join(SEVERITIES)}", field=field)
    return value


def severity_of(details: Mapping[str, Any], outcome: str) -> str:
    """The event's own severity; without one, `warning` for a failure, else `info`."""
    given = details.get("severity")
    if isinstance(given, str) and given in SEVERITIES:
        return given
    return "warning" if outcome == "failed" else "info"


def at_least(severity: str, minimum: str) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


def _text(details: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = details.get(key)
    return one_line(value, limit) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Facts:
    """What a rule and an alert look at in one event."""

    kind: str
    subject: str
    outcome: str
    severity: str
    deployment: str | None
    node: str | None
    machine: str | None
    incident: str | None
    resolved: bool

    @classmethod
    def of(cls, kind: str, subject: str, outcome: str, details: Mapping[str, Any]) -> Facts:
        machine = _text(details, "machine", 128)
        node = _text(details, "node", 64)
        if node is None and machine and "." in machine:  # web.2 is a machine of node web
            node = machine.rsplit(".", 1)[0][:64]
        return cls(
            kind=kind,
            subject=one_line(subject),
            outcome=outcome,
            severity=severity_of(details, outcome),
            deployment=_text(details, "deployment", 128),
            node=node,
            machine=machine,
            incident=_text(details, "incident", 250),
            resolved=details.get("incident_state") == "resolved",
        )


@dataclass(frozen=True)
class RuleSpec:
    name: str
    kinds: Sequence[str]
    min_severity: str
    deployment: str | None = None
    node: str | None = None

    def matches(self, facts: Facts) -> bool:
        if facts.kind.startswith(QUIET_PREFIXES):
            return False
        return (
            any(kind_matches(p, facts.kind) for p in self.kinds)
            and at_least(facts.severity, self.min_severity)
            and self.deployment in (None, facts.deployment)
            and self.node in (None, facts.node)
        )


def alert_key(rule: str, facts: Facts) -> str:
    """The incident an alert stands for: the event's own key, or rule, kind and subject."""
    return facts.incident or one_line(f"{rule}:{facts.kind}:{facts.subject}", 300)


# --- what a notification says -----------------------------------------------------------


def bounded_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """An event's details as carried in a notification: at most MAX_DETAILS bytes of JSON."""
    text = json.dumps(details, default=str, sort_keys=True)
    if len(text.encode()) <= MAX_DETAILS:
        loaded: dict[str, Any] = json.loads(text)
        return loaded
    return {"truncated": True, "preview": text[: MAX_DETAILS // 2]}


def subject_line(payload: Mapping[str, Any]) -> str:
    """One line, e.g. `[provisor] CRITICAL backup.failed shop db.1 (opened)`."""
    alert = payload.get("alert", {})
    parts = [
        "[provisor]",
        str(alert.get("severity", "")).upper(),
        alert.get("kind", ""),
        alert.get("deployment") or "",
        alert.get("machine") or alert.get("node") or "",
        f"({payload.get('message', '')})",
    ]
    return one_line(" ".join(p for p in parts if p), 200)


def text_body(payload: Mapping[str, Any]) -> str:
    """The plain-text notification: the alert's fields, then the event's."""
    alert = payload.get("alert", {})
    event = payload.get("event", {})
    lines = [subject_line(payload), ""]
    for key in (
        "id",
        "rule",
        "state",
        "severity",
        "kind",
        "subject",
        "deployment",
        "node",
        "machine",
        "key",
        "opened_at",
        "events",
    ):
        value = alert.get(key)
        if value not in (None, ""):
            lines.append(f"{key}: {one_line(value, 500)}")
    if event:
        lines += [
            "",
            f"event {event.get('id')} at {event.get('time')}: {event.get('kind')} "
            f"{one_line(event.get('subject', ''))} ({event.get('outcome')})",
        ]
        lines.append(json.dumps(event.get("details", {}), indent=2, sort_keys=True)[:MAX_DETAILS])
    if payload.get("message") != "resolved":
        lines += ["", f"acknowledge: provisor alerts ack {alert.get('id')}"]
    return "\n".join(lines) + "\n"


__all__ = [
    "MESSAGES",
    "NOTIFIER_KINDS",
    "SECRETS",
    "SEVERITIES",
    "Facts",
    "RuleSpec",
    "alert_key",
    "at_least",
    "bounded_details",
    "check_notifier",
    "check_pattern",
    "check_severity",
    "check_url",
    "kind_matches",
    "one_line",
    "severity_of",
    "subject_line",
    "text_body",
]
