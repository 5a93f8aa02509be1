"""Fleet configuration changes over HTTP: plan, check, apply, roll back (each a job,
followed at /jobs/{id}/events) and a host's history. A change set arrives as text in
the request; nothing in it is read from the server's files."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from provisor.api.auth import Ctx, Id
from provisor.api.jobs import Server
from provisor.core.rollout import Amount, Rollout
from provisor.services import changes, passwords
from provisor.services.changes import MAX_CHANGE_SET, ConfigOptions, HistoryEntry
from provisor.services.jobs import JobView
from provisor.services.passwords import PasswordView

router = APIRouter(tags=["config"])


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parallel: int = Field(default=64, ge=1, le=10_000, description="hosts worked on at once")
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)
    timeout: float = Field(default=600.0, gt=0, le=24 * 3600, description="seconds per host")
    user: str | None = Field(default=None, max_length=64, description="login user")

    def options(self) -> ConfigOptions:
        return ConfigOptions(
            parallel=self.parallel,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            user=self.user,
        )


class ConfigRequest(_Options):
    change_set: str = Field(max_length=MAX_CHANGE_SET, description="the change set (YAML)")
    name: str = Field(
        default="change set", max_length=200, description="what error messages call it"
    )
    target: str = Field(min_length=1, max_length=10_000)


class ApplyRequest(ConfigRequest):
    batch: str | None = Field(default=None, max_length=8, description="N or N% per stage")
    canary: int = Field(default=0, ge=0, le=10_000)
    max_failures: str | None = Field(default=None, max_length=8, description="N or N%")

    def rollout(self) -> Rollout:
        return Rollout(
            batch=Amount.parse(self.batch, "batch") if self.batch is not None else None,
            canary=self.canary,
            max_failures=Amount.parse(self.max_failures, "max_failures")
            if self.max_failures is not None
            else None,
        )


class RollbackRequest(_Options):
    target: str | None = Field(default=None, min_length=1, max_length=10_000)


@router.post("/config/plan", response_model=JobView, status_code=202)
async def plan(ctx: Ctx, server: Server, body: ConfigRequest) -> JobView:
    """What applying the change set would change on each host (a job)."""
    return await _start(ctx, server, "plan", body)


@router.post("/config/check", response_model=JobView, status_code=202)
async def check(ctx: Ctx, server: Server, body: ConfigRequest) -> JobView:
    """Which hosts deviate from the change set, and how (a job; changes nothing)."""
    return await _start(ctx, server, "check", body)


async def _start(
    ctx: Ctx, server: Server, mode: Literal["plan", "check"], body: ConfigRequest
) -> JobView:
    return await server.launch(
        ctx,
        lambda on_start, on_result: changes.run_config(
            ctx,
            mode,
            body.change_set,
            body.name,
            body.target,
            options=body.options(),
            runner=server.runner,
            on_start=on_start,
            on_result=on_result,
        ),
    )


@router.post("/config/apply", response_model=JobView, status_code=202)
async def apply(ctx: Ctx, server: Server, body: ApplyRequest) -> JobView:
    """Apply the change set (a job whose id is the apply's id)."""
    rollout = body.rollout()
    return await server.launch(
        ctx,
        lambda on_start, on_result: changes.run_config(
            ctx,
            "apply",
            body.change_set,
            body.name,
            body.target,
            options=body.options(),
            rollout=rollout,
            runner=server.runner,
            on_start=on_start,
            on_result=on_result,
        ),
    )


@router.post("/config/applies/{apply_id}/rollback", response_model=JobView, status_code=202)
async def rollback(ctx: Ctx, server: Server, apply_id: Id, body: RollbackRequest) -> JobView:
    """Write back what the apply changed, on its hosts (of `target`, if given)."""
    return await server.launch(
        ctx,
        lambda on_start, on_result: changes.rollback_apply(
            ctx,
            apply_id,
            body.target,
            options=body.options(),
            runner=server.runner,
            on_start=on_start,
            on_result=on_result,
        ),
    )


@router.get("/config/history/{host}", response_model=list[HistoryEntry])
def history(
    ctx: Ctx, host: Annotated[str, Path(min_length=1, max_length=300)]
) -> list[HistoryEntry]:
    """The configuration jobs that worked on a host, newest first."""
    return changes.change_history(ctx, host)


class SetPasswordRequest(_Options):
    user: str = Field(min_length=1, max_length=128, description="whose password (must exist)")
    target: str = Field(min_length=1, max_length=10_000)
    same: str | None = Field(
        default=None,
        max_length=512,
        description="one password for every host; none: a random one per host",
    )
    batch: str | None = Field(default=None, max_length=8, description="N or N% per stage")
    max_failures: str | None = Field(default=None, max_length=8, description="N or N%")


@router.post("/config/set-password", response_model=JobView, status_code=202)
async def set_password(ctx: Ctx, server: Server, body: SetPasswordRequest) -> JobView:
    """Change a user's password on every host of the target (a job; roll back like an
    apply). The passwords are stored sealed: GET /config/passwords/{host}."""
    rollout = Rollout(
        batch=Amount.parse(body.batch, "batch") if body.batch is not None else None,
        max_failures=Amount.parse(body.max_failures, "max_failures")
        if body.max_failures is not None
        else None,
    )
    return await server.launch(
        ctx,
        lambda on_start, on_result: passwords.set_password(
            ctx,
            body.user,
            body.target,
            same=body.same,
            options=body.options(),
            rollout=rollout,
            runner=server.runner,
            on_start=on_start,
            on_result=on_result,
        ),
    )


@router.get("/config/passwords/{host}", response_model=list[PasswordView])
def get_password(
    ctx: Ctx,
    host: Annotated[str, Path(min_length=1, max_length=300)],
    user: Annotated[str, Query(min_length=1, max_length=128)],
) -> list[PasswordView]:
    """The password set-password gave `user` on `host` (admins; an audited event)."""
    return passwords.get_password(ctx, host, user)
