"""Routes for deployments: request one from the catalog, follow it, decide, remove it.

Included by the application under `/api/v1`. A request names a blueprint stored in the
tenant's catalog (`/blueprints`) and gives its parameters as values: nothing names a
file. Secret parameters are sealed before they are stored and shown as `******`.
A worker is started when none runs, so a request (or an approval) moves on by itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from provisor.api.auth import Ctx
from provisor.core.errors import InvalidInput
from provisor.services import deployments, health, workers
from provisor.services.context import Settings
from provisor.services.deployments import DeploymentDetail, DeploymentView, ParametersView
from provisor.services.events import EventView
from provisor.services.health import DeploymentHealthView

router = APIRouter(tags=["deployments"])

_MAX_PARAMETERS = 200  # a blueprint has far fewer; more is a mistake or an attack


class DeploymentRequest(BaseModel):
    blueprint: str = Field(description="name of a blueprint in the tenant's catalog")
    version: str | None = Field(default=None, description="its version; default: the newest")
    name: str | None = Field(default=None, description="the deployment's name (unique)")
    parameters: dict[str, SecretStr] = Field(
        default_factory=dict, description="the blueprint's parameters, as text values"
    )
    completion: str | None = Field(default=None, description="fills '#' in hostnames")
    provider: str | None = Field(default=None, description="default: the blueprint's, or local")
    lease: str | None = Field(
        default=None,
        max_length=40,
        description="lifetime from its start: 30d, 12h, 90s, or none; default: the blueprint's",
    )
    at: str | None = Field(
        default=None,
        max_length=64,
        description="start later: an ISO time (UTC unless it names a zone) or a duration from now",
    )
    lease_end: str | None = Field(
        default=None, max_length=16, description="stop or terminate; default: the blueprint's"
    )


class Decision(BaseModel):
    reason: str | None = Field(default=None, max_length=2000, description="why (to reject)")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/deployments", response_model=DeploymentView, status_code=202)
def request_deployment(ctx: Ctx, request: Request, body: DeploymentRequest) -> DeploymentView:
    """Request a deployment of a stored blueprint; it runs (or waits for approval)."""
    if len(body.parameters) > _MAX_PARAMETERS:
        raise InvalidInput(f"at most {_MAX_PARAMETERS} parameters", field="parameters")
    settings = _settings(request)
    view = deployments.request_from_catalog(
        ctx,
        settings,
        body.blueprint,
        version=body.version,
        parameters={k: v.get_secret_value() for k, v in body.parameters.items()},
        name=body.name,
        completion=body.completion,
        provider=body.provider,
        lease=body.lease,
        at=body.at,
        lease_end=body.lease_end,
    )
    workers.ensure_worker(settings)
    return view


@router.get("/deployments", response_model=list[DeploymentView])
def list_deployments(ctx: Ctx) -> list[DeploymentView]:
    """The tenant's deployments (a requester's own only)."""
    return deployments.list_deployments(ctx)


@router.get("/deployments/{name}", response_model=DeploymentView)
def get_deployment(ctx: Ctx, name: str) -> DeploymentView:
    """Machines, state, current step and outputs."""
    return deployments.get_deployment(ctx, name)


@router.get("/deployments/{name}/detail", response_model=DeploymentDetail)
def describe_deployment(ctx: Ctx, name: str) -> DeploymentDetail:
    """The whole picture: the deployment with its tenant, latest events and fleet jobs,
    backups and health (jobs and backups null for a role that may not read them)."""
    return deployments.describe_deployment(ctx, name)


@router.get("/deployments/{name}/health", response_model=DeploymentHealthView)
def get_health(ctx: Ctx, name: str) -> DeploymentHealthView:
    """Each checked machine's health: state, since when, last checks, recent history;
    and what infrastructure is down (its machines' checks paused)."""
    return health.deployment_health(ctx, name)


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(default="*", max_length=64, description="a node with checks; * for all")
    interval: str | None = Field(default=None, max_length=40, description="e.g. 10s")
    timeout: str | None = Field(default=None, max_length=40, description="e.g. 5s")
    failures: int | None = Field(default=None, description="failed rounds before unhealthy")
    successes: int | None = Field(default=None, description="good rounds before healthy")
    checks: bool | None = Field(default=None, description="false: this node is not checked")
    recovery: bool | None = Field(default=None, description="false: no recovery ladder")
    reset: bool = Field(default=False, description="drop the node's earlier settings first")


@router.put("/deployments/{name}/health/settings", response_model=DeploymentHealthView)
def set_health(ctx: Ctx, name: str, body: HealthSettings) -> DeploymentHealthView:
    """This deployment's own settings of its checks, over its blueprint's."""
    settings = body.model_dump(exclude={"node", "reset"}, exclude_none=True)
    return health.set_override(ctx, name, body.node, settings, reset=body.reset)


@router.get("/deployments/{name}/parameters", response_model=ParametersView)
def parameters(ctx: Ctx, name: str) -> ParametersView:
    """Runtime parameters the machines published, and who waits on what."""
    return deployments.parameters(ctx, name)


@router.get("/deployments/{name}/events", response_model=list[EventView])
def events(
    ctx: Ctx, name: str, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[EventView]:
    """What happened to the deployment, oldest first."""
    return deployments.deployment_events(ctx, name, limit=limit)


@router.post("/deployments/{name}/approve", response_model=DeploymentView)
def approve(ctx: Ctx, request: Request, name: str) -> DeploymentView:
    """Let a deployment that waits for approval go ahead (approver, admin)."""
    settings = _settings(request)
    view = deployments.decide(ctx, settings, name, approved=True)
    workers.ensure_worker(settings)
    return view


@router.post("/deployments/{name}/reject", response_model=DeploymentView)
def reject(ctx: Ctx, request: Request, name: str, body: Decision) -> DeploymentView:
    """Refuse a deployment that waits for approval; `reason` is required."""
    settings = _settings(request)
    view = deployments.decide(ctx, settings, name, approved=False, reason=body.reason)
    workers.ensure_worker(settings)
    return view


@router.delete("/deployments/{name}", response_model=DeploymentView)
async def remove_deployment(ctx: Ctx, request: Request, name: str) -> DeploymentView:
    """Terminate every machine of the deployment and forget it (its owner, an operator)."""
    return await deployments.remove_deployment(ctx, _settings(request), name)


@router.get(
    "/deployments/{name}/reports/{machine}",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
)
def report(ctx: Ctx, name: str, machine: str) -> Response:
    """A machine's report: its scripts' output and console log, as a `.tar.gz`."""
    data = deployments.report(ctx, name, machine)
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{machine}.tar.gz"'},
    )
