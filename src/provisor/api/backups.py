"""Routes for backups and backup stores: take, list, show, verify, restore, delete;
per-deployment schedules; configure the stores.

Included by the application under `/api/v1`. Everything is the caller's tenant's: another
tenant's backup answers 404. A store's secret access key is accepted when the store is
added, stored sealed, and never returned. A remote caller cannot add a `directory`
store (it would name a path on the server).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from provisor.api.auth import Ctx
from provisor.services import backup_stores, backups, workers
from provisor.services.backup_stores import StoreView
from provisor.services.backups import BackupView, RestoreView, VerifiedView
from provisor.services.context import Settings

router = APIRouter(tags=["backups"])

_NAME = 128


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackupRequest(_Body):
    machines: list[Annotated[str, Field(max_length=_NAME)]] = Field(
        default_factory=list, max_length=2000, description="default: every machine"
    )
    store: str | None = Field(default=None, max_length=64, description="default: the policy's")


class Started(BaseModel):
    workflows: list[str] = Field(description="one durable workflow per machine")


class VerifyRequest(_Body):
    deployment: str | None = Field(default=None, max_length=_NAME)
    backup: str | None = Field(default=None, max_length=64)


class RestoreRequest(_Body):
    backup: str | None = Field(default=None, max_length=64, description="default: newest good")
    in_place: bool = Field(default=False, description="roll the machine itself back")


class ScheduleRequest(_Body):
    schedule: str = Field(max_length=200, description="cron (UTC), 'off' or 'blueprint'")


class StoreRequest(_Body):
    name: str = Field(max_length=64)
    kind: str = Field(max_length=32, description="s3")
    settings: dict[str, Any] = Field(default_factory=dict, description="s3: bucket, endpoint...")
    secret_access_key: SecretStr | None = Field(default=None, max_length=1024)


class CheckView(BaseModel):
    name: str
    description: str
    seconds: float


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/deployments/{name}/backups", response_model=Started, status_code=202)
def take_backups(ctx: Ctx, request: Request, name: str, body: BackupRequest) -> Started:
    """Back up the deployment's machines now; `GET /backups` follows them."""
    settings = _settings(request)
    started = backups.start_backups(ctx, settings, name, body.machines or None, store=body.store)
    workers.ensure_worker(settings)
    return Started(workflows=started)


@router.get("/backups", response_model=list[BackupView])
def list_backups(
    ctx: Ctx,
    deployment: Annotated[str | None, Query(max_length=_NAME)] = None,
    machine: Annotated[str | None, Query(max_length=_NAME)] = None,
) -> list[BackupView]:
    return backups.list_backups(ctx, deployment, machine)


@router.get("/backups/{backup}", response_model=BackupView)
def get_backup(ctx: Ctx, backup: str) -> BackupView:
    return backups.get_backup(ctx, backup)


@router.post("/backups/verify", response_model=list[VerifiedView])
def verify(ctx: Ctx, body: VerifyRequest) -> list[VerifiedView]:
    """Read back and hash stored copies; bad ones are marked and never used."""
    return backups.verify(ctx, deployment=body.deployment, backup_id=body.backup)


@router.delete("/backups/{backup}", status_code=204)
async def delete_backup(ctx: Ctx, backup: str) -> Response:
    await backups.delete(ctx, backup)
    return Response(status_code=204)


@router.post("/deployments/{name}/machines/{machine}/restore", response_model=RestoreView)
async def restore(
    ctx: Ctx, request: Request, name: str, machine: str, body: RestoreRequest
) -> RestoreView:
    """Restore a machine from a backup (falls back past a bad copy and says so)."""
    return await backups.restore(
        ctx, _settings(request), name, machine, backup_id=body.backup, in_place=body.in_place
    )


@router.put("/deployments/{name}/backup-schedules/{node}")
def set_schedule(ctx: Ctx, name: str, node: str, body: ScheduleRequest) -> dict[str, str]:
    return {"node": node, "schedule": backups.set_schedule(ctx, name, node, body.schedule)}


@router.get("/backup-stores", response_model=list[StoreView])
def list_stores(ctx: Ctx) -> list[StoreView]:
    return backup_stores.list_stores(ctx)


@router.post("/backup-stores", response_model=StoreView, status_code=201)
def add_store(ctx: Ctx, body: StoreRequest) -> StoreView:
    secret = body.secret_access_key.get_secret_value() if body.secret_access_key else None
    return backup_stores.add_store(ctx, body.name, body.kind, body.settings, secret)


@router.delete("/backup-stores/{name}", status_code=204)
def remove_store(ctx: Ctx, name: str) -> Response:
    backup_stores.remove_store(ctx, name)
    return Response(status_code=204)


@router.post("/backup-stores/{name}/check", response_model=CheckView)
async def check_store(ctx: Ctx, name: str) -> CheckView:
    started = time.monotonic()
    description = await backup_stores.check_store(ctx, name)
    return CheckView(
        name=name, description=description, seconds=round(time.monotonic() - started, 3)
    )
