"""A node's backup policy in the blueprint: what is accepted, what is refused and where,
and which scheduled run is due."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisor.core.blueprint import load_blueprint
from provisor.core.blueprint.backup import BackupPolicy, due_time, retention_delta
from provisor.core.errors import ParseErrors
from provisor_cli import Provisor

BASE = """\
name: b
version: "1"
nodes:
  db:
    image: debian-12
    backup: {policy}
"""


def _policy(text: str) -> BackupPolicy | None:
    return load_blueprint(BASE.format(policy=text)).nodes["db"].backup


def test_a_full_policy_and_its_defaults() -> None:
    policy = _policy(
        '{schedule: "0  2 * * *", keep: 7, for: 30d, paths: [/srv/kv], '
        'commands: ["pg_dumpall"], pre: sync, post: "true", store: offsite}'
    )
    assert policy is not None
    assert policy.schedule == "0 2 * * *" and policy.keep == 7 and policy.keep_for == "30d"
    assert policy.disk and policy.paths == ("/srv/kv",) and policy.store == "offsite"
    assert retention_delta("36h").total_seconds() == 36 * 3600
    default = _policy("{}")
    assert default == BackupPolicy() and default.store == "local" and default.schedule is None


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ('{schedule: "61 2 * * *"}', "invalid schedule"),
        ('{schedule: "0 2 * *"}', "five cron fields"),
        ('{schedule: "@reboot"}', "five cron fields"),
        ('{schedule: "0 2 * * * *"}', "five cron fields"),
        ("{schedule: " + "'" + "1," * 5000 + "1 * * * *'}", "invalid schedule"),
        ("{paths: [/srv/../etc]}", "without '..'"),
        ("{paths: [relative/path]}", "absolute path"),
        ("{paths: [" + ", ".join(["/a"] * 65) + "]}", "at most 64"),
        ("{keep: 0}", "greater than or equal to 1"),
        ("{keep: 1000000}", "less than or equal to 1000"),
        ("{keep: 3.5}", "integer"),
        ("{for: 100000w}", "longer than 3660 days"),
        ("{for: 30x}", "invalid retention"),
        ("{for: -1d}", "invalid retention"),
        ("{store: ../etc}", "invalid name"),
        ("{store: '" + "s" * 200 + "'}", "invalid name"),
        ("{disk: false}", "needs something to copy"),
        ("{pre: ''}", "cannot be empty"),
        ("{commands: ['" + "x" * 20_000 + "']}", "at most 16,384"),
        ("{surprise: 1}", "unknown field 'surprise'"),
    ],
)
def test_hostile_policies_are_refused_at_their_field(policy: str, says: str) -> None:
    with pytest.raises(ParseErrors) as caught:
        load_blueprint(BASE.format(policy=policy))
    error = caught.value.errors[0]
    assert says in str(caught.value), str(caught.value)[:500]
    assert error.line == 6 and "backup" in (error.field or ""), (error.line, error.field)
    assert len(str(caught.value)) < 2000  # a huge value is never repeated whole


def test_due_time_is_the_latest_run_since_the_mark() -> None:
    at = datetime(2026, 12, 7, 2, 30, 10, tzinfo=UTC)
    nightly = "0 2 * * *"
    assert due_time(nightly, datetime(2026, 12, 6, 2, 0, tzinfo=UTC), at) == at.replace(
        minute=0, second=0
    )
    assert due_time(nightly, at.replace(minute=0, second=0), at) is None  # started already
    # Three nights missed: one run, the latest.
    assert due_time(nightly, datetime(2026, 12, 3, 2, 0, tzinfo=UTC), at) == at.replace(
        minute=0, second=0
    )
    exactly = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    assert due_time(nightly, datetime(2026, 12, 6, 3, 0, tzinfo=UTC), exactly) == exactly


def test_cli_validate_and_up_say_what_is_wrong(provisor: Provisor, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.format(policy='{schedule: "0 25 * * *", paths: [/x/../y]}'))
    result = provisor("blueprints", "validate", str(bad), check=False)
    assert result.returncode != 0
    assert ":6:" in result.stderr + result.stdout and "schedule" in result.stderr + result.stdout
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(BASE.format(policy="{store: offsite}"))
    refused = provisor("up", str(unknown), check=False)
    assert refused.returncode != 0
    assert "no backup store named 'offsite'" in refused.stderr
    assert "nodes.db.backup.store" in refused.stderr
    assert provisor("deployments", "list", "--output", "json").stdout.strip() == "[]"


def test_cli_backup_commands_refuse_what_does_not_exist(provisor: Provisor) -> None:
    for args, says in (
        (("backup", "now", "nosuch"), "no deployment named 'nosuch'"),
        (("backup", "restore", "nosuch", "m", "--yes"), "no deployment named 'nosuch'"),
        (("backup", "schedule", "nosuch", "db", "off"), "no deployment named 'nosuch'"),
        (("backup", "schedule", "nosuch", "db", "99 * * * *"), "invalid schedule"),
        (("backup", "show", "feedfacecafe"), "no backup 'feedfacecafe'"),
        (("backup", "delete", "../../etc", "--yes"), "no backup"),
        (("backup", "stores", "check", "nowhere"), "no backup store named 'nowhere'"),
        (("backup", "stores", "remove", "local"), "cannot be removed"),
        (
            ("backup", "stores", "add", "s", "--bucket", "abc", "--access-key-id", "K"),
            "PROVISOR_SECRET_ACCESS_KEY",
        ),
        (("backup", "stores", "add", "s", "--bucket", "Not_A_Bucket"), "bucket"),
        (("backup", "stores", "add", "s", "--type", "directory", "--path", "rel"), "absolute"),
    ):
        result = provisor(*args, check=False)
        assert result.returncode != 0, args
        assert says in result.stderr, (args, result.stderr)
    empty = provisor("backup", "verify")
    assert "0 stored object(s) good, 0 bad" in empty.stdout
    assert provisor("backup", "list", "--output", "json").stdout.strip() == "[]"
    assert "local" in provisor("backup", "stores", "list").stdout
