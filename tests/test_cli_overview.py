"""What a new user reads on a terminal, from a real `provisor` process: one deployment's
whole picture (`deployments show`), listings that fit an 80-column terminal one line a
row, shell completion, and a blueprint version that is not in the catalog.

One real deployment (the local provider) with a job and a backup serves every test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provisor.core.masking import MASK
from provisor.services import groups, hosts
from provisor.services.context import Context
from provisor.services.schemas import GroupSpec, HostSpec
from provisor.store import Store
from provisor_cli import Provisor

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

SECRET = "s3cr3t-never-shown-7f1c"
LONG_NOTE = ("a note long enough that no 80-column table can show it whole " * 2).strip()
BLUEPRINT = """\
name: tiny
version: '1'
parameters:
  pw: {type: secret}
  note: {type: string, default: short}
nodes:
  a:
    image: debian-12
    scripts: ['true']
"""
NARROW = {"COLUMNS": "80"}
WRAPPED_ROW = re.compile(r"^\s+│")  # a row's first cell (a name, an id, a time) never is empty


# Every command the tests read, run once on an 80-column terminal, two at a time.
SHOW = ("deployments", "show", "tiny")
SHOW_JSON = ("deployments", "show", "tiny", "--output", "json")
STATUS_JSON = ("status", "tiny", "--output", "json")
LISTINGS = [
    ("events", "--limit", "200"),
    ("jobs", "list"),
    ("hosts", "list"),
    ("groups", "list"),
    ("blueprints", "list"),
    ("backup", "list"),
]
WIDE = [("events", "--wide", "--limit", "200"), ("jobs", "list", "--wide")]
REFUSED = [("up", "tiny@9"), ("up", "tiny@"), ("deployments", "show", "nope")]
Screens = dict[tuple[str, ...], subprocess.CompletedProcess[str]]
BACKUP = ("backup", "now", "tiny")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisor]:
    """A data directory with the deployment `tiny` (ready, a job and a backup done),
    hosts with long tags and a group with a long rule."""
    home = tmp_path_factory.mktemp("overview")
    provisor = Provisor(home / "home")
    (home / "tiny.yaml").write_text(BLUEPRINT)
    (home / "pw").write_text(SECRET)
    try:
        provisor("blueprints", "add", str(home / "tiny.yaml"))
        pw, note = f"pw=@{home / 'pw'}", f"note={LONG_NOTE}"
        provisor("up", "tiny", "--param", pw, "--param", note, "--wait")
        store = Store(f"sqlite:///{provisor.home / 'provisor.db'}")
        try:
            ctx = Context(store=store, actor="tester", tenant="default", home=provisor.home)
            tags = {f"label{i}": "a-rather-long-value" for i in range(6)}
            hosts.add_host(ctx, HostSpec(name="web01.example.internal", tags=tags))
            hosts.add_host(ctx, HostSpec(name="db01", address="127.0.0.9", tags=tags))
            rule = " or ".join(f'tags.label{i} == "a-rather-long-value"' for i in range(6))
            groups.add_group(ctx, GroupSpec(name="labelled", rule=rule))
        finally:
            store.close()
        for done in _run(provisor, [("run", "deployment:tiny", "--", "true"), BACKUP]):
            assert done.returncode == 0, done.stderr
        yield provisor
    finally:
        provisor("down", "tiny", check=False)
        provisor("worker", "stop", check=False)


@pytest.fixture(scope="module")
def screens(cli: Provisor) -> Screens:
    """What each command the tests read printed (exit status, stdout, stderr)."""
    commands = [SHOW, SHOW_JSON, STATUS_JSON, *LISTINGS, *WIDE, *REFUSED]
    return dict(zip(commands, _run(cli, commands), strict=True))


def _run(cli: Provisor, commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    """Each command, run on an 80-column terminal (two at a time)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: cli(*args, env=NARROW, check=False), commands))


def _ok(screens: Screens, command: tuple[str, ...]) -> str:
    done = screens[command]
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def _fits(output: str, command: str) -> None:
    lines = output.splitlines()
    assert lines, command
    too_long = [line for line in lines if len(line) > 80]
    assert not too_long, f"{command}: {too_long}"
    wrapped = [line for line in lines if WRAPPED_ROW.match(line)]
    assert not wrapped, f"{command}: a row took more than one line:\n{output}"


def test_deployments_show_tells_everything_and_no_secret(screens: Screens) -> None:
    shown, as_json, status = (_ok(screens, command) for command in (SHOW, SHOW_JSON, STATUS_JSON))
    _fits(shown, "deployments show")
    assert SECRET not in shown and SECRET not in as_json
    facts = dict(line.split(None, 1) for line in shown.split("\n\n")[0].splitlines())
    assert facts["blueprint"].strip() == "tiny@1" and facts["state"].strip() == "ready"
    assert facts["tenant"].strip() == "default" and facts["owner"].strip()
    assert facts["created"].strip().endswith("UTC") and facts["health"].strip() == "not checked"
    assert re.fullmatch(r"1 good; newest good \w+ \(.* UTC\)", facts["backups"].strip())
    assert re.search(rf"^pw\s+{re.escape(MASK)}\s*$", shown, re.MULTILINE)
    assert re.search(r"^ tiny-a-1 +│ a +│ ready +│ 127\.", shown, re.MULTILINE)
    assert "deployment.requested" in shown and "deployment.ready" in shown
    assert re.search(r"^ 1 +│ .* │ done +│ ok=1 +│ true", shown, re.MULTILINE)  # the job

    detail = json.loads(as_json)
    plain = json.loads(status)
    # The same deployment as `status`, and more.
    assert {k: detail[k] for k in plain if k != "lease_seconds_left"} == {
        k: v for k, v in plain.items() if k != "lease_seconds_left"
    }
    assert detail["inputs"] == {"pw": MASK, "note": LONG_NOTE}
    assert detail["tenant"] == "default" and detail["health"] == {}
    assert [e["kind"] for e in detail["history"]][:2] == [
        "deployment.requested",
        "deployment.ready",
    ]
    assert any(e["kind"] == "backup.completed" for e in detail["history"])
    assert [(j["id"], j["command"], j["summary"]) for j in detail["jobs"]] == [
        (1, "true", {"ok": 1})
    ]
    assert detail["backups"]["counts"] == {"good": 1} and detail["backups"]["last_good"]


def test_listings_fit_80_columns_one_line_a_row(screens: Screens) -> None:
    outputs = [_ok(screens, command) for command in LISTINGS]
    for command, output in zip(LISTINGS, outputs, strict=True):
        _fits(output, " ".join(command))
    events, _, hosts_listed, groups_listed = outputs[:4]
    assert "deployment.requested" in events and "…" in events  # long details shortened
    assert "web01.example.internal" in hosts_listed and "…" in hosts_listed
    assert "labelled" in groups_listed and "…" in groups_listed


def test_wide_shows_everything_one_line_a_row(cli: Provisor, screens: Screens) -> None:
    events, jobs = (_ok(screens, command) for command in WIDE)
    instance = cli.instance("tiny")
    requested = [line for line in events.splitlines() if "deployment.requested" in line]
    assert len(requested) == 1 and instance in requested[0]  # whole, on its one line
    assert len(requested[0]) > 80
    assert " run " in jobs and "deployment:tiny" in jobs


def test_completion_script_and_protocol(cli: Provisor) -> None:
    """bash loads the printed script as the README says; completing `provisor ho` then
    asks the installed command (COMP_WORDS, COMP_CWORD, _PROVISOR_COMPLETE=complete_bash)."""
    script = Path(sys.executable).with_name("provisor")
    assert script.exists(), f"no `provisor` beside {sys.executable}: pip install -e ."
    path = f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'printed="$(provisor completion bash)" && printf "%s\\n---\\n" "$printed" && '
            'eval "$printed" && COMP_WORDS=(provisor ho) && COMP_CWORD=1 && '
            '_provisor_completion provisor && echo "${COMPREPLY[@]}"',
        ],
        env={**cli.env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0, shell.stderr
    printed, completed = shell.stdout.split("---\n")
    assert "_PROVISOR_COMPLETE=complete_bash" in printed
    assert printed.rstrip().endswith("complete -o default -F _provisor_completion provisor")
    assert completed.split() == ["hosts"]


def test_unknown_names_and_versions_say_what_there_is(screens: Screens) -> None:
    missing, empty, unknown = (screens[command] for command in REFUSED)
    assert missing.returncode == empty.returncode == unknown.returncode == 2
    assert "blueprint 'tiny' has no version '9' in the catalog; stored: 1." in missing.stderr
    assert "tiny@1" in missing.stderr and "provisor blueprints add FILE" in missing.stderr
    assert "names no version after @" in empty.stderr
    assert "no deployment named 'nope'" in unknown.stderr
