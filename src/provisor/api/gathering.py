"""`POST /hosts/gather`: facts read from the hosts of a target over SSH, kept in the
inventory. It runs on the server's warm connection pool and answers when the job ends
(its id is in the answer; `GET /jobs/{id}` has every host's result). The target selects
the caller's tenant's inventory hosts only."""

from __future__ import annotations

from fastapi import APIRouter

from provisor.api.auth import Ctx
from provisor.api.jobs import Server
from provisor.services import gathering
from provisor.services.gathering import GatherReport, GatherRequest

router = APIRouter(tags=["hosts"])


@router.post("/hosts/gather", response_model=GatherReport)
async def gather(ctx: Ctx, server: Server, body: GatherRequest) -> GatherReport:
    """Gather the hosts' facts (OS, kernel, architecture, CPUs, memory, disks, addresses,
    virtualization); each host that answers gets them replaced."""
    return await gathering.gather(ctx, body, runner=server.runner)
