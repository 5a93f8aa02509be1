"""Backups end to end on the local provider, from the CLI: take, list, show, verify a
flipped byte, restore past it; in place; hostile input; a final backup before `down`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import boto3
import pytest

from provisor.providers.local import LocalProvider
from provisor.testing import crash
from provisor.testing.moto import MotoServer
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "blueprints"


def machine_names(provisor: Provisor, name: str) -> dict[str, str]:
    """node.index -> machine name."""
    machines = provisor.status(name)["machines"]
    assert isinstance(machines, list)
    return {f"{m['node']}.{m['index']}": m["name"] for m in machines}


def on(provisor: Provisor, machine: str, command: str) -> str:
    result = provisor("run", machine, "--output", "json", "--", command)
    return str(json.loads(result.stdout.splitlines()[0])["stdout"])


def backups(provisor: Provisor, *args: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(
        provisor("backup", "list", *args, "--output", "json").stdout
    )
    return found


def stored(provisor: Provisor, backup: dict[str, object], name: str) -> Path:
    """Where the local store keeps an object of a backup."""
    with sqlite3.connect(provisor.home / "provisor.db") as db:
        key, tenant = db.execute(
            "SELECT o.key, b.tenant_id FROM backup_objects o JOIN backups b ON b.id = o.backup_pk "
            "WHERE b.backup_id = ? AND o.name = ?",
            (backup["id"], name),
        ).fetchone()
    return provisor.home / "backups" / str(tenant) / key


def events(provisor: Provisor, kind: str) -> list[dict[str, object]]:
    found = json.loads(provisor("events", "--kind", kind, "--output", "json").stdout)
    assert isinstance(found, list)
    return found


def test_webapp_backup_verify_flipped_byte_restore_uses_previous_good(
    provisor: Provisor,
) -> None:
    provisor("up", str(EXAMPLES / "webapp.yaml"), "--wait")
    names = machine_names(provisor, "webapp")
    db = names["db.1"]
    on(provisor, db, "echo first > /root/marker")
    taken = json.loads(provisor("backup", "now", "webapp", "--output", "json").stdout)
    assert sorted(b["machine"] for b in taken) == sorted(names.values())
    assert {b["state"] for b in taken} == {"good"}
    first = next(b for b in taken if b["machine"] == db)
    # The db node's policy: its disk and an archive of /root/kv; every other node the
    # default (its disk alone).
    assert sorted(o["name"] for o in first["objects"]) == ["disk.tar.gz", "paths.tar"]
    disk = next(o for o in first["objects"] if o["name"] == "disk.tar.gz")
    assert disk["size"] > 0 and len(disk["sha256"]) == 64 and disk["plain_sha256"] != disk["sha256"]
    # Encrypted at rest, private to its owner.
    path = stored(provisor, first, "disk.tar.gz")
    assert b"first" not in path.read_bytes() and path.stat().st_mode & 0o077 == 0
    on(provisor, db, "echo second > /root/marker")
    second = json.loads(provisor("backup", "now", "webapp", db, "--output", "json").stdout)[0]
    assert second["state"] == "good"
    shown = provisor("backup", "show", second["id"]).stdout
    assert "disk.tar.gz" in shown and second["objects"][0]["sha256"][:16] in shown

    # One flipped byte in one stored object: verify finds exactly that one.
    corrupt = stored(provisor, second, "disk.tar.gz")
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))
    verified = provisor("backup", "verify", "webapp", check=False)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    bad_lines = [line for line in verified.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == 1 and second["id"] in bad_lines[0] and "disk.tar.gz" in bad_lines[0]
    assert "0 bad" not in verified.stdout and "1 bad" in verified.stdout
    states = {b["id"]: b["state"] for b in backups(provisor, "webapp")}
    assert states[second["id"]] == "bad" and states[first["id"]] == "good"
    corrupt_events = events(provisor, "backup.corrupt")
    assert len(corrupt_events) == 1
    details = corrupt_events[0]["details"]
    assert isinstance(details, dict)
    assert details["severity"] == "critical" and details["machine"] == db
    assert details["incident"].startswith("backup:")

    # Restore: the bad copy is never used; the previous good one is, and it says so.
    old_id = provisor.status("webapp")["machines"]
    restored = provisor("backup", "restore", "webapp", db, "--backup", second["id"], "--yes")
    assert first["id"] in restored.stdout
    assert f"backup {second['id']} not used" in restored.stderr
    assert on(provisor, db, "cat /root/marker").strip() == "first"
    assert on(provisor, db, "hostname").strip() == "db"
    machines = {m["name"]: m for m in provisor.status("webapp")["machines"]}
    before = {m["name"]: m for m in old_id}
    assert machines[db]["provider_id"] != before[db]["provider_id"]
    assert machines[db]["state"] == "ready"
    params = json.loads(provisor("params", "webapp", "--output", "json").stdout)
    values = {p["key"]: p["value"] for p in params["values"]}
    assert values["db.1.address"] == machines[db]["address"]
    live = {m["id"]: m["state"] for m in provisor.machines_of(provisor.instance("webapp"))}
    assert live[before[db]["provider_id"]] == "terminated"
    assert [e["details"]["backup"] for e in events(provisor, "restore.completed")] == [first["id"]]

    # In place, on an app server: a flipped byte found during the restore itself.
    app = names["app.1"]
    on(provisor, app, "echo kept > /root/marker")
    good = json.loads(provisor("backup", "now", "webapp", app, "--output", "json").stdout)[0]
    on(provisor, app, "echo later > /root/marker")
    newer = json.loads(provisor("backup", "now", "webapp", app, "--output", "json").stdout)[0]
    corrupt = stored(provisor, newer, "disk.tar.gz")
    data = bytearray(corrupt.read_bytes())
    data[-40] ^= 0x80
    corrupt.write_bytes(bytes(data))
    app_id = {m["name"]: m for m in provisor.status("webapp")["machines"]}[app]["provider_id"]
    rolled = provisor("backup", "restore", "webapp", app, "--in-place", "--yes")
    assert good["id"] in rolled.stdout and f"backup {newer['id']} not used" in rolled.stderr
    assert on(provisor, app, "cat /root/marker").strip() == "kept"
    after = {m["name"]: m for m in provisor.status("webapp")["machines"]}[app]
    assert after["provider_id"] == app_id
    assert {b["id"]: b["state"] for b in backups(provisor, "--machine", app)}[newer["id"]] == "bad"

    # Delete, then a final backup before `down`.
    provisor("backup", "delete", newer["id"], "--yes")
    assert newer["id"] not in {b["id"] for b in backups(provisor)}
    provisor("down", "webapp", "--final-backup")
    finals = [b for b in backups(provisor, "webapp") if b["trigger"] == "final"]
    assert len(finals) == 4 and {b["state"] for b in finals} == {"good"}


OFFSITE = """\
name: offsite
version: "1"
nodes:
  solo:
    image: debian-12
    backup: {store: offsite, commands: ["cat /root/marker"]}
"""
S3_SECRET = "moto-secret-never-shown"


def test_backups_to_s3_restore_past_a_flipped_byte(
    provisor: Provisor, moto_server: MotoServer, tmp_path: Path
) -> None:
    """An S3 bucket (moto_server's, on loopback) as the store, configured once with its
    secret from the environment; the stored copy altered in the bucket itself."""
    moto_server.reset()
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=S3_SECRET,
    )
    s3.create_bucket(Bucket="backups")
    provisor(
        *("backup", "stores", "add", "offsite", "--type", "s3", "--bucket", "backups"),
        *("--endpoint", moto_server.url, "--access-key-id", "testing", "--prefix", "prov"),
        env={"PROVISOR_SECRET_ACCESS_KEY": S3_SECRET},
    )
    assert "bucket backups" in provisor("backup", "stores", "check", "offsite").stdout
    blueprint = tmp_path / "offsite.yaml"
    blueprint.write_text(OFFSITE)
    provisor("up", str(blueprint), "--wait")
    machine = next(iter(machine_names(provisor, "offsite").values()))
    on(provisor, machine, "echo one > /root/marker")
    first = json.loads(provisor("backup", "now", "offsite", "--output", "json").stdout)[0]
    assert first["state"] == "good" and first["store"] == "offsite"
    assert sorted(o["name"] for o in first["objects"]) == ["command-1.out", "disk.tar.gz"]
    on(provisor, machine, "echo two > /root/marker")
    second = json.loads(provisor("backup", "now", "offsite", "--output", "json").stdout)[0]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="backups")["Contents"])
    assert len(keys) == 4 and all(k.startswith("prov/") for k in keys)
    dump = next(k for k in keys if second["id"] in k and k.endswith("command-1.out"))
    assert b"two" not in s3.get_object(Bucket="backups", Key=dump)["Body"].read()
    disk = next(k for k in keys if second["id"] in k and k.endswith("disk.tar.gz"))
    data = bytearray(s3.get_object(Bucket="backups", Key=disk)["Body"].read())
    data[100] ^= 0x04
    s3.put_object(Bucket="backups", Key=disk, Body=bytes(data))
    restored = provisor("backup", "restore", "offsite", machine, "--in-place", "--yes")
    assert first["id"] in restored.stdout and f"backup {second['id']} not used" in restored.stderr
    assert on(provisor, machine, "cat /root/marker").strip() == "one"
    verified = provisor("backup", "verify", "offsite", check=False)
    # The bad copy was marked by the restore: verify re-reads only good copies.
    assert verified.returncode == 0 and "0 bad" in verified.stdout
    everything = provisor("events", "--limit", "10000", "--output", "json").stdout
    stores = provisor("backup", "stores", "list", "--output", "json").stdout
    assert S3_SECRET not in everything + stores
    for log in provisor.home.glob("*.log"):
        assert S3_SECRET not in log.read_text(errors="replace")
    removing = provisor("backup", "stores", "remove", "offsite", check=False)
    assert removing.returncode != 0 and "backups are kept" in removing.stderr


FAILING = """\
name: quiesce
version: "1"
nodes:
  solo:
    image: debian-12
    backup: {pre: "echo cannot quiesce >&2; exit 3", post: "touch /root/post-ran"}
"""


def test_down_refuses_to_remove_when_the_final_backup_fails(
    provisor: Provisor, tmp_path: Path
) -> None:
    blueprint = tmp_path / "quiesce.yaml"
    blueprint.write_text(FAILING)
    provisor("up", str(blueprint), "--wait")
    refused = provisor("down", "quiesce", "--final-backup", check=False)
    assert refused.returncode != 0
    assert "final backup" in refused.stderr and "cannot quiesce" in refused.stderr
    assert provisor.status("quiesce")["state"] == "ready"  # nothing removed
    failed = json.loads(provisor("events", "--kind", "backup.failed", "--output", "json").stdout)
    assert len(failed) == 1
    details = failed[0]["details"]
    assert details["severity"] == "critical" and details["incident_state"] == "open"
    assert details["incident"].startswith("backup:") and details["deployment"] == "quiesce"
    listed = json.loads(provisor("backup", "list", "--output", "json").stdout)
    assert [b["state"] for b in listed] == ["failed"] and "pre-command failed" in listed[0]["error"]
    provisor("down", "quiesce")


RETAINED = """\
name: retained
version: "1"
nodes:
  solo:
    image: debian-12
    backup: {keep: 2, for: 30d}
"""


def test_retention_keeps_the_newest_good_backups(provisor: Provisor, tmp_path: Path) -> None:
    blueprint = tmp_path / "retained.yaml"
    blueprint.write_text(RETAINED)
    provisor("up", str(blueprint), "--wait")
    taken = []
    for _ in range(3):
        now = provisor("backup", "now", "retained", "--output", "json")
        taken.append(json.loads(now.stdout)[0])
        if len(taken) == 1:
            oldest = stored(provisor, taken[0], "disk.tar.gz")  # while its record is there
            assert oldest.exists()
    kept = backups(provisor, "retained")
    assert [b["id"] for b in kept] == [taken[2]["id"], taken[1]["id"]]
    assert not oldest.exists() and not oldest.parent.exists()
    deleted = events(provisor, "backup.deleted")
    assert [e["details"]["backup"] for e in deleted] == [taken[0]["id"]]
    assert deleted[0]["actor"] == "retention"


@pytest.mark.parametrize("boundary", ["backup-captured"])
def test_worker_killed_mid_backup_resumes_it_once(
    provisor: Provisor, tmp_path: Path, boundary: str
) -> None:
    """SIGKILL of the worker between the snapshot and the copy: the next worker resumes
    the same workflow at the copy; one backup, one snapshot taken, the provider's copy
    removed once the store holds it."""
    blueprint = tmp_path / "retained.yaml"
    blueprint.write_text(RETAINED)
    provisor("up", str(blueprint), "--wait")
    provisor("worker", "stop")  # the next one is started by `backup now`, with the hook
    killed = tmp_path / "killed"
    now = provisor(
        "backup", "now", "retained", "--output", "json",
        env=crash.environment(boundary, once=killed),
    )  # fmt: skip
    assert killed.exists()
    assert "was killed by SIGKILL; starting it again" in (provisor.home / "worker.log").read_text()
    taken = json.loads(now.stdout)
    assert len(taken) == 1 and taken[0]["state"] == "good"
    assert len(backups(provisor)) == 1
    assert len(events(provisor, "backup.started")) == 1
    assert len(events(provisor, "backup.completed")) == 1
    provider = LocalProvider(
        provisor.home / "local-provider", network=provisor.env["PROVISOR_LOCAL_NETWORK"]
    )
    assert asyncio.run(provider.snapshots()) == []  # taken once, then handed to the store
    snapshots = list((provisor.home / "local-provider" / "snapshots").glob("*.tar.gz"))
    assert snapshots == []
