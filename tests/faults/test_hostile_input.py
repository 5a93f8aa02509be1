"""Hostile input is refused with a clear, located message, and costs little doing so.

YAML bombs, deep and huge documents, gzip bombs and over-size user data through the
real `provisor blueprints validate`; catastrophic and backtracking regular expressions
in rules and parameter patterns; a machine that sets too many or too large runtime
parameters, through the real parameter endpoint; deployment names that are not DNS
labels, through the CLI and the API; and a fetch from a real OpenSSH host whose
files are setuid or whose names and links try to leave the destination.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import stat
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from api_access import api_client, token_for
from db_rows import add_deployment, instance_of
from ec2_fixtures import MotoEc2
from provisor.core.blueprint import load_blueprint, resolve_inputs
from provisor.core.errors import InvalidInput, ParseErrors
from provisor.core.names import check_deployment_name
from provisor.core.rules import parse_rule
from provisor.core.userdata import MAX_DECODED, MAX_USER_DATA
from provisor.core.yamlpos import MAX_DEPTH, MAX_TEXT, MAX_VALUES
from provisor.fleet.fetching import MAX_SKIPPED
from provisor.machines import SandboxHost
from provisor.orchestrator.params import (
    MAX_KEYS_PER_MACHINE,
    MAX_VALUE_BYTES,
    ParameterBoard,
    ParameterServer,
    get_parameter,
    machine_token,
    set_parameters,
)
from provisor.providers.base import MachineSpec, ProviderError
from provisor.providers.ec2 import Ec2Provider, Ec2Settings
from provisor.services import importing
from provisor.services.context import Context
from provisor.services.jobs import JobSpec, JobView, get_job, run_job
from provisor.services.schemas import validate
from provisor.settings import Settings
from provisor.store import Store
from provisor.testing.pytest_plugin import Testbed
from provisor_cli import Provisor

MINIMAL = "name: shop\nversion: '1'\nnodes:\n  app:\n    image: debian-12\n"
SECRET = b"k" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsa7rJ4hG8J7lDq3cQ7SxZkh7mL3n0wJYfWb0q9b6cN test"


def with_user_data(user_data: str) -> str:
    """MINIMAL with `user_data` as a literal block (it starts on line 7)."""
    return MINIMAL + "    user_data: |\n" + textwrap.indent(user_data, "      ")


def alias_bomb() -> str:
    """Nine levels of ten aliases each: a billion values once expanded."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return MINIMAL + "\n".join(lines) + "\n"


def gzip_bomb_cloud_config() -> str:
    """A #cloud-config under 16 KiB whose one file gunzips to 12 MB."""
    bomb = base64.b64encode(gzip.compress(b"\0" * 12_000_000, 9)).decode()
    config = (
        "#cloud-config\nwrite_files:\n  - path: /srv/zeros\n    encoding: gz+b64\n"
        f"    content: {bomb}\n"
    )
    assert len(config) < MAX_USER_DATA  # small as written: only decoding shows it
    return with_user_data(config)


CLI_CASES = {
    "alias bomb": (alias_bomb(), f"more than {MAX_VALUES:,} values (aliases expanded)"),
    "deep": (MINIMAL + "extra: " + "[" * 100 + "]" * 100 + "\n", f"more than {MAX_DEPTH} levels"),
    "huge": (MINIMAL + "# " + "x" * MAX_TEXT + "\n", f"longer than {MAX_TEXT:,} characters"),
    "gzip bomb in write_files": (
        gzip_bomb_cloud_config(),
        f"the files decode to more than {MAX_DECODED:,} bytes",
    ),
    "base64 gzip as user data": (
        with_user_data(base64.b64encode(gzip.compress(b"#!/bin/sh\n" * 100)).decode() + "\n"),
        "user data must be a cloud-init file",
    ),
    "over-size user data": (
        with_user_data("#!/bin/sh\n" + "echo 0123456789abcdef\n" * 1000),
        f"more than the {MAX_USER_DATA:,} (16 KiB)",
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_validate_refuses_hostile_blueprints_with_a_position(
    provisor: Provisor, tmp_path: Path, case: str
) -> None:
    text, fragment = CLI_CASES[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    result = provisor("blueprints", "validate", str(path), check=False)  # no traceback
    assert result.returncode == 2, result.stdout
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:"), first
    line, column = first.removeprefix(f"{path}:").split(":")[:2]
    assert int(line) >= 1 and int(column) >= 1, first
    assert fragment in result.stderr, result.stderr
    as_json = provisor("blueprints", "validate", str(path), "--output", "json", check=False)
    errors = json.loads(as_json.stdout)["errors"]
    assert errors[0]["line"] >= 1 and errors[0]["column"] >= 1


def test_user_data_errors_say_where_in_the_cloud_config() -> None:
    config = "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: rot13\n    content: x\n"
    with pytest.raises(ParseErrors) as info:
        load_blueprint(with_user_data(config), "shop.yaml")
    (error,) = info.value.errors
    assert (error.line, error.column, error.field) == (6, 16, "nodes.app.user_data")
    assert "#cloud-config line 4, column 15: write_files[0].encoding 'rot13' is not" in (
        error.message
    )
    # A file that decodes within the limit is fine, and so is an alias used a few times.
    small = base64.b64encode(gzip.compress(b"hello\n")).decode()
    fine = (
        "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: gzip+base64\n"
        f"    content: {small}\nruncmd: &cmd [echo hi]\nbootcmd: *cmd\n"
    )
    assert load_blueprint(with_user_data(fine)).nodes["app"].user_data == fine


def test_a_catastrophic_pattern_matches_in_linear_time() -> None:
    rule = parse_rule('name =~ "(a+)+$" and tags.env =~ "^(x|x)*y"')
    long = "a" * 100_000
    assert not rule.matches({"name": long + "!", "tags": {"env": "x" * 100_000}})
    assert rule.matches({"name": long, "tags": {"env": "x" * 100_000 + "y"}})
    # A blueprint parameter's pattern is RE2 too: the hostile value is just refused.
    bp = load_blueprint(
        MINIMAL + "parameters:\n  label: {default: a, pattern: '(a|aa)+$'}\n", "shop.yaml"
    )
    with pytest.raises(ParseErrors, match="does not match the pattern"):
        resolve_inputs(bp, {"label": "a" * 50_000 + "b"})


@pytest.mark.parametrize(
    ("rule", "column", "fragment"),
    [
        (r'name =~ "^(web)\1$"', 16, "backreferences are not supported"),
        (r'name =~ "(?P<n>x)(?P=n)"', 18, "backreferences are not supported"),
        ('name =~ "web(?=01)"', 13, "lookahead is not supported"),
        ('name =~ "(?<!db)01"', 10, "lookbehind is not supported"),
        ('name =~ "a++"', 11, "possessive repeats"),
        ('name =~ "a{2000}"', 11, "at most 1000"),
    ],
)
def test_backtracking_constructs_are_refused_at_their_column(
    rule: str, column: int, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_rule(rule)
    assert info.value.column == column, info.value.message
    assert "RE2 syntax" in info.value.message and fragment in info.value.message


def test_a_backreference_rule_is_refused_by_the_cli(provisor: Provisor) -> None:
    result = provisor("groups", "add", "pairs", "--rule", r'name =~ "(a)\1"', check=False)
    assert result.returncode == 2
    assert "rule:1:13: invalid regular expression (RE2 syntax)" in result.stderr
    assert "backreferences are not supported" in result.stderr
    assert "re2.cc" not in result.stderr  # RE2's own log line stays quiet
    pattern = MINIMAL + "parameters:\n  label: {pattern: '(a)\\1'}\n"
    with pytest.raises(ParseErrors, match="backreferences are not supported") as info:
        load_blueprint(pattern, "shop.yaml")
    assert info.value.errors[0].field == "parameters.label.pattern"


def _call(url: str, token: str, body: dict[str, str]) -> tuple[int, str]:
    """What `provisor-param set` sends, and the status and text it shows on failure."""
    request = urllib.request.Request(
        url + "/set",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_machine_cannot_set_unbounded_runtime_parameters(store: Store) -> None:
    deployment_id = add_deployment(store, "shop", machines=[("db", 1), ("app", 1)])
    # What the machine set before (the endpoint's own calls would only take longer).
    with store.session() as session:
        set_parameters(
            session,
            deployment_id,
            {f"db.1.k{i}": "v" for i in range(MAX_KEYS_PER_MACHINE - 1)},
            "shop-db-1",
        )
        set_parameters(session, deployment_id, {"db.1.address": "10.0.0.5"}, "provisor")

    async def scenario() -> None:
        server = ParameterServer(ParameterBoard(store), SECRET)
        url = await server.start()
        instance = instance_of(store, deployment_id)
        db = machine_token(SECRET, instance, "shop-db-1")
        app = machine_token(SECRET, instance, "shop-app-1")

        async def call(token: str, key: str, value: str) -> tuple[int, str]:
            return await asyncio.to_thread(_call, url, token, {"key": key, "value": value})

        try:
            assert await call(db, "last", "fits") == (200, "ok")  # the 256th
            status, message = await call(db, "one_more", "x")
            assert status == 403
            assert message == (
                f"shop-db-1 has set {MAX_KEYS_PER_MACHINE} runtime parameters, the most a "
                f"machine may set ({MAX_KEYS_PER_MACHINE}); set one of them again rather "
                "than a new name"
            )
            assert await call(db, "k7", "again") == (200, "ok")  # replacing is allowed
            assert await call(app, "ready", "yes") == (200, "ok")  # others are not affected
            status, message = await call(app, "blob", "x" * (MAX_VALUE_BYTES + 1))
            assert status == 413
            assert message == (
                f"the value of blob is {MAX_VALUE_BYTES + 1:,} bytes; a runtime parameter "
                f"holds at most {MAX_VALUE_BYTES:,}"
            )
            assert await call(app, "lone", "\ud800") == (400, "the value of lone is not valid text")
        finally:
            await server.stop()

    asyncio.run(scenario())
    assert get_parameter(store, deployment_id, "db.1.one_more") is None
    assert get_parameter(store, deployment_id, "db.1.k7") == "again"
    assert get_parameter(store, deployment_id, "app.1.blob") is None


@pytest.mark.parametrize("name", ["shop.v2", "Shop", "x" * 64, "-shop", "shop_1", ""])
def test_deployment_names_are_dns_labels(name: str) -> None:
    with pytest.raises(InvalidInput, match="a deployment name is a DNS label") as info:
        check_deployment_name(name)
    assert "lower-case letters, digits and '-'" in info.value.message
    assert "at most 63" in info.value.message
    assert check_deployment_name("shop-v2") == "shop-v2"
    assert check_deployment_name("x" * 63) == "x" * 63


def test_node_names_are_dns_labels() -> None:
    with pytest.raises(ParseErrors, match="a node name is a DNS label") as info:
        load_blueprint(MINIMAL.replace("app:", "App.1:"), "shop.yaml")
    assert (info.value.errors[0].line, info.value.errors[0].column) == (4, 3)


def test_the_cli_and_the_api_refuse_a_dotted_deployment_name(
    provisor: Provisor, tmp_path: Path, store: Store
) -> None:
    blueprint = tmp_path / "shop.yaml"
    blueprint.write_text(MINIMAL)
    refused = provisor("up", str(blueprint), "--name", "shop.v2", check=False)
    assert refused.returncode == 2
    assert "invalid deployment name 'shop.v2': a deployment name is a DNS label" in (refused.stderr)
    listed = json.loads(provisor("deployments", "list", "--output", "json").stdout)
    assert listed == []  # nothing was recorded

    settings = Settings(database_url=store.url)
    with api_client(settings, token_for(store)) as client:
        added = client.post("/api/v1/blueprints", json={"text": MINIMAL, "source": "shop.yaml"})
        assert added.status_code == 201, added.text
        answer = client.post("/api/v1/deployments", json={"blueprint": "shop", "name": "Shop.V2"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["field"] == "name" and "is a DNS label" in error["message"]
        assert client.get("/api/v1/deployments").json() == []


def test_a_deployment_named_before_the_rule_is_listed_and_removed(provisor: Provisor) -> None:
    provisor("deployments", "list")  # makes the database
    store = Store(f"sqlite:///{provisor.home / 'provisor.db'}")
    try:
        add_deployment(store, "Legacy.Shop")
    finally:
        store.close()
    listed = json.loads(provisor("deployments", "list", "--output", "json").stdout)
    assert [d["name"] for d in listed] == ["Legacy.Shop"]
    assert provisor.status("Legacy.Shop")["state"] == "ready"
    provisor("down", "Legacy.Shop")
    assert json.loads(provisor("deployments", "list", "--output", "json").stdout) == []


async def test_ec2_user_data_over_the_limit_is_refused_before_anything_is_made(
    moto: MotoEc2,
) -> None:
    cloud = Ec2Provider(
        "moto",
        Ec2Settings.parse(
            {"region": moto.region, "endpoint": moto.url, "access_key_id": "testing"}
        ),
        secret_access_key="testing",
        controller="test",
        controller_address="192.0.2.10",
        launch_timeout=60.0,
    )
    spec = MachineSpec(
        token="provisor/7/big",
        name="shop-app-1",
        hostname="app",
        image="debian-12",
        ssh_public_key=KEY,
        tags={"provisor:deployment": "7"},
        user_data="#!/bin/sh\n" + "echo 0123456789abcdef\n" * 800,  # within 16 KiB itself
        host_key_report="echo report\n" * 200,  # what provisor adds takes it over
    )
    with pytest.raises(ProviderError, match="EC2 takes at most 16,384") as info:
        await cloud.launch(spec)
    assert info.value.machine == "shop-app-1" and info.value.call == "launch"
    ec2 = moto.client(direct=True)
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [r for r in ec2.describe_instances()["Reservations"]] == []


# --- fetch -------------------------------------------------------------------------------


def _context(home: Path, hosts: list[SandboxHost]) -> Context:
    ctx = Context(
        store=Store(f"sqlite:///{home / 'provisor.db'}"),
        actor="tester",
        tenant="default",
        home=home,
    )
    lines = ["[hostile]"] + [
        f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
        f"ansible_ssh_private_key_file={h.client_key}"
        for h in hosts
    ]
    importing.import_hosts(ctx, "\n".join(lines) + "\n", source="hostile.ini")
    return ctx


def _job(ctx: Context, kind: str, **fields: object) -> JobView:
    """The job run, with its results."""
    spec = validate(JobSpec, {"kind": kind, "target": "group:hostile", **fields})
    return get_job(ctx, asyncio.run(run_job(ctx, spec)).id)


REMOTE_TREE = """
set -e
rm -rf /srv/evil && mkdir -p /srv/evil/sub /srv/evil/shared
printf setuid > /srv/evil/suid && chmod 4755 /srv/evil/suid
printf setgid > /srv/evil/sgid && chmod 2750 /srv/evil/sgid
chmod 1777 /srv/evil/shared && printf inside > /srv/evil/shared/file
printf plain > /srv/evil/sub/file
ln -s /etc /srv/evil/etc-link
ln -s ../../../../.. /srv/evil/up
ln -s /etc/hostname /srv/evil/sub/hostname-link
mkfifo /srv/evil/fifo
"""


@pytest.mark.testbed
def test_fetch_drops_special_bits_and_never_leaves_the_destination(
    testbed: Testbed, tmp_path: Path
) -> None:
    (host,) = testbed(1)
    ctx = _context(tmp_path / "home", [host])
    assert _job(ctx, "run", command=REMOTE_TREE).summary == {"ok": 1}
    fetched = tmp_path / "fetched"
    outside = tmp_path / "outside"
    outside.mkdir()

    got = _job(ctx, "fetch", sources=["/srv/evil"], destination=str(fetched))
    assert got.summary == {"ok": 1}
    (result,) = got.results or []
    tree = fetched / host.name / "evil"
    modes = {
        str(p.relative_to(tree)): stat.S_IMODE(p.lstat().st_mode) for p in sorted(tree.rglob("*"))
    }
    assert modes == {
        "suid": 0o755,  # not 4755
        "sgid": 0o750,  # not 2750
        "shared": 0o777,  # not 1777
        "shared/file": 0o644,
        "sub": 0o755,
        "sub/file": 0o644,
    }
    assert not any(p.is_symlink() for p in tree.rglob("*"))
    assert (tree / "suid").read_text() == "setuid"
    assert sorted(result.details["skipped"]) == [
        "/srv/evil/etc-link: a symbolic link, not followed",
        "/srv/evil/fifo: not a regular file or a directory",
        "/srv/evil/sub/hostname-link: a symbolic link, not followed",
        "/srv/evil/up: a symbolic link, not followed",
    ]
    assert "not fetched: /srv/evil/up: a symbolic link, not followed\n" in result.stderr
    assert result.details["files"] == 4 and result.details["bytes"] == 6 + 6 + 6 + 5

    # A symbolic link already at the destination is never written through: a directory
    # that is one fails the host; a file that is one is replaced, its target untouched.
    (outside / "victim").write_text("untouched")
    (tree / "suid").unlink()
    (tree / "suid").symlink_to(outside / "victim")
    again = _job(ctx, "fetch", sources=["/srv/evil"], destination=str(fetched))
    assert again.summary == {"ok": 1}
    assert (outside / "victim").read_text() == "untouched"
    assert not (tree / "suid").is_symlink() and (tree / "suid").read_text() == "setuid"
    for entry in (tree / "sub").iterdir():
        entry.unlink()
    (tree / "sub").rmdir()
    (tree / "sub").symlink_to(outside, target_is_directory=True)
    refused = _job(ctx, "fetch", sources=["/srv/evil"], destination=str(fetched))
    assert refused.summary == {"failed": 1}
    assert "sub at the destination is a symbolic link" in str(refused.results)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]

    # A path without a name of its own is refused before anything is written; a path
    # through `..` lands under its own name, inside the destination.
    for nameless in ("..", "/", "."):
        nothing = _job(ctx, "fetch", sources=[nameless], destination=str(tmp_path / "n"))
        assert nothing.summary == {"failed": 1}, nameless
        assert "has no name of its own" in str(nothing.results), nameless
    assert not (tmp_path / "n" / host.name).exists()
    up = _job(ctx, "fetch", sources=["/srv/evil/sub/.."], destination=str(tmp_path / "u"))
    assert up.summary == {"ok": 1}
    assert (tmp_path / "u" / host.name / "evil" / "suid").read_text() == "setuid"
    assert sorted(os.listdir(tmp_path / "u")) == [host.name]

    # Entries not fetched are named up to a bound, then counted.
    links = "mkdir -p /srv/links && cd /srv/links && for i in $(seq 150); do ln -sf / l$i; done"
    assert _job(ctx, "run", command=links).summary == {"ok": 1}
    many = _job(ctx, "fetch", sources=["/srv/links"], destination=str(tmp_path / "l"))
    (listed,) = many.results or []
    assert len(listed.details["skipped"]) == MAX_SKIPPED
    assert listed.details["skipped_more"] == 150 - MAX_SKIPPED
    assert listed.stderr.endswith(f"not fetched: {150 - MAX_SKIPPED} more\n")
    ctx.store.close()
