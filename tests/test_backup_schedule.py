"""Which machines have scheduled backups and which run is due, on each store backend;
a deployment's own schedule in place of its blueprint's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from db_rows import add_deployment
from provisor.core.errors import InvalidInput, NotFound
from provisor.orchestrator import backup_schedule
from provisor.services import backups
from provisor.services.context import Context
from provisor.store import Store
from provisor.store.backups import BackupMark, BackupOverride
from provisor.store.orchestration import Deployment, Machine

BLUEPRINT = """\
name: shop
version: "1"
nodes:
  db:
    image: debian-12
    backup: {schedule: "0 2 * * *"}
  web:
    image: debian-12
"""


def _shop(store: Store) -> None:
    deployment_id = add_deployment(store, "shop", machines=[("db", 1), ("web", 1), ("web", 2)])
    with store.session() as session:
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(blueprint_text=BLUEPRINT)
        )
        session.execute(
            update(Machine)
            .where(Machine.deployment_id == deployment_id, Machine.name != "shop-web-2")
            .values(provider_id=Machine.name)  # launched; web.2 not yet
        )


def test_schedules_follow_the_blueprint_and_the_deployments_overrides(
    ctx: Context, store: Store
) -> None:
    _shop(store)
    found = backup_schedule.schedules(store)
    assert [(s.machine, s.schedule) for s in found] == [("shop-db-1", "0 2 * * *")]
    assert backups.set_schedule(ctx, "shop", "web", "*/15 * * * *") == "*/15 * * * *"
    assert backups.set_schedule(ctx, "shop", "db", "off") == "off"
    found = backup_schedule.schedules(store)
    assert [(s.machine, s.schedule) for s in found] == [("shop-web-1", "*/15 * * * *")]
    assert backups.set_schedule(ctx, "shop", "db", "blueprint") == "0 2 * * *"
    assert backups.set_schedule(ctx, "shop", "web", "blueprint") == "off"
    assert [s.machine for s in backup_schedule.schedules(store)] == ["shop-db-1"]
    with pytest.raises(InvalidInput, match="schedule"):
        backups.set_schedule(ctx, "shop", "db", "0 2 * *")
    with pytest.raises(NotFound, match="no node 'cache'"):
        backups.set_schedule(ctx, "shop", "cache", "off")
    other = Context(store=store, actor="tester", tenant="other")
    with pytest.raises(NotFound, match="no deployment"):
        backups.set_schedule(other, "shop", "db", "off")


def test_a_due_run_is_due_once(store: Store) -> None:
    _shop(store)
    (item,) = backup_schedule.schedules(store)
    later = item.since + timedelta(days=3)
    ((due_item, when),) = backup_schedule.due(store, later)
    assert due_item == item and when <= later and later - when < timedelta(days=1)
    backup_schedule._mark(store, item, when)
    assert backup_schedule.due(store, later) == []  # started already
    backup_schedule._mark(store, item, when - timedelta(days=1))  # never moves back
    assert backup_schedule.due(store, later) == []
    assert backup_schedule.due(store, later + timedelta(days=1))[0][1] == when + timedelta(days=1)
    assert backup_schedule.has_schedules(store)


def test_marks_and_overrides_of_removed_deployments_are_forgotten(
    ctx: Context, store: Store
) -> None:
    _shop(store)
    (item,) = backup_schedule.schedules(store)
    backup_schedule._mark(store, item, item.since)
    backups.set_schedule(ctx, "shop", "web", "off")
    backup_schedule.forget_removed(store)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(BackupMark)) == 1
        session.execute(delete(Deployment))
    backup_schedule.forget_removed(store)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(BackupMark)) == 0
        assert session.scalar(select(func.count()).select_from(BackupOverride)) == 0
