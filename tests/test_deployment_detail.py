"""`describe_deployment` on the store (SQLite and PostgreSQL): the history is this
instance's only, a machine's events and refusals are told apart, and what a role may
not read is left out. (`tests/test_cli_overview.py` shows it from a real deployment.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from db_rows import add_deployment
from provisor.core.access import Role
from provisor.core.errors import NotFound
from provisor.events import record_event
from provisor.services import deployments
from provisor.services.context import Context
from provisor.store.orchestration import Deployment


def _event(ctx: Context, kind: str, subject: str, **details: str) -> None:
    with ctx.store.session() as session:
        record_event(
            session, actor="tester", tenant=ctx.tenant, kind=kind, subject=subject, details=details
        )


def _instance(ctx: Context, name: str) -> str:
    with ctx.store.session() as session:
        return session.scalars(select(Deployment.instance).where(Deployment.name == name)).one()


def test_history_is_this_instances_and_leaves_refusals_out(ctx: Context) -> None:
    add_deployment(ctx.store, "shop", machines=[("web", 1)])
    old = _instance(ctx, "shop")
    _event(ctx, "deployment.ready", "shop", instance=old)
    with ctx.store.session() as session:  # that one is removed; a new `shop` follows
        session.execute(update(Deployment).values(name="shop-gone"))
    add_deployment(ctx.store, "shop", machines=[("web", 1)])
    new = _instance(ctx, "shop")
    _event(ctx, "deployment.ready", "shop", instance=old)  # late, of the old instance
    _event(ctx, "deployment.ready", "shop", instance=new)
    _event(ctx, "health.unhealthy", "shop-web-1")  # a machine's: no instance named
    _event(ctx, "backup.completed", "shop/shop-web-1", instance=new)
    _event(ctx, "access.not_found", "shop")  # a refused request is no part of its story
    _event(ctx, "deployment.ready", "shopping", instance=new)  # another name entirely

    detail = deployments.describe_deployment(ctx, "shop")
    assert [(e.kind, e.subject) for e in detail.history] == [
        ("deployment.ready", "shop"),
        ("health.unhealthy", "shop-web-1"),
        ("backup.completed", "shop/shop-web-1"),
    ]
    assert detail.history[0].details == {"instance": new}
    assert detail.tenant == "default" and detail.jobs == [] and detail.health == {}
    assert detail.backups is not None and detail.backups.counts == {}


def test_history_before_the_deployment_is_left_out(ctx: Context) -> None:
    _event(ctx, "deployment.terminated", "web")  # an earlier `web`, before any instance
    add_deployment(ctx.store, "web")
    with ctx.store.session() as session:  # its row, made well after that event
        later = session.scalars(select(Deployment.created_at)).one() + timedelta(minutes=5)
        session.execute(update(Deployment).values(created_at=later))
    assert deployments.describe_deployment(ctx, "web").history == []


def test_a_requester_sees_its_own_without_jobs_and_backups(ctx: Context) -> None:
    add_deployment(ctx.store, "mine")  # owned by "tester"
    requester = Context(store=ctx.store, actor="tester", tenant="default", role=Role.requester)
    detail = deployments.describe_deployment(requester, "mine")
    assert detail.name == "mine" and detail.jobs is None and detail.backups is None
    other = Context(store=ctx.store, actor="someone", tenant="default", role=Role.requester)
    with pytest.raises(NotFound, match="no deployment named 'mine'"):
        deployments.describe_deployment(other, "mine")
    elsewhere = Context(store=ctx.store, actor="tester", tenant="beta")
    with pytest.raises(NotFound, match="no deployment named 'mine'"):
        deployments.describe_deployment(elsewhere, "mine")
