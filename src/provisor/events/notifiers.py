"""Sending one notification through one notifier: log, email, webhook or command.

Each send is bounded in time (the notifier's timeout) and in what it reads back; a
failure is a `DeliveryError` with one line saying why, never the notifier's secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from provisor.core.alerts import one_line, subject_line, text_body
from provisor.core.errors import ProvisorError
from provisor.core.masking import Masker
from provisor.files import append_private

log = logging.getLogger("provisor.alerts")

LOG_FILE = "alerts.log"  # in the data directory: the `log` notifier's lines
MAX_LOG_FILE = 16 * 1024 * 1024  # bytes, then it becomes alerts.log.1
MAX_COMMAND_OUTPUT = 65_536  # bytes of a command's output kept (for the error message)
SIGNATURE_HEADER = "X-Provisor-Signature"
TIMESTAMP_HEADER = "X-Provisor-Timestamp"
DELIVERY_HEADER = "X-Provisor-Delivery"
_BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")  # what a command gets of the controller's


class DeliveryError(ProvisorError):
    """A notification that did not go out; its message says why in one line."""

    status = 502


@dataclass(frozen=True)
class Target:
    """A notifier as a send needs it: its secret in clear, for the send's duration."""

    name: str
    kind: str
    settings: Mapping[str, Any]
    secret: str | None = field(default=None, repr=False)


def signature(key: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 with the webhook's key over `<timestamp>.<body>`
    (the timestamp signed with the body: a replayed old request is recognisable)."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def payload_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, default=str).encode()


async def _log(target: Target, payload: Mapping[str, Any], home: Path) -> None:
    line = payload_bytes(payload) + b"\n"
    path = home / LOG_FILE
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > MAX_LOG_FILE:  # one older file kept: bounded on disk
            os.replace(path, path.with_name(LOG_FILE + ".1"))
    with append_private(path) as handle:
        handle.write(line)
    log.warning("alert: %s", subject_line(payload))


async def _email(target: Target, payload: Mapping[str, Any]) -> None:
    import aiosmtplib

    settings = target.settings
    message = EmailMessage()
    message["Subject"] = subject_line(payload)  # one line: no header injection
    message["From"] = settings["from"]
    message["To"] = ", ".join(settings["to"])
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="provisor")
    message["X-Provisor-Alert"] = str(payload.get("alert", {}).get("id", ""))
    message.set_content(text_body(payload))
    security = settings.get("security", "starttls")
    try:
        await aiosmtplib.send(
            message,
            hostname=settings["host"],
            port=settings["port"],
            use_tls=security == "tls",
            start_tls=security == "starttls",
            username=settings.get("username"),
            password=target.secret,
            timeout=settings.get("timeout", 30),
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(f"SMTP {settings['host']}:{settings['port']}: {_why(exc)}") from None


async def _webhook(target: Target, payload: Mapping[str, Any], delivery: int) -> None:
    import httpx

    body = payload_bytes(payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "provisor-alerts",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(target.secret or "", timestamp, body),
        DELIVERY_HEADER: str(delivery),  # the same on a retry: the receiver can drop doubles
    }
    url = str(target.settings["url"])
    timeout = float(target.settings.get("timeout", 10))
    try:
        async with (
            httpx.AsyncClient(
                timeout=timeout,
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the URL is where it goes
                verify=ssl.create_default_context(),  # the system's CAs, or SSL_CERT_FILE
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code  # the body is not read: nothing to bound
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {url}: {_why(exc)}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"POST {url}: answered HTTP {status}")


async def _bounded_read(stream: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65_536):
        if len(kept) < MAX_COMMAND_OUTPUT:
            kept += chunk[: MAX_COMMAND_OUTPUT - len(kept)]
    return bytes(kept)


def command_env(payload: Mapping[str, Any]) -> dict[str, str]:
    """A command's environment: a few of the controller's variables (never its
    PROVISOR_* settings) and PROVISOR_ALERT_* describing the alert."""
    alert = payload.get("alert", {})
    env = {key: os.environ[key] for key in _BASE_ENV if key in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    fields = {
        "ID": alert.get("id"),
        "MESSAGE": payload.get("message"),
        "STATE": alert.get("state"),
        "SEVERITY": alert.get("severity"),
        "KIND": alert.get("kind"),
        "SUBJECT": alert.get("subject"),
        "DEPLOYMENT": alert.get("deployment"),
        "NODE": alert.get("node"),
        "MACHINE": alert.get("machine"),
        "SUMMARY": subject_line(payload),
    }
    env.update({f"PROVISOR_ALERT_{k}": one_line(v) for k, v in fields.items() if v is not None})
    return env


async def _command(target: Target, payload: Mapping[str, Any]) -> None:
    argv = [str(arg) for arg in target.settings["argv"]]
    timeout = float(target.settings.get("timeout", 30))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=command_env(payload),
            cwd="/",
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as exc:
        raise DeliveryError(f"cannot run {argv[0]}: {_why(exc)}") from None
    assert process.stdin is not None and process.stdout is not None

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(payload_bytes(payload))  # type: ignore[union-attr]
            await process.stdin.drain()  # type: ignore[union-attr]
            process.stdin.close()  # type: ignore[union-attr]

    try:
        _, output, code = await asyncio.wait_for(
            asyncio.gather(feed(), _bounded_read(process.stdout), process.wait()), timeout
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise DeliveryError(f"{argv[0]} did not finish within {timeout:g} s") from None
    if code != 0:
        last = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise DeliveryError(f"{argv[0]} exited with status {code}: {one_line(last[0], 300)}")


def _why(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 500)


async def send(target: Target, payload: Mapping[str, Any], *, home: Path, delivery: int) -> None:
    """Send `payload` through `target`; raises DeliveryError (secret masked) when it fails."""
    try:
        if target.kind == "log":
            await _log(target, payload, home)
        elif target.kind == "email":
            await _email(target, payload)
        elif target.kind == "webhook":
            await _webhook(target, payload, delivery)
        elif target.kind == "command":
            await _command(target, payload)
        else:
            raise DeliveryError(f"unknown notifier type {target.kind!r}")
    except DeliveryError as exc:
        raise DeliveryError(Masker.of(target.secret).text(exc.message)) from None


__all__ = [
    "DELIVERY_HEADER",
    "LOG_FILE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryError",
    "Target",
    "command_env",
    "send",
    "signature",
]
