"""Removing many objects asks first: on a terminal a question, without one a refusal
unless --yes; --dry-run names what would be touched. One object goes ahead at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisor_cli import Provisor


@pytest.fixture
def provisor(tmp_path: Path) -> Provisor:
    cli = Provisor(tmp_path / "home")
    for name in ("web01", "web02", "web03"):
        cli("hosts", "add", name, "--address", "127.0.0.1")
    for name in ("a", "b"):
        cli("groups", "add", name)
    return cli


def _hosts(provisor: Provisor) -> list[str]:
    listed = provisor("hosts", "list", "--output", "json").stdout
    return sorted(host["name"] for host in json.loads(listed))


def test_many_hosts_are_refused_without_a_terminal_and_kept(provisor: Provisor) -> None:
    refused = provisor("hosts", "rm", "web01", "web02", check=False)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr and "no terminal" in refused.stderr
    assert _hosts(provisor) == ["web01", "web02", "web03"]

    groups = provisor("groups", "rm", "a", "b", check=False)
    assert groups.returncode == 2 and "--yes" in groups.stderr
    assert "a" in provisor("groups", "list").stdout


def test_dry_run_names_every_object_and_touches_none(provisor: Provisor) -> None:
    shown = provisor("hosts", "rm", "web01", "web02", "web03", "--dry-run")
    assert shown.stdout.splitlines() == [f"would remove web0{i}" for i in (1, 2, 3)]
    assert _hosts(provisor) == ["web01", "web02", "web03"]


def test_yes_and_a_single_object_go_ahead(provisor: Provisor) -> None:
    provisor("hosts", "rm", "web01")
    provisor("hosts", "rm", "web02", "web03", "--yes")
    assert _hosts(provisor) == []
    provisor("groups", "rm", "a", "b", "-y")
    assert provisor("groups", "list", "--output", "json").stdout.strip() == "[]"


def test_the_terminal_is_asked_and_no_means_nothing_done(provisor: Provisor) -> None:
    no = provisor.on_terminal("hosts", "rm", "web01", "web02", typed=["n"])
    assert no.returncode == 1
    assert "remove 2 hosts (web01, web02)? [y/N]:" in no.screen
    assert "nothing done" in no.stdout
    assert _hosts(provisor) == ["web01", "web02", "web03"]

    yes = provisor.on_terminal("hosts", "rm", "web01", "web02", typed=["y"])
    assert yes.returncode == 0, yes.stderr
    assert _hosts(provisor) == ["web03"]


def test_kill_on_many_hosts_asks_and_dry_run_names_them(provisor: Provisor) -> None:
    refused = provisor("kill", "web01,web02", "sleep 99", check=False)
    assert refused.returncode == 2
    assert "kill processes matching 'sleep 99' on 2 hosts (web01, web02)" in refused.stderr
    assert "--yes" in refused.stderr
    shown = provisor("kill", "web0[1-3]", "sleep 99", "--dry-run")
    assert shown.stdout.splitlines() == [
        f"would kill processes matching 'sleep 99' on web0{i}" for i in (1, 2, 3)
    ]
    assert provisor("jobs", "list", "--output", "json").stdout.strip() == "[]"  # none ran


def test_down_of_several_deployments_asks_first(provisor: Provisor) -> None:
    refused = provisor("down", "shop", "blog", check=False)
    assert refused.returncode == 2
    assert "remove 2 deployments (shop, blog)" in refused.stderr and "--yes" in refused.stderr
    unknown = provisor("down", "shop", "--dry-run", check=False)
    assert unknown.returncode == 2 and "no deployment named 'shop'" in unknown.stderr
