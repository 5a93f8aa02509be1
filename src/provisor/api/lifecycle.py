"""Routes that stop and start a deployment, and extend its lease.

Included by the application under `/api/v1`. The change is made at once (409 naming the
state when it is not allowed); the server's worker does the work, so the answer is 202
with the deployment `stopping` or `starting`: follow it with `GET /deployments/{name}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from provisor.api.auth import Ctx
from provisor.services import lifecycle, workers
from provisor.services.context import Settings
from provisor.services.deployments import DeploymentView

router = APIRouter(tags=["deployments"])


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/deployments/{name}/stop", response_model=DeploymentView, status_code=202)
def stop(ctx: Ctx, request: Request, name: str) -> DeploymentView:
    """Power the machines off, their disks, addresses and hosts kept (owner, operator)."""
    settings = _settings(request)
    view = lifecycle.stop_deployment(ctx, settings, name)
    workers.ensure_worker(settings)
    return view


@router.post("/deployments/{name}/start", response_model=DeploymentView, status_code=202)
def start(ctx: Ctx, request: Request, name: str) -> DeploymentView:
    """Power a stopped deployment's machines on; `ready` once SSH answers (owner, operator)."""
    settings = _settings(request)
    view = lifecycle.start_deployment(ctx, settings, name)
    workers.ensure_worker(settings)
    return view


class LeaseChange(BaseModel):
    by: str | None = Field(
        default=None, max_length=40, description="end this much later (after its end): 7d"
    )
    until: str | None = Field(
        default=None,
        max_length=64,
        description="end at this time: ISO (UTC unless it names a zone), or 3d from now",
    )


@router.post("/deployments/{name}/lease", response_model=DeploymentView)
def extend_lease(ctx: Ctx, request: Request, name: str, body: LeaseChange) -> DeploymentView:
    """Move the end of the deployment's lease: give one of `by` or `until` (owner, operator)."""
    view = lifecycle.extend_lease(ctx, name, by=body.by, until=body.until)
    workers.ensure_worker(_settings(request))  # its lease tick acts on the new end
    return view
