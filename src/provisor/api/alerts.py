"""Routes for alerting: notifiers, rules and alerts of the caller's tenant.

Included by the application under `/api/v1`. A notifier's secret is accepted when it
is added and stored sealed; no route ever returns it. `command` notifiers run programs
on the controller: the API refuses them (the local CLI configures them).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from provisor.api.auth import Ctx, Id
from provisor.services import alerts

router = APIRouter(tags=["alerts"])


class NotifierRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="unique in the tenant")
    kind: str = Field(max_length=16, description="log, email or webhook")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="webhook: url, timeout; email: host, port, security, from, to, username",
    )
    secret: SecretStr | None = Field(
        default=None,
        max_length=4096,
        description="the webhook's HMAC key or the SMTP password; stored sealed, never returned",
    )


class RuleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    kinds: list[str] = Field(max_length=20, description="backup.failed, backup.* or *")
    notifiers: list[str] = Field(max_length=10)
    min_severity: str = Field(default="warning", max_length=16)
    deployment: str | None = Field(default=None, max_length=128)
    node: str | None = Field(default=None, max_length=64)
    remind_seconds: float | None = Field(default=None, description="remind this often while open")


class TestView(BaseModel):
    name: str
    seconds: float


@router.get("/notifiers", response_model=list[alerts.NotifierView])
def list_notifiers(ctx: Ctx) -> list[alerts.NotifierView]:
    return alerts.list_notifiers(ctx)


@router.post("/notifiers", response_model=alerts.NotifierView, status_code=201)
def add_notifier(ctx: Ctx, body: NotifierRequest) -> alerts.NotifierView:
    secret = body.secret.get_secret_value() if body.secret else None
    return alerts.add_notifier(ctx, body.name, body.kind, body.settings, secret)


@router.delete("/notifiers/{name}", status_code=204)
def remove_notifier(ctx: Ctx, name: str) -> Response:
    alerts.remove_notifier(ctx, name)
    return Response(status_code=204)


@router.post("/notifiers/{name}/test", response_model=TestView)
async def test_notifier(ctx: Ctx, name: str) -> TestView:
    """Send a test notification now; a failure answers 502 with the reason."""
    return TestView(name=name, seconds=await alerts.send_test(ctx, name))


@router.get("/alert-rules", response_model=list[alerts.RuleView])
def list_rules(ctx: Ctx) -> list[alerts.RuleView]:
    return alerts.list_rules(ctx)


@router.post("/alert-rules", response_model=alerts.RuleView, status_code=201)
def add_rule(ctx: Ctx, body: RuleRequest) -> alerts.RuleView:
    return alerts.add_rule(
        ctx,
        body.name,
        kinds=body.kinds,
        notifiers=body.notifiers,
        min_severity=body.min_severity,
        deployment=body.deployment,
        node=body.node,
        remind_seconds=body.remind_seconds,
    )


@router.delete("/alert-rules/{name}", status_code=204)
def remove_rule(ctx: Ctx, name: str) -> Response:
    alerts.remove_rule(ctx, name)
    return Response(status_code=204)


@router.get("/alerts", response_model=list[alerts.AlertView])
def list_alerts(
    ctx: Ctx,
    include_ended: Annotated[bool, Query(alias="all", description="resolved ones too")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[alerts.AlertView]:
    return alerts.list_alerts(ctx, include_ended=include_ended, limit=limit)


@router.get("/alerts/{alert_id}", response_model=alerts.AlertView)
def get_alert(ctx: Ctx, alert_id: Id) -> alerts.AlertView:
    return alerts.get_alert(ctx, alert_id)


@router.post("/alerts/{alert_id}/ack", response_model=alerts.AlertView)
def ack_alert(ctx: Ctx, alert_id: Id) -> alerts.AlertView:
    """Acknowledge: no more reminders (the resolution is still sent)."""
    return alerts.ack_alert(ctx, alert_id)
