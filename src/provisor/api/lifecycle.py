"""Routes that stop and start a deployment, and extend its lease.

Included by the application under `/api/v1`. The change is made at once (409 naming the
state when it is not allowed); the server's worker does the work, so the answer is 202
with the deployment `stopping` or `starting`: follow it with `GET /deployments/{name}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

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
