"""`GET /metrics`: the Prometheus text format, for a token that may read the tenant's
deployments (services/metrics.py says what is shown). Mounted at the server's root,
where Prometheus looks by default; authenticated like every other route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from provisor.api.auth import Ctx
from provisor.services import metrics as service
from provisor.services.context import Settings

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(ctx: Ctx, request: Request) -> Response:
    """Deployments, machines and jobs by state, lease time left, the workflow queue."""
    settings: Settings = request.app.state.settings
    return Response(service.metrics(ctx, settings), media_type=service.CONTENT_TYPE)
