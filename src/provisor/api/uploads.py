"""Routes for uploads: the files a copy job sends to hosts, given as content.

Included by the application under `/api/v1`. The body is the file itself
(`application/octet-stream`, up to 64 MiB), its name a query parameter; a copy job then
names the upload's id (`uploads`), never a path on the server.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from provisor.api.auth import Ctx
from provisor.services import uploads

router = APIRouter(tags=["uploads"])


@router.post(
    "/uploads",
    response_model=uploads.UploadView,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": False,  # an empty file is a file
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def add_upload(
    ctx: Ctx,
    request: Request,
    name: Annotated[str, Query(max_length=128, description="the file's name on the hosts")],
) -> uploads.UploadView:
    """Keep a file for a day, for copy jobs of the tenant to send (by its id)."""
    data = await request.body()  # bounded: the request guard's limit for this path
    return await asyncio.to_thread(uploads.add_upload, ctx, name, data)


@router.get("/uploads", response_model=list[uploads.UploadView])
def list_uploads(ctx: Ctx) -> list[uploads.UploadView]:
    return uploads.list_uploads(ctx)


@router.delete("/uploads/{upload_id}", status_code=204)
def remove_upload(ctx: Ctx, upload_id: str) -> Response:
    uploads.remove_upload(ctx, upload_id)
    return Response(status_code=204)
