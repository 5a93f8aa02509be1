"""Configured providers: the service, the `provisor providers` command and the API.

No test sends traffic beyond loopback: the EC2 endpoints are an unreachable loopback
port (127.0.0.1:9, connection refused) or the session's moto_server, credentials are
always explicit, and boto3's instance-metadata lookup is switched off.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api_access import api_client, token_for
from db_rows import add_deployment
from machines_needed import requires_root
from provisor.core.errors import Conflict, InvalidInput, NotFound
from provisor.providers.base import ProviderError
from provisor.services import providers as service
from provisor.services.context import Context
from provisor.services.deployments import request_deployment
from provisor.settings import Settings
from provisor.store import Store
from provisor.store.models import ProviderConfig
from provisor.store.orchestration import Deployment

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connection refused
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-provisor-test"  # distinctive, to grep for
KEY_ID = "AKIAPROVISORTEST"


def ec2_settings(**changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint": UNREACHABLE,
        "access_key_id": KEY_ID,
        "max_attempts": 1,
        "call_timeout": 5,
    }
    settings.update(changes)
    return {k: v for k, v in settings.items() if v is not None}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 never looks for credentials beyond loopback (instance metadata, ~/.aws)."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PROVISOR_SECRET_ACCESS_KEY", raising=False)


@pytest.fixture
def pctx(store: Store, tmp_path: Path) -> Context:
    return Context(store=store, actor="tester", tenant="default", home=tmp_path / "home")


def database_bytes(url: str) -> bytes:
    """Everything SQLite has on disk: the file and its write-ahead log."""
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


# --- the service -------------------------------------------------------------------------


def test_add_list_show_remove(pctx: Context) -> None:
    added = service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    assert (added.name, added.kind, added.has_secret, added.created_by) == (
        "lab",
        "ec2",
        True,
        "tester",
    )
    assert added.settings["region"] == "us-east-1" and added.settings["login_user"] == "root"
    assert "2x4096" in added.settings["instance_types"]  # defaults filled in
    assert added.settings["ssh_source"] is None  # the controller's address, never the world
    listed = service.list_providers(pctx)
    assert [(p.name, p.kind) for p in listed] == [("local", "local"), ("lab", "ec2")]
    assert service.get_provider(pctx, "lab") == added
    assert service.get_provider(pctx, "local").created_at is None
    service.remove_provider(pctx, "lab")
    with pytest.raises(NotFound, match="no provider named 'lab'") as info:
        service.get_provider(pctx, "lab")
    assert info.value.field == "name"
    assert [p.name for p in service.list_providers(pctx)] == ["local"]
    events = [(e.kind, e.subject, e.outcome) for e in _events(pctx)]
    assert events == [("provider.added", "lab", "ok"), ("provider.removed", "lab", "ok")]


def _events(ctx: Context) -> list[Any]:
    from provisor.services.events import list_events

    return list_events(ctx)


@pytest.mark.parametrize(
    ("name", "kind", "settings", "field", "fragment"),
    [
        ("lab", "ec2", ec2_settings(region="US East"), "region", "invalid region"),
        ("lab", "ec2", ec2_settings(endpoint="ftp://127.0.0.1"), "endpoint", "invalid endpoint"),
        ("lab", "ec2", ec2_settings(endpoint="not a url"), "endpoint", "invalid endpoint"),
        (
            "lab",
            "ec2",
            ec2_settings(instance_types={"big": "m5.large"}),
            "instance_types",
            "invalid size 'big'",
        ),
        ("lab", "ec2", ec2_settings(ssh_source="10.0.0.5/24"), "ssh_source", "host bits set"),
        ("lab", "ec2", ec2_settings(ssh_source="anywhere"), "ssh_source", "invalid CIDR"),
        ("lab", "ec2", ec2_settings(colour="red"), "colour", "Extra inputs"),
        ("lab", "ec2", ec2_settings(region=None), "region", "Field required"),
        ("lab", "gce", ec2_settings(), "type", "unknown provider type 'gce'"),
        ("bad name", "ec2", ec2_settings(), "name", "invalid name"),
        ("x" * 65, "ec2", ec2_settings(), "name", "at most 64"),
    ],
)
def test_invalid_input_names_the_field(
    pctx: Context, name: str, kind: str, settings: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        service.add_provider(pctx, name, kind, settings, SECRET)
    assert info.value.field == field and fragment in info.value.message
    assert [p.name for p in service.list_providers(pctx)] == ["local"]


def test_secret_goes_with_the_access_key_id(pctx: Context) -> None:
    with pytest.raises(InvalidInput, match="give its secret_access_key") as info:
        service.add_provider(pctx, "lab", "ec2", ec2_settings(), None)
    assert info.value.field == "secret_access_key"
    with pytest.raises(InvalidInput, match="goes with access_key_id") as info:
        service.add_provider(pctx, "lab", "ec2", ec2_settings(access_key_id=None), SECRET)
    assert info.value.field == "secret_access_key"
    with pytest.raises(InvalidInput, match="empty"):
        service.add_provider(pctx, "lab", "ec2", ec2_settings(), "  ")
    # Neither: boto3's own credential chain at run time.
    chain = service.add_provider(pctx, "lab", "ec2", ec2_settings(access_key_id=None), None)
    assert not chain.has_secret and chain.settings["access_key_id"] is None


def test_duplicate_name_is_a_conflict_and_audited(pctx: Context) -> None:
    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    with pytest.raises(Conflict, match="already exists") as info:
        service.add_provider(pctx, "lab", "ec2", ec2_settings(region="eu-west-1"), SECRET)
    assert info.value.field == "name"
    assert service.get_provider(pctx, "lab").settings["region"] == "us-east-1"
    last = _events(pctx)[-1]
    assert (last.kind, last.outcome) == ("provider.added", "failed")
    assert "already exists" in last.details["error"]


def test_local_is_reserved(pctx: Context) -> None:
    for name in ("local", "LOCAL"):
        with pytest.raises(Conflict, match="built-in provider") as info:
            service.add_provider(pctx, name, "ec2", ec2_settings(), SECRET)
        assert info.value.field == "name"
    with pytest.raises(Conflict, match="cannot be removed"):
        service.remove_provider(pctx, "local")
    assert [p.name for p in service.list_providers(pctx)] == ["local"]


def test_secret_is_sealed_and_never_shown(pctx: Context, store: Store) -> None:
    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    with pytest.raises(ProviderError):
        asyncio.run(service.check_provider(pctx, Settings(home=pctx.home), "lab"))
    with store.session() as session:
        row = session.scalars(select(ProviderConfig)).one()
        assert row.secret is not None and row.secret.startswith("sealed:")
        assert SECRET not in row.secret and SECRET not in json.dumps(row.settings)
    views = [service.get_provider(pctx, "lab"), *service.list_providers(pctx)]
    assert not any(SECRET in v.model_dump_json() for v in views)
    events = _events(pctx)
    assert {e.kind for e in events} == {"provider.added", "provider.checked"}
    assert not any(SECRET in e.model_dump_json() for e in events)
    if store.url.startswith("sqlite"):
        assert SECRET.encode() not in database_bytes(store.url)
        assert KEY_ID.encode() in database_bytes(store.url)  # the bytes were really read


def test_provider_for_unseals_the_secret(pctx: Context) -> None:
    from provisor.orchestrator.runtime import Runtime
    from provisor.providers.ec2 import Ec2Provider
    from provisor.providers.local import LocalProvider

    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    tenant_id = pctx.tenant_id()
    built = service.provider_for(pctx, pctx.home, "127.100.0.0/16", tenant_id, "lab")
    assert isinstance(built, Ec2Provider)
    try:
        credentials = built._api.client._request_signer._credentials.get_frozen_credentials()
        assert (credentials.access_key, credentials.secret_key) == (KEY_ID, SECRET)
    finally:
        built.close()
    assert isinstance(
        service.provider_for(pctx.store, pctx.home, "127.100.0.0/16", None, "local"),
        LocalProvider,
    )
    with pytest.raises(NotFound) as info:
        service.provider_for(pctx, pctx.home, "127.100.0.0/16", tenant_id, "nope")
    assert info.value.field == "provider"
    rt = Runtime(pctx.store, pctx.home)
    assert rt.provider("lab", tenant_id) is rt.provider("lab", tenant_id)
    assert rt.provider("local") is rt.provider("local", tenant_id)


def test_check_unreachable_is_one_clear_error(pctx: Context) -> None:
    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    with pytest.raises(ProviderError) as info:
        asyncio.run(service.check_provider(pctx, Settings(home=pctx.home), "lab"))
    message = str(info.value)
    assert "127.0.0.1:9" in message and "\n" not in message
    assert info.value.field == "provider"
    last = _events(pctx)[-1]
    assert (last.kind, last.subject, last.outcome) == ("provider.checked", "lab", "failed")
    assert "127.0.0.1:9" in last.details["error"] and last.details["kind"] == "ec2"
    with pytest.raises(NotFound):
        asyncio.run(service.check_provider(pctx, Settings(home=pctx.home), "nope"))


def test_check_reaches_moto(pctx: Context, moto: Any) -> None:
    service.add_provider(pctx, "moto", "ec2", ec2_settings(endpoint=moto.url), SECRET)
    description = asyncio.run(service.check_provider(pctx, Settings(home=pctx.home), "moto"))
    assert moto.url in description and "us-east-1" in description
    last = _events(pctx)[-1]
    assert (last.kind, last.outcome) == ("provider.checked", "ok")
    assert last.details["description"] == description


@requires_root
def test_check_local(pctx: Context) -> None:
    description = asyncio.run(service.check_provider(pctx, Settings(home=pctx.home), "local"))
    assert "local machines" in description


def test_remove_refused_while_a_deployment_uses_it(pctx: Context, store: Store) -> None:
    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    add_deployment(store, "shop", tenant="default", provider="lab")
    with pytest.raises(Conflict, match="used by deployment\\(s\\) shop") as info:
        service.remove_provider(pctx, "lab")
    assert info.value.field == "name"
    assert service.get_provider(pctx, "lab").name == "lab"
    with store.session() as session:
        session.delete(session.scalars(select(Deployment)).one())
    service.remove_provider(pctx, "lab")


def test_tenants_are_isolated(store: Store, tmp_path: Path) -> None:
    alpha = Context(store=store, actor="a", tenant="alpha", home=tmp_path)
    beta = Context(store=store, actor="b", tenant="beta", home=tmp_path)
    service.add_provider(alpha, "lab", "ec2", ec2_settings(), SECRET)
    assert [p.name for p in service.list_providers(beta)] == ["local"]
    with pytest.raises(NotFound):
        service.get_provider(beta, "lab")
    with pytest.raises(NotFound):
        service.remove_provider(beta, "lab")
    with pytest.raises(NotFound):
        service.provider_for(beta, tmp_path, "127.100.0.0/16", beta.tenant_id(), "lab")
    # The same name in another tenant is another provider.
    service.add_provider(beta, "lab", "ec2", ec2_settings(region="eu-west-1"), SECRET)
    assert service.get_provider(alpha, "lab").settings["region"] == "us-east-1"
    add_deployment(store, "shop", tenant="alpha", provider="lab")
    service.remove_provider(beta, "lab")  # alpha's deployment does not hold beta's provider
    with pytest.raises(Conflict):
        service.remove_provider(alpha, "lab")


def test_deployment_needs_a_provider_of_its_tenant(pctx: Context, store: Store) -> None:
    settings = Settings(home=pctx.home, database_url=store.url)
    text = (ROOT / "examples" / "blueprints" / "webapp.yaml").read_text()
    service.add_provider(pctx, "lab", "ec2", ec2_settings(), SECRET)
    with pytest.raises(InvalidInput) as info:
        request_deployment(
            pctx, settings, text, source="webapp.yaml", parameters={}, provider="aws"
        )
    assert info.value.field == "provider"
    assert "no provider named 'aws': use one of local, lab" in info.value.message
    other = Context(store=store, actor="b", tenant="other", home=pctx.home)
    with pytest.raises(InvalidInput, match="use one of local \\("):
        request_deployment(
            other, settings, text, source="webapp.yaml", parameters={}, provider="lab"
        )


def test_the_blueprint_names_a_default_provider(pctx: Context, store: Store) -> None:
    settings = Settings(home=pctx.home, database_url=store.url)
    text = (ROOT / "examples" / "blueprints" / "webapp.yaml").read_text()
    text = text.replace("approval: none", "approval: none\nprovider: lab", 1)
    with pytest.raises(InvalidInput, match="no provider named 'lab'") as info:
        request_deployment(pctx, settings, text, source="webapp.yaml", parameters={})
    assert info.value.field == "provider"
    with pytest.raises(InvalidInput, match="no provider named 'aws'"):  # --provider wins
        request_deployment(
            pctx, settings, text, source="webapp.yaml", parameters={}, provider="aws"
        )


# --- the command -------------------------------------------------------------------------


def provisor(
    *args: str, home: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PROVISOR_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    full_env.pop("PROVISOR_DATABASE_URL", None)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "provisor", *args],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,  # not a terminal: the secret is never asked for
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


ADD_LAB = (
    "providers",
    "add",
    "lab",
    "--type",
    "ec2",
    "--endpoint",
    UNREACHABLE,
    "--region",
    "us-east-1",
    "--access-key-id",
    KEY_ID,
    "--max-attempts",
    "1",
)


def test_cli_round_trip_never_prints_the_secret(home: Path) -> None:
    with_secret = {"PROVISOR_SECRET_ACCESS_KEY": SECRET}
    added = provisor(
        *ADD_LAB,
        "--zone",
        "us-east-1a",
        "--instance-type",
        "2x4096=m1.medium",
        "--instance-type",
        "4x8192=m1.large",
        "--image",
        "debian-12=ami-12345678",
        "--address-map",
        "map.json",
        home=home,
        env=with_secret,
    )
    assert "added provider lab" in added.stdout
    outputs = [added.stdout]
    shown = json.loads(provisor("providers", "show", "lab", "--output", "json", home=home).stdout)
    assert shown["has_secret"] is True and "secret_access_key" not in shown
    assert shown["settings"]["instance_types"] == {"2x4096": "m1.medium", "4x8192": "m1.large"}
    assert shown["settings"]["images"] == {"debian-12": "ami-12345678"}
    assert Path(shown["settings"]["address_map"]).is_absolute()
    listed = json.loads(provisor("providers", "list", "--output", "json", home=home).stdout)
    assert [(p["name"], p["kind"]) for p in listed] == [("local", "local"), ("lab", "ec2")]
    table = provisor("providers", "list", home=home).stdout
    assert "lab" in table and "us-east-1" in table and "2 provider(s)" in table
    text = provisor("providers", "show", "lab", home=home).stdout
    assert "stored sealed" in text and KEY_ID in text
    events = provisor("events", "--output", "json", home=home).stdout
    assert [e["kind"] for e in json.loads(events)] == ["provider.added"]
    outputs += [json.dumps(shown), json.dumps(listed), table, text, events]
    outputs.append(provisor("events", home=home).stdout)
    assert not any(SECRET in out for out in outputs)
    assert SECRET.encode() not in database_bytes(f"sqlite:///{home / 'provisor.db'}")
    provisor("providers", "remove", "lab", home=home)
    gone = provisor("providers", "show", "lab", home=home, check=False)
    assert gone.returncode == 2 and "error: name: no provider named 'lab'" in gone.stderr


def test_cli_secret_only_from_the_environment(home: Path) -> None:
    missing = provisor(*ADD_LAB, home=home, check=False)
    assert missing.returncode == 2
    assert "secret_access_key" in missing.stderr and "PROVISOR_SECRET_ACCESS_KEY" in missing.stderr
    stray = provisor(
        "providers",
        "add",
        "lab",
        "--type",
        "ec2",
        "--region",
        "us-east-1",
        home=home,
        check=False,
        env={"PROVISOR_SECRET_ACCESS_KEY": SECRET},
    )
    assert stray.returncode == 2 and "access_key_id" in stray.stderr
    assert SECRET not in stray.stderr
    assert "--secret" not in provisor("providers", "add", "--help", home=home).stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--region", "US"], "error: region: invalid region 'US'"),
        (["--endpoint", "ftp://127.0.0.1"], "error: endpoint: invalid endpoint"),
        (["--instance-type", "big=m5.large"], "error: instance_types: invalid size 'big'"),
        (["--instance-type", "2x4096"], "error: instance_types: expected CPUxMEMORY_MB=TYPE"),
        (["--address", "elastic"], "error: address: "),
        (["--ssh-source", "10.0.0.300"], "error: ssh_source: invalid CIDR '10.0.0.300'"),
        (["--type", "gce"], "error: type: unknown provider type 'gce'"),
    ],
)
def test_cli_bad_settings_name_the_field(home: Path, extra: list[str], message: str) -> None:
    result = provisor(
        *ADD_LAB, *extra, home=home, check=False, env={"PROVISOR_SECRET_ACCESS_KEY": SECRET}
    )
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_cli_duplicate_and_reserved(home: Path) -> None:
    env = {"PROVISOR_SECRET_ACCESS_KEY": SECRET}
    provisor(*ADD_LAB, home=home, env=env)
    again = provisor(*ADD_LAB, home=home, check=False, env=env)
    assert again.returncode == 2
    assert again.stderr == "error: name: a provider named 'lab' already exists\n"
    reserved = ["providers", "add", "local", "--type", "ec2", "--region", "us-east-1"]
    local = provisor(*reserved, home=home, check=False)
    assert local.returncode == 2 and "built-in provider" in local.stderr
    shown = json.loads(provisor("providers", "show", "local", "--output", "json", home=home).stdout)
    assert shown["kind"] == "local" and shown["created_at"] is None


def test_cli_check_unreachable_exits_1(home: Path) -> None:
    provisor(*ADD_LAB, home=home, env={"PROVISOR_SECRET_ACCESS_KEY": SECRET})
    result = provisor("providers", "check", "lab", home=home, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: provider: ") and result.stderr.count("\n") == 1
    assert "127.0.0.1:9" in result.stderr and result.stderr.rstrip().endswith(" s)")
    assert SECRET not in result.stderr + result.stdout
    events = json.loads(provisor("events", "--output", "json", home=home).stdout)
    assert [(e["kind"], e["outcome"]) for e in events][-1] == ("provider.checked", "failed")
    missing = provisor("providers", "check", "nope", home=home, check=False)
    assert missing.returncode == 2 and "no provider named 'nope'" in missing.stderr


def test_cli_check_reaches_moto(home: Path, moto: Any) -> None:
    provisor(
        *ADD_LAB, "--endpoint", moto.url, home=home, env={"PROVISOR_SECRET_ACCESS_KEY": SECRET}
    )
    result = provisor("providers", "check", "lab", home=home)
    line = result.stdout.strip()
    assert line.startswith("lab: ok: ") and moto.url in line and line.endswith(" s)")
    assert "\n" not in line


def test_cli_remove_refused_while_deployed_and_tenants_isolated(home: Path) -> None:
    env = {"PROVISOR_SECRET_ACCESS_KEY": SECRET}
    provisor(*ADD_LAB, home=home, env=env)
    store = Store(f"sqlite:///{home / 'provisor.db'}")
    try:
        add_deployment(store, "shop", tenant="default", provider="lab")
    finally:
        store.close()
    refused = provisor("providers", "remove", "lab", home=home, check=False)
    assert refused.returncode == 2
    assert "error: name: provider 'lab' is used by deployment(s) shop" in refused.stderr
    other = {"PROVISOR_TENANT": "acme"}
    listed = json.loads(
        provisor("providers", "list", "--output", "json", home=home, env=other).stdout
    )
    assert [p["name"] for p in listed] == ["local"]
    hidden = provisor("providers", "show", "lab", home=home, check=False, env=other)
    assert hidden.returncode == 2 and "no provider named 'lab'" in hidden.stderr
    provisor("--tenant", "acme", *ADD_LAB, home=home, env=env)
    provisor("providers", "remove", "lab", home=home, env=other)  # acme's, not default's
    assert "lab" in provisor("providers", "show", "lab", home=home).stdout


# --- the API -----------------------------------------------------------------------------


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=store.url, home=tmp_path / "home")
    token = token_for(store, tenants=("default", "alpha", "beta"), home=settings.home)
    with api_client(settings, token) as client:
        yield client


def lab_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "lab",
        "kind": "ec2",
        "settings": ec2_settings(),
        "secret_access_key": SECRET,
    }
    body.update(changes)
    return body


def test_api_crud(client: TestClient, store: Store) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/providers", "/api/v1/providers/{name}/check"} <= set(spec["paths"])
    created = client.post("/api/v1/providers", json=lab_body())
    assert created.status_code == 201, created.text
    assert created.json()["has_secret"] is True
    listed = client.get("/api/v1/providers")
    assert [p["name"] for p in listed.json()] == ["local", "lab"]
    shown = client.get("/api/v1/providers/lab")
    assert shown.json()["settings"]["endpoint"] == UNREACHABLE
    events = client.get("/api/v1/events")
    for response in (created, listed, shown, events):
        assert SECRET not in response.text
    assert client.delete("/api/v1/providers/lab").status_code == 204
    assert client.get("/api/v1/providers/lab").status_code == 404
    kinds = [e["kind"] for e in client.get("/api/v1/events?kind=provider.").json()]
    assert kinds == ["provider.added", "provider.removed"]


@pytest.mark.parametrize(
    ("body", "status", "field", "fragment"),
    [
        (lab_body(settings=ec2_settings(region="US")), 400, "region", "invalid region"),
        (lab_body(settings=ec2_settings(endpoint="nope")), 400, "endpoint", "invalid endpoint"),
        (
            lab_body(settings=ec2_settings(instance_types={"2x": "t3.micro"})),
            400,
            "instance_types",
            "invalid size",
        ),
        (lab_body(settings=ec2_settings(ssh_source="::1/64")), 400, "ssh_source", "::/64"),
        (lab_body(kind="gce"), 422, "kind", "unknown provider type"),
        (lab_body(name="local"), 409, "name", "built-in"),
        (lab_body(secret_access_key=None), 400, "secret_access_key", "give its"),
        (lab_body(password="x"), 422, "password", "Extra inputs"),
    ],
)
def test_api_bad_input_names_the_field(
    client: TestClient, body: dict[str, Any], status: int, field: str, fragment: str
) -> None:
    response = client.post("/api/v1/providers", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and fragment in error["message"]
    assert SECRET not in response.text
    assert [p["name"] for p in client.get("/api/v1/providers").json()] == ["local"]


def test_api_duplicate_check_and_in_use(client: TestClient, store: Store) -> None:
    client.post("/api/v1/providers", json=lab_body())
    again = client.post("/api/v1/providers", json=lab_body())
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"
    checked = client.post("/api/v1/providers/lab/check")
    assert checked.status_code == 502
    error = checked.json()["error"]
    assert error["field"] == "provider" and "127.0.0.1:9" in error["message"]
    add_deployment(store, "shop", tenant="default", provider="lab")
    refused = client.delete("/api/v1/providers/lab")
    assert refused.status_code == 409 and "shop" in refused.json()["error"]["message"]


def test_api_tenants_are_isolated(client: TestClient) -> None:
    alpha, beta = {"X-Provisor-Tenant": "alpha"}, {"X-Provisor-Tenant": "beta"}
    assert client.post("/api/v1/providers", json=lab_body(), headers=alpha).status_code == 201
    assert [p["name"] for p in client.get("/api/v1/providers", headers=beta).json()] == ["local"]
    assert client.get("/api/v1/providers/lab", headers=beta).status_code == 404
    assert client.delete("/api/v1/providers/lab", headers=beta).status_code == 404
    assert client.post("/api/v1/providers/lab/check", headers=beta).status_code == 404
    assert client.get("/api/v1/providers/lab", headers=alpha).status_code == 200
