"""Alerts end to end from the CLI, against real receivers on 127.0.0.1: rules over events
raise one alert per incident, notifiers deliver it (log, webhook, email, command),
reminders while it lasts, a resolution when it ends, retries, and a dispatcher killed
between recording and sending a notification sends it exactly once."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from alert_receivers import emit, smtp_server, webhook_receiver
from provisor.orchestrator.secrets import server_tls
from provisor.testing import crash
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


# --- email --------------------------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-pass-7d1e0b"


def _email_notifier(provisor: Provisor, port: int, *extra: str) -> None:
    provisor(
        "notifiers", "add", "mail", "--type", "email", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(port), "--security", "none", "--username", SMTP_USER,
        "--from", "provisor@example.com", "--to", "ops@example.com", *extra,
        env={"PROVISOR_NOTIFIER_SECRET": SMTP_PASSWORD},
    )  # fmt: skip
    provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "mail")


def test_email_through_a_real_smtp_server_then_ack(provisor: Provisor) -> None:
    with smtp_server(credentials=(SMTP_USER, SMTP_PASSWORD)) as smtp:
        _email_notifier(provisor, smtp.port)
        _failed_backup(provisor.home, 3, error="pg_dump: connection refused")
        provisor("alerts", "dispatch", "--once")
        (mail,) = smtp.wait_for(1)
        subject = str(mail["Subject"])
        assert "backup.failed" in subject and "shop" in subject and "db.1" in subject
        assert "CRITICAL" in subject and "(opened)" in subject
        body = mail.get_payload(decode=True)
        assert isinstance(body, bytes)
        text = body.decode()
        assert "deployment: shop" in text and "machine: db.1" in text
        assert "pg_dump: connection refused" in text
        assert smtp.inbox.logins == [(SMTP_USER, SMTP_PASSWORD)]
        assert all(SMTP_PASSWORD.encode() not in raw for raw in smtp.inbox.raw)
        (alert,) = _alerts(provisor)
        acked = provisor("alerts", "ack", str(alert["id"]))
        assert f"alert {alert['id']} acknowledged" in acked.stdout
        (alert,) = _alerts(provisor)
        assert alert["acked_by"] and alert["state"] == "open"  # acked: still open
        _resolved_backup(provisor.home)
        provisor("alerts", "dispatch", "--once")
        assert "(resolved)" in str(smtp.wait_for(2)[1]["Subject"])
        events = provisor("events", "--limit", "1000", "--output", "json").stdout
        assert SMTP_PASSWORD not in events


def test_email_retried_while_the_smtp_server_is_down_then_sent(provisor: Provisor) -> None:
    with smtp_server(started=False) as smtp:
        provisor(
            "notifiers", "add", "mail", "--type", "email", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(smtp.port), "--security", "none",
            "--from", "provisor@example.com", "--to", "ops@example.com", "--timeout", "5",
        )  # fmt: skip
        provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "mail")
        _failed_backup(provisor.home)
        retry_now = {"PROVISOR_ALERT_RETRY_SECONDS": "0"}  # the backoff, made nil
        for _attempt in (1, 2):
            down = provisor("alerts", "dispatch", "--once", check=False, env=retry_now)
            assert down.returncode == 1 and "1 failed" in down.stdout
            assert "not sent" in down.stderr and "mail" in down.stderr
        failures = json.loads(
            provisor("events", "--kind", "alert.delivery_failed", "--output", "json").stdout
        )
        assert [f["details"]["attempt"] for f in failures] == [1, 2]
        assert all(f["kind"] == "alert.delivery_failed" for f in failures)
        assert failures[0]["details"]["notifier"] == "mail"
        assert failures[0]["details"]["gave_up"] is False
        (alert,) = _alerts(provisor)  # the failures raised no alert of their own
        assert alert["deliveries"] == {"pending": 1}
        smtp.start()
        up = provisor("alerts", "dispatch", "--once", env=retry_now)
        assert "1 notification(s) sent" in up.stdout
        assert len(smtp.wait_for(1)) == 1
        provisor("alerts", "dispatch", "--once", env=retry_now)
        assert len(smtp.inbox.messages) == 1
        (alert,) = _alerts(provisor)
        assert alert["deliveries"] == {"sent": 1}


def test_no_header_injection_and_oversized_details_are_cut(provisor: Provisor) -> None:
    with smtp_server() as smtp:
        provisor(
            "notifiers", "add", "mail", "--type", "email", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(smtp.port), "--security", "none",
            "--from", "provisor@example.com", "--to", "ops@example.com",
        )  # fmt: skip
        provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "mail")
        emit(
            provisor.home,
            "backup.failed",
            "shop/db.1\r\nBcc: victim@example.com",
            outcome="failed",
            deployment="shop\r\nX-Injected: 1",
            machine="db.1\nBcc: victim@example.com",
            output="x" * 200_000,
        )
        provisor("alerts", "dispatch", "--once")
        (mail,) = smtp.wait_for(1)
        assert mail["Bcc"] is None and mail["X-Injected"] is None
        assert "db.1 Bcc: victim@example.com" in " ".join(str(mail["Subject"]).split())
        assert len(smtp.inbox.raw[0]) < 60_000  # 200 kB of details cut to a bounded preview
        assert b"truncated" in smtp.inbox.raw[0]


# --- command ------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o700)
    return script


def test_command_gets_the_alert_on_stdin_and_in_its_environment(
    provisor: Provisor, tmp_path: Path
) -> None:
    received, environment = tmp_path / "stdin.json", tmp_path / "env.txt"
    script = _script(tmp_path, 'cat > "$1"\nenv > "$2"\n')
    provisor("notifiers", "add", "sms", "--type", "command", "--command", str(script),
             "--arg", str(received), "--arg", str(environment))  # fmt: skip
    provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "sms")
    _failed_backup(provisor.home)
    provisor("alerts", "dispatch", "--once")
    alert = json.loads(received.read_text())
    assert alert["message"] == "opened" and alert["alert"]["machine"] == "db.1"
    env = dict(line.split("=", 1) for line in environment.read_text().splitlines() if "=" in line)
    assert env["PROVISOR_ALERT_KIND"] == "backup.failed"
    assert env["PROVISOR_ALERT_DEPLOYMENT"] == "shop"
    assert env["PROVISOR_ALERT_MACHINE"] == "db.1"
    assert env["PROVISOR_ALERT_SEVERITY"] == "critical"
    assert "PROVISOR_HOME" not in env  # none of the controller's settings


def test_a_failing_or_hanging_command_is_a_failed_delivery(
    provisor: Provisor, tmp_path: Path
) -> None:
    failing = _script(tmp_path, 'echo "gateway said no" >&2\nexit 3\n')
    hanging = tmp_path / "hang.sh"
    hanging.write_text("#!/bin/sh\nsleep 600\n")
    hanging.chmod(0o700)
    provisor("notifiers", "add", "fails", "--type", "command", "--command", str(failing))
    provisor("notifiers", "add", "hangs", "--type", "command", "--command", str(hanging),
             "--timeout", "1")  # fmt: skip
    provisor("alerts", "rules", "add", "r", "--kind", "backup.*", "--notify", "fails",
             "--notify", "hangs")  # fmt: skip
    _failed_backup(provisor.home)
    run = provisor("alerts", "dispatch", "--once", check=False)
    assert run.returncode == 1 and "2 failed" in run.stdout
    assert "exited with status 3: gateway said no" in run.stderr
    assert "did not finish within 1 s" in run.stderr


# --- a dispatcher killed between recording and sending -------------------------------------


def test_a_dispatcher_killed_before_sending_sends_once_on_restart(provisor: Provisor) -> None:
    with webhook_receiver() as hook:
        provisor("notifiers", "add", "hook", "--type", "webhook", "--url", hook.url,
                 env=SECRET_ENV)  # fmt: skip
        provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "hook")
        _failed_backup(provisor.home)
        killed = provisor(
            "alerts", "dispatch", "--once", check=False, env=crash.environment("alert-send:1")
        )
        assert killed.returncode == -signal.SIGKILL
        assert hook.received == []
        (alert,) = _alerts(provisor)  # recorded before the kill
        assert alert["deliveries"] == {"pending": 1}
        provisor("alerts", "dispatch", "--once")  # the lease of the dead one is taken over
        provisor("alerts", "dispatch", "--once")
        assert len(hook.wait_for(1)) == 1
        assert len(hook.received) == 1
        (alert,) = _alerts(provisor)
        assert alert["deliveries"] == {"sent": 1}


# --- the worker dispatches; testing a notifier; hostile input ------------------------------


def test_the_worker_dispatches_in_the_background(provisor: Provisor) -> None:
    with webhook_receiver() as hook:
        provisor("notifiers", "add", "hook", "--type", "webhook", "--url", hook.url,
                 env=SECRET_ENV)  # fmt: skip
        provisor("alerts", "rules", "add", "backups", "--kind", "backup.*", "--notify", "hook")
        worker = subprocess.Popen(
            provisor.command("worker"),
            env={**provisor.env, "PROVISOR_ALERT_POLL_SECONDS": "0.3"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _failed_backup(provisor.home)
            assert len(hook.wait_for(1, timeout=120)) == 1
            _resolved_backup(provisor.home)
            assert len(hook.wait_for(2, timeout=120)) == 2
        finally:
            worker.terminate()
            _, errors = worker.communicate(timeout=60)
        assert "Traceback" not in errors
        assert [_verify(r)["message"] for r in hook.received] == ["opened", "resolved"]


def test_notifiers_test_sends_now_and_says_why_not(provisor: Provisor) -> None:
    with webhook_receiver() as hook:
        provisor("notifiers", "add", "hook", "--type", "webhook", "--url", hook.url,
                 env=SECRET_ENV)  # fmt: skip
        sent = provisor("notifiers", "test", "hook")
        assert "hook: sent" in sent.stdout
        assert _verify(hook.wait_for(1)[0])["message"] == "test"
        hook.status = 500
        refused = provisor("notifiers", "test", "hook", check=False)
        assert refused.returncode == 1 and "answered HTTP 500" in refused.stderr
        tested = json.loads(
            provisor("events", "--kind", "notifier.tested", "--output", "json").stdout
        )
        assert [e["outcome"] for e in tested] == ["ok", "failed"]
        _nothing_secret(provisor, sent.stdout, refused.stderr)


def test_the_cli_refuses_bad_input_and_says_where(provisor: Provisor) -> None:
    provisor("notifiers", "add", "j", "--type", "log")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--type", "webhook", "--url", "file:///etc/passwd"], SECRET_ENV, "only http://"),
        (["--type", "webhook", "--url", "http://u:p@127.0.0.1/"], SECRET_ENV, "credentials"),
        (["--type", "webhook", "--url", "http://127.0.0.1/"], {}, "PROVISOR_NOTIFIER_SECRET"),
        (["--type", "command", "--command", "notify.sh"], {}, "absolute path"),
        (
            [
                "--type",
                "email",
                "--smtp-host",
                "127.0.0.1",
                "--from",
                "a@b.c",
                "--to",
                "x@y.z\nBcc: v@w.x",
            ],
            {},
            "invalid email address",
        ),
        (["--type", "log"], SECRET_ENV, "takes no secret"),
        (["--type", "log", "--timeout", "soon"], {}, "invalid duration"),
    ]
    for args, env, message in cases:
        refused = provisor("notifiers", "add", "n", *args, check=False, env=env)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert message in " ".join(refused.stderr.split()), (args, refused.stderr)
        assert KEY not in refused.stdout + refused.stderr
    for args, message in [
        (["--kind", "backup.*", "--notify", "nobody"], "no notifier named 'nobody'"),
        (["--kind", "Backup Failed", "--notify", "j"], "invalid event kind"),
        (["--kind", "backup.*", "--notify", "j", "--remind-after", "0s"], "remind_after"),
        (["--kind", "backup.*", "--notify", "j", "--severity", "fatal"], "severity"),
    ]:
        refused = provisor("alerts", "rules", "add", "r", *args, check=False)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
    missing = provisor("alerts", "ack", "999", check=False)
    assert missing.returncode == 2 and "no alert 999" in missing.stderr
    assert json.loads(provisor("notifiers", "list", "--output", "json").stdout)[0]["name"] == "j"


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_starttls_and_tls(provisor: Provisor, tmp_path: Path, security: str) -> None:
    """The server's certificate is checked: the CLI trusts it through SSL_CERT_FILE."""
    pem, public, _ = server_tls(tmp_path, ["127.0.0.1"])
    with smtp_server(credentials=(SMTP_USER, SMTP_PASSWORD), tls=security, certificate=pem) as smtp:
        provisor(
            "notifiers", "add", "mail", "--type", "email", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(smtp.port), "--security", security, "--username", SMTP_USER,
            "--from", "provisor@example.com", "--to", "ops@example.com",
            env={"PROVISOR_NOTIFIER_SECRET": SMTP_PASSWORD},
        )  # fmt: skip
        untrusted = provisor("notifiers", "test", "mail", check=False)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        trusted = provisor("notifiers", "test", "mail", env={"SSL_CERT_FILE": str(public)})
        assert "mail: sent" in trusted.stdout
        (mail,) = smtp.wait_for(1)
        assert "(test)" in str(mail["Subject"])
        assert smtp.inbox.logins == [(SMTP_USER, SMTP_PASSWORD)]


def test_a_webhook_over_https_checks_the_certificate(provisor: Provisor, tmp_path: Path) -> None:
    pem, public, _ = server_tls(tmp_path, ["127.0.0.1"])
    with webhook_receiver(certificate=pem) as hook:
        assert hook.url.startswith("https://")
        provisor("notifiers", "add", "hook", "--type", "webhook", "--url", hook.url,
                 env=SECRET_ENV)  # fmt: skip
        untrusted = provisor("notifiers", "test", "hook", check=False)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        provisor("notifiers", "test", "hook", env={"SSL_CERT_FILE": str(public)})
        assert _verify(hook.wait_for(1)[0])["message"] == "test"
