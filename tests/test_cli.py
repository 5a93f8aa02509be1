"""The `provisor` command as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisor_cli import Provisor


def provisor(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVISOR_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PROVISOR_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "provisor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def provisor_cli(tmp_path: Path) -> Provisor:
    """The CLI as `Provisor` runs it, for a test that needs a terminal."""
    return Provisor(tmp_path / "home")


def test_version(home: Path) -> None:
    assert provisor("--version", home=home).stdout.startswith("provisor ")


def test_hosts_and_groups_round_trip(home: Path) -> None:
    provisor(
        "hosts",
        "add",
        "web01",
        "--address",
        "127.0.0.5",
        "--tag",
        "env=prod",
        "--fact",
        "os=debian",
        "--fact",
        "cpus=4",
        "--fact",
        "cpu.count=8",
        home=home,
    )
    provisor("hosts", "add", "web02", "-l", "deploy", "--port", "2222", home=home)
    shown = json.loads(provisor("hosts", "show", "web01", "--output", "json", home=home).stdout)
    assert shown["facts"] == {"os": "debian", "cpus": 4, "cpu": {"count": 8}}
    assert shown["tags"] == {"env": "prod"}
    rule = 'tags.env == "prod" and facts.cpus >= 4 and facts.cpu.count >= 8'
    provisor("groups", "add", "prod", "--rule", rule, home=home)
    provisor("groups", "add", "web", "-m", "web01", "-m", "web02", home=home)
    assert provisor("groups", "members", "prod", home=home).stdout.split() == ["web01"]
    listed = json.loads(provisor("groups", "list", "--output", "json", home=home).stdout)
    assert {g["name"]: g["members"] for g in listed} == {
        "prod": ["web01"],
        "web": ["web01", "web02"],
    }
    table = provisor("hosts", "list", home=home).stdout
    assert "web01" in table and "127.0.0.5" in table and "2 host(s)" in table
    provisor("hosts", "rm", "web02", home=home)
    assert provisor("groups", "members", "web", home=home).stdout.split() == ["web01"]
    events = json.loads(provisor("events", "--output", "json", home=home).stdout)
    assert [e["kind"] for e in events] == [
        "host.added",
        "host.added",
        "group.added",
        "group.added",
        "host.removed",
    ]
    only = json.loads(provisor("events", "-k", "group.", "--output", "json", home=home).stdout)
    assert {e["kind"] for e in only} == {"group.added"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hosts", "show", "nope"], "no host named 'nope'"),
        (["hosts", "add", "bad name"], "invalid name 'bad name'"),
        (["hosts", "add", "x", "--port", "0"], "port: invalid port 0"),
        (["hosts", "add", "x", "--tag", "novalue"], "tag: expected KEY=VALUE"),
        (["groups", "add", "g", "--rule", 'tags.env == "prod" and'], "rule:1:"),
        (["groups", "members", "nope"], "no group named 'nope'"),
        (["events", "--since", "yesterday"], "since: cannot read 'yesterday'"),
        (
            ["hosts", "add", "x", "--fact", "cpu=4", "--fact", "cpu.count=8"],
            "facts: fact 'cpu.count': 'cpu' is 4, not an object of facts; remove it first "
            "(--fact cpu= on the command line",
        ),
        (["hosts", "rm", "nothing*"], "target: target 'nothing*' matches no host"),
        (["hosts", "list", "root@10.0.0.9"], "selects 1 host(s) outside the inventory"),
        # A missing key file, refused by its path before any host is tried, by every command
        *[
            (
                [*command, "-i", "/nonexistent/key", *rest],
                "identity: no private key file at /nonexistent/key",
            )
            for command, rest in [
                (["run", "x"], ["--", "true"]),
                (["hosts", "gather", "x"], []),
                (["config", "plan", "examples/changes/hosts-file.yaml", "x"], []),
                (["patch", "analyze", "x"], []),
            ]
        ],
    ],
)
def test_bad_input_is_one_clear_line(home: Path, args: list[str], message: str) -> None:
    result = provisor(*args, home=home, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_hosts_list_and_rm_take_a_target(provisor_cli: Provisor, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("web01\nweb02\ndb01\n")
    provisor_cli("hosts", "import", str(hosts))
    listed = json.loads(provisor_cli("hosts", "list", "web*", "--output", "json").stdout)
    assert [h["name"] for h in listed] == ["web01", "web02"]
    # a target that could stand for many is listed and asked about, even for one host
    refused = provisor_cli("hosts", "rm", "db*", check=False)
    assert refused.returncode == 2 and "1 host(s) to remove: db01" in refused.stdout
    assert "pass --yes" in refused.stderr
    removed = provisor_cli.on_terminal("hosts", "rm", "web*", "db01", typed=["y"])
    assert "remove 3 hosts (db01, web01, web02)? [y/N]" in removed.screen
    assert removed.returncode == 0, removed.stderr
    assert "3 host(s) to remove: db01,web[01-02]" in removed.stdout
    assert "removed host web02" in removed.stdout
    assert json.loads(provisor_cli("hosts", "list", "--output", "json").stdout) == []


def test_duplicate_name(home: Path) -> None:
    provisor("hosts", "add", "web01", home=home)
    result = provisor("hosts", "add", "web01", home=home, check=False)
    assert result.returncode == 2 and "already exists" in result.stderr


def test_import_pssh_and_ansible(home: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# fleet\nroot@10.0.0.1\ndeploy@10.0.0.2:2222\n\n")
    out = provisor("hosts", "import", str(hosts), home=home).stdout
    assert "2 host(s) created" in out
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[app]\napp[1:3] ansible_host=10.1.0.1\n")
    result = provisor("hosts", "import", str(inventory), home=home, check=False)
    assert result.returncode == 0, result.stderr
    assert provisor("groups", "members", "app", home=home).stdout.split() == [
        "app1",
        "app2",
        "app3",
    ]


def test_import_reports_line_numbers_and_imports_nothing(home: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("web01\nweb02:99999\nweb03\nbad host name\n")
    result = provisor("hosts", "import", str(hosts), "--format", "pssh", home=home, check=False)
    assert result.returncode == 2
    assert f"{hosts}:2" in result.stderr and f"{hosts}:4" in result.stderr
    listed = json.loads(provisor("hosts", "list", "--output", "json", home=home).stdout)
    assert listed == []


def test_a_bad_setting_names_its_variable(home: Path) -> None:
    env = {**os.environ, "PROVISOR_HOME": str(home), "PROVISOR_PARAMETER_ADDRESS": "nowhere"}
    result = subprocess.run(
        [sys.executable, "-m", "provisor", "hosts", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: PROVISOR_PARAMETER_ADDRESS: invalid address 'nowhere': "
        "an IP address of this computer"
    )


def test_run_prints_no_warnings(home: Path) -> None:
    # An unused port on loopback: the run fails fast, and stderr holds only provisor's words.
    done = provisor("run", "root@127.0.0.9:9", "--", "true", home=home, check=False)
    assert done.returncode != 0
    assert "Warning" not in done.stderr and "Warning" not in done.stdout


def test_only_asyncssh_dsa_warnings_are_silenced() -> None:
    # cryptography warns whenever asyncssh touches its DSA classes; provisor silences that
    # category from asyncssh's modules and nothing else.
    program = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "from provisor._asyncssh import asyncssh\n"
        "asyncssh.generate_private_key('ssh-ed25519').export_private_key()\n"
        "from cryptography.utils import CryptographyDeprecationWarning\n"
        "warnings.warn('from elsewhere', CryptographyDeprecationWarning)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert "DSA" not in done.stderr
    assert "CryptographyDeprecationWarning: from elsewhere" in done.stderr


def test_each_short_option_has_one_meaning_across_the_cli() -> None:
    """`-p` is --parallel and `-t` --timeout wherever they appear (not port, tag or a
    parameter): a letter learnt in one command means the same in every other."""
    import typer

    from provisor.cli import app

    same = {"--login": "--user"}  # set-password's --user is whose password: -l logs in
    meanings: dict[str, dict[str, list[str]]] = {}

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in getattr(command, "params", []):
            if getattr(param, "param_type_name", "") != "option":
                continue
            long = next((o for o in param.opts if o.startswith("--")), "")
            for short in (o for o in [*param.opts, *param.secondary_opts] if len(o) == 2):
                meanings.setdefault(short, {}).setdefault(same.get(long, long), []).append(
                    " ".join(path)
                )

    walk(typer.main.get_command(app), [])
    clashes = {short: found for short, found in meanings.items() if len(found) > 1}
    assert not clashes
    assert set(meanings["-p"]) == {"--parallel"} and set(meanings["-t"]) == {"--timeout"}
