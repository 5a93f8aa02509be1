"""`config set-password`: one user's password changed on every host of a target, as an
apply of a `user` resource (so it has snapshots and a rollback), with the new passwords
kept sealed for the operators allowed to read them and shown nowhere else."""

from __future__ import annotations

import asyncio
import secrets as random
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import delete, insert, select, update

from provisor.core.access import Action
from provisor.core.changes.model import Resource, UserResource
from provisor.core.errors import InvalidInput, NotFound
from provisor.core.masking import Masker
from provisor.core.rollout import Rollout
from provisor.services.changes import (
    ConfigOptions,
    ResultCallback,
    StartCallback,
    apply_resources,
)
from provisor.services.context import Context, audited
from provisor.services.jobs import JobRunner, JobView
from provisor.services.results import HostResult
from provisor.services.schemas import validate
from provisor.services.targets import resolve_target
from provisor.store.passwords import HostPassword

MIN_LENGTH = 12
GENERATED_BYTES = 18  # 24 characters of URL-safe base64: 144 bits


class PasswordView(BaseModel):
    host: str
    user: str
    password: str
    state: str  # current, or pending: the job that set it did not finish
    job: int | None
    set_at: datetime
    set_by: str


def check_password(password: str) -> None:
    """A password given to `--same`: long enough, one line, nothing chpasswd splits on."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"the password has {len(password)} characters; give at least {MIN_LENGTH}",
            field="password",
        )
    if any(c in password for c in "\n\r\0:") or not password.isprintable():
        raise InvalidInput(
            "the password may not hold ':', line breaks or control characters",
            field="password",
        )


def _hash(password: str) -> str:
    import passlib.hash  # type: ignore[import-untyped]  # libpass: only for this command

    # 5000 rounds: glibc's and libxcrypt's default for $6$, so every host checks it as fast
    # as its own hashes; a thousand hosts' hashes take seconds, not minutes.
    return str(passlib.hash.sha512_crypt.using(rounds=5000).hash(password))


async def set_password(
    ctx: Context,
    user: str,
    target: str,
    *,
    same: str | None = None,
    options: ConfigOptions | None = None,
    rollout: Rollout | None = None,
    runner: JobRunner | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> JobView:
    """Give `user` (who must exist) a new password on every host of `target`: `same` on
    all of them, or a random one per host. Every password is stored, sealed, before any
    host is changed; those a host did not take are forgotten afterwards."""
    options = options or ConfigOptions()
    ctx.require(Action.config_apply, target)
    if same is not None:
        check_password(same)
    probe = validate(UserResource, {"type": "user", "name": user})  # checked like a resource
    endpoints = await asyncio.to_thread(
        resolve_target, ctx, target, user=options.user, identity=options.identity
    )
    passwords = {
        e.name: same if same is not None else random.token_urlsafe(GENERATED_BYTES)
        for e in endpoints
    }
    hashes = {name: await asyncio.to_thread(_hash, pw) for name, pw in passwords.items()}
    per_host: dict[str, list[Resource]] = {
        name: [probe.model_copy(update={"password_hash": hashes[name], "create": False})]
        for name in passwords
    }
    results: list[HostResult] = []
    pending: list[int] = []

    def started(job: JobView) -> None:
        pending.append(job.id)
        _record_pending(ctx, job.id, user, passwords)
        if on_start is not None:
            on_start(job)

    def heard(result: HostResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    job = await apply_resources(
        ctx,
        "apply",
        per_host,
        target,
        endpoints,
        label=f"set-password {user}",
        action=Action.config_apply,
        options=options,
        rollout=rollout,
        runner=runner,
        secrets=Masker.of(*passwords.values(), *hashes.values()),
        parameters={"set_password": user},
        on_start=started,
        on_result=heard,
    )
    await asyncio.to_thread(
        _settle, ctx, job.id, user, [r.host for r in results if r.ok and r.details.get("changes")]
    )
    return job


def _record_pending(ctx: Context, job_id: int, user: str, passwords: dict[str, str]) -> None:
    from provisor.orchestrator.secrets import seal

    if not passwords:
        return
    with ctx.store.session() as session:
        session.execute(
            insert(HostPassword),
            [
                {
                    "tenant_id": ctx.tenant_id(),
                    "host": host,
                    "user": user,
                    "job_id": job_id,
                    "state": "pending",
                    "password": seal(ctx.home, password),
                    "set_by": ctx.actor,
                }
                for host, password in passwords.items()
            ],
        )


def _settle(ctx: Context, job_id: int, user: str, took: Sequence[str]) -> None:
    """The hosts that took their password have it as `current` (the earlier ones
    `replaced`); the others' are forgotten: they kept the password they had."""
    tenant_id = ctx.tenant_id()
    with ctx.store.session() as session:
        for start in range(0, len(took), 500):
            chunk = list(took[start : start + 500])
            session.execute(
                update(HostPassword)
                .where(
                    HostPassword.tenant_id == tenant_id,
                    HostPassword.user == user,
                    HostPassword.host.in_(chunk),
                    HostPassword.state == "current",
                )
                .values(state="replaced")
            )
            session.execute(
                update(HostPassword)
                .where(HostPassword.job_id == job_id, HostPassword.host.in_(chunk))
                .values(state="current")
            )
        session.execute(
            delete(HostPassword).where(
                HostPassword.job_id == job_id, HostPassword.state == "pending"
            )
        )


def get_password(ctx: Context, host: str, user: str) -> list[PasswordView]:
    """The password set-password gave `user` on `host` (and any a job left pending).
    Reading one is an audited event."""
    from provisor.orchestrator.secrets import unseal

    ctx.require(Action.passwords_read, host)
    with audited(ctx, "password.read", f"{user}@{host}") as (session, audit):
        rows = session.scalars(
            select(HostPassword)
            .where(
                HostPassword.tenant_id == ctx.tenant_id(),
                HostPassword.host == host,
                HostPassword.user == user,
                HostPassword.state.in_(("current", "pending")),
            )
            .order_by(HostPassword.id.desc())
        ).all()
        if not rows:
            raise NotFound(f"no password set by provisor for {user} on {host}", field="host")
        audit.details = {"host": host, "user": user, "found": len(rows)}
        return [
            PasswordView(
                host=row.host,
                user=row.user,
                password=unseal(ctx.home, row.password),
                state=row.state,
                job=row.job_id,
                set_at=row.set_at,
                set_by=row.set_by,
            )
            for row in rows
        ]
