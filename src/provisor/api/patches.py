"""Patching over HTTP: analyze (fill the patch catalog), read the catalog, apply updates.

Analyze and apply run on the server's warm connection pool and answer when the job ends
(its id is in the answer; `GET /jobs/{id}` has every host's result). Everything is the
caller's tenant's: the catalog, the hosts a target selects, the job.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from provisor.api.auth import Ctx
from provisor.api.jobs import Server
from provisor.services import patches
from provisor.services.patches import AnalyzeRequest, ApplyRequest, PatchReport, PatchView

router = APIRouter(tags=["patches"])


@router.post("/patches/analyze", response_model=PatchReport)
async def analyze(ctx: Ctx, server: Server, body: AnalyzeRequest) -> PatchReport:
    """Refresh the hosts' package lists and record what each could upgrade."""
    return await patches.analyze(ctx, body, runner=server.runner)


@router.post("/patches/apply", response_model=PatchReport)
async def apply(ctx: Ctx, server: Server, body: ApplyRequest) -> PatchReport:
    """Upgrade packages (all, the ones named, or security updates), rebooting as asked."""
    return await patches.apply(ctx, body, runner=server.runner)


@router.get("/patches", response_model=list[PatchView])
def list_patches(
    ctx: Ctx,
    target: Annotated[str | None, Query(max_length=10_000)] = None,
    security: bool = False,
) -> list[PatchView]:
    """The patch catalog, as the last analyses found it."""
    return patches.list_patches(ctx, target, security=security)
