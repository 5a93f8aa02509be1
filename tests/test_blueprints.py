"""Blueprints: the schema, located errors, inputs, expansion, outputs, cost; the
store, the CLI and the API over them; the examples, run end to end."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from api_access import api_client, token_for
from provisor.core import yamlpos
from provisor.core.blueprint import (
    Blueprint,
    MachinePlan,
    estimate_cost,
    expand,
    load_blueprint,
    node_order,
    render_outputs,
    resolve_inputs,
    schema_text,
    version_key,
)
from provisor.core.errors import Conflict, NotFound, ParseErrors
from provisor.services import blueprints as service
from provisor.services.context import Context
from provisor.services.events import list_events
from provisor.settings import Settings
from provisor.store import Base, Store
from provisor.store.db import _alembic_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "blueprints"
SECRET = "correct-horse-battery-staple"


def example(name: str) -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


def errors_of(text: str, source: str = "bp.yaml") -> list[tuple[int | None, int | None, str]]:
    """(line, column, field) of every error; the messages are checked separately."""
    with pytest.raises(ParseErrors) as info:
        load_blueprint(text, source)
    assert all(e.source == source for e in info.value.errors)
    return [(e.line, e.column, e.field or "") for e in info.value.errors]


def messages_of(text: str) -> str:
    with pytest.raises(ParseErrors) as info:
        load_blueprint(text)
    return "\n".join(e.message for e in info.value.errors)


MINIMAL = """\
name: tiny
version: "1"
nodes:
  box:
    image: debian-12
"""


# ---------------------------------------------------------------------------
# The examples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["webapp", "cluster", "sap-2tier"])
def test_examples_are_valid_and_round_trip(name: str) -> None:
    bp = load_blueprint(example(name), f"{name}.yaml")
    again = load_blueprint(yaml.safe_dump(bp.model_dump(mode="json"), sort_keys=False))
    assert again == bp


def test_webapp_expands() -> None:
    bp = load_blueprint(example("webapp"))
    assert node_order(bp) == [["db", "app", "lb"]]
    plans = expand(bp, resolve_inputs(bp, {}), deployment="shop")
    assert [(p.name, p.hostname) for p in plans] == [
        ("shop-db-1", "db"),
        ("shop-app-1", "app1"),
        ("shop-app-2", "app2"),
        ("shop-lb-1", "lb"),
    ]
    lb = plans[-1]
    assert lb.waits_for == ("app.1.ready", "app.2.ready", "app.1.address", "app.2.address")
    assert lb.key == "lb.1" and lb.publishes == ("ready",)
    assert lb.env["PROVISOR_COUNT_APP"] == "2" and lb.env["APP_PORT"] == "8080"
    assert lb.env["GREETING"] == "hello" and lb.env["PROVISOR_MACHINE"] == "shop-lb-1"
    assert plans[0].volumes[0].size_gb == 10 and plans[0].volumes[0].mount == "/srv/kv"
    assert [n.ip for n in lb.networks] == ["static", "dhcp"]


def test_cluster_expands_with_a_parameter_count() -> None:
    bp = load_blueprint(example("cluster"))
    plans = expand(bp, resolve_inputs(bp, {"workers": "5"}), deployment="c1")
    assert [p.hostname for p in plans] == ["head"] + [f"worker{i}" for i in range(1, 6)]
    assert all(p.waits_for == ("head.1.ready", "head.1.port", "head.1.address") for p in plans[1:])
    assert plans[0].env["PROVISOR_COUNT_WORKER"] == "5"
    assert resolve_inputs(bp, {"workers": "299"})["workers"] == 299  # 300 machines
    with pytest.raises(ParseErrors, match="above the maximum 299"):
        resolve_inputs(bp, {"workers": "300"})


def test_firewall_addresses_devices_and_provider() -> None:
    """What providers with firewalls, public addresses and block devices read."""
    text = (
        MINIMAL.replace(
            "nodes:",
            "provider: lab\n"
            "ingress:\n"
            "  - {protocol: tcp, ports: 8000-8100}\n"
            "  - {protocol: icmp, source: 10.1.2.3/8}\n"
            "nodes:",
        )
        + "    public_address: true\n    volumes: [{size_gb: 2, mount: /srv, device: /dev/sdg}]\n"
    )
    bp = load_blueprint(text)
    assert bp.provider == "lab"
    assert [(r.protocol, r.ports, r.source) for r in bp.ingress] == [
        ("tcp", (8000, 8100), "0.0.0.0/0"),
        ("icmp", None, "10.0.0.0/8"),
    ]
    (plan,) = expand(bp, {}, deployment="d")
    assert plan.public_address and plan.ingress == bp.ingress
    assert plan.volumes[0].device == "/dev/sdg"
    bad = (
        MINIMAL.replace(
            "nodes:",
            "provider: Not A Name\n"
            "ingress:\n"
            "  - {protocol: tcp}\n"
            "  - {protocol: sctp, ports: 1}\n"
            "  - {ports: 70000}\n"
            "  - {ports: 22, source: 10.0.0.300/8}\n"
            "nodes:",
        )
        + "    volumes: [{size_gb: 2, mount: /srv, device: sdf}]\n"
    )
    assert errors_of(bad) == [
        (3, 11, "provider"),
        (5, 5, "ingress.0"),
        (6, 16, "ingress.1.protocol"),
        (7, 13, "ingress.2.ports"),
        (8, 25, "ingress.3.source"),
        (12, 49, "nodes.box.volumes.0.device"),
    ]
    shown = messages_of(bad)
    assert "tcp needs ports" in shown and "invalid CIDR '10.0.0.300/8'" in shown
    assert "invalid device 'sdf'" in shown and "invalid ports '70000'" in shown
    assert "provider: invalid" not in shown  # the field is named once, by the position


def test_sap_hostnames_come_from_the_completion() -> None:
    bp = load_blueprint(example("sap-2tier"))
    assert bp.approval == "required" and bp.lease_duration is not None
    assert bp.lease_duration.days == 30
    inputs = resolve_inputs(bp, {"db_password": SECRET})
    plans = expand(bp, inputs, deployment="erp", completion="john")
    assert [p.hostname for p in plans] == ["sapjohn-db", "sapjohn-app1", "sapjohn-app2"]
    assert [p.env["PROVISOR_HOSTNAME"] for p in plans] == [p.hostname for p in plans]
    one = expand(bp, {**inputs, "app_servers": 1}, deployment="erp", completion="john")
    assert [p.hostname for p in one] == ["sapjohn-db", "sapjohn-app"]
    with pytest.raises(ParseErrors) as info:
        expand(bp, inputs, deployment="erp")
    assert {e.field for e in info.value.errors} == {"completion"}
    assert "sap#-db" in str(info.value) and "--hostname-completion" in str(info.value)


# ---------------------------------------------------------------------------
# Located errors
# ---------------------------------------------------------------------------

BAD_CASES = [
    pytest.param(
        MINIMAL + "    colour: red\n",
        [(6, 5, "nodes.box.colour")],
        "unknown field 'colour'",
        id="unknown-key",
    ),
    pytest.param(
        MINIMAL + "    imgae: x\n",
        [(6, 5, "nodes.box.imgae")],
        "did you mean 'image'?",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        MINIMAL + "    size: {cpu: two}\n",
        [(6, 17, "nodes.box.size.cpu")],
        "valid integer",
        id="wrong-type",
    ),
    pytest.param(
        MINIMAL + "    count: workers\n",
        [(6, 12, "nodes.box.count")],
        "count refers to unknown parameter 'workers'",
        id="count-missing-parameter",
    ),
    pytest.param(
        MINIMAL + "    count: mode\nparameters:\n  mode: {type: string, default: x}\n",
        [(6, 12, "nodes.box.count")],
        "it must be an int parameter",
        id="count-not-int",
    ),
    pytest.param(
        "name: t\nversion: '1'\nnodes:\n  box:\n    count: -1\n    image: x\n",
        [(5, 12, "nodes.box.count")],
        "count must be between 0 and 1000",
        id="count-negative",
    ),
    pytest.param(
        """\
name: t
version: "1"
nodes:
  a:
    image: x
    depends_on: [c]
  b:
    image: x
    depends_on: [a]
  c:
    image: x
    depends_on: [b]
""",
        [(6, 18, "nodes.a.depends_on.0")],
        "dependency cycle: a -> c -> b -> a",
        id="depends-on-cycle",
    ),
    pytest.param(
        """\
name: t
version: "1"
nodes:
  a:
    image: x
    waits_for: [b.ready]
    publishes: [ready]
  b:
    image: x
    waits_for: [a.ready]
    publishes: [ready]
""",
        [(6, 17, "nodes.a.waits_for.0")],
        "dependency cycle: a -> b -> a",
        id="waits-for-cycle",
    ),
    pytest.param(
        MINIMAL + "    waits_for: [db.ready]\n",
        [(6, 17, "nodes.box.waits_for.0")],
        "unknown node 'db'",
        id="waits-for-unknown-node",
    ),
    pytest.param(
        MINIMAL
        + "    waits_for: [box.2.address]\n  db:\n    image: x\n    waits_for: [box.ready]\n",
        [(6, 17, "nodes.box.waits_for.0"), (9, 17, "nodes.db.waits_for.0")],
        "node 'box' does not publish 'ready'",
        id="waits-for-unknown-key",
    ),
    pytest.param(
        MINIMAL + "    waits_for: [box.ready]\n    publishes: [ready]\n",
        [(6, 17, "nodes.box.waits_for.0")],
        "cannot wait for its own runtime parameter",
        id="waits-for-itself",
    ),
    pytest.param(
        MINIMAL + "    waits_for: [db]\n",
        [(6, 17, "nodes.box.waits_for.0")],
        "use NODE.KEY",
        id="waits-for-syntax",
    ),
    pytest.param(
        MINIMAL + "    publishes: [host_keys]\n",
        [(6, 17, "nodes.box.publishes.0")],
        "'host_keys' is reported by each machine at first boot",
        id="publishes-host-keys",
    ),
    pytest.param(
        MINIMAL + "outputs:\n  url: 'http://{{ lb.1.address }}:8080/'\n",
        [(7, 8, "outputs.url")],
        "unknown node 'lb'",
        id="output-unknown-node",
    ),
    pytest.param(
        MINIMAL + "outputs:\n  url: 'http://{{ box.1.address }:8080/'\n",
        [(7, 8, "outputs.url")],
        "unclosed '{{'",
        id="output-syntax",
    ),
    pytest.param(
        MINIMAL + "outputs:\n  n: '{{ box.2.hostname }}'\n  p: '{{ params.nope }}'\n",
        [(7, 6, "outputs.n"), (8, 6, "outputs.p")],
        "node 'box' has 1 machine(s)",
        id="output-index-and-parameter",
    ),
    pytest.param(
        MINIMAL + "parameters:\n  size:\n    type: enum\n    choices: [s, m]\n    default: xl\n",
        [(10, 14, "parameters.size.default")],
        "'xl' is not one of: s, m",
        id="bad-enum-default",
    ),
    pytest.param(
        MINIMAL + "parameters:\n  pw:\n    type: secret\n    default: hunter2hunter2\n",
        [(9, 14, "parameters.pw.default")],
        "a secret parameter cannot have a default",
        id="secret-with-default",
    ),
    pytest.param(
        MINIMAL + "parameters:\n  port: {type: int, default: 80, min: 1024}\n",
        [(7, 30, "parameters.port.default")],
        "80 is below the minimum 1024",
        id="default-out-of-range",
    ),
    pytest.param(
        MINIMAL + "parameters:\n  Port: {type: int}\n  path: {}\n",
        [(7, 3, "parameters.Port"), (8, 3, "parameters.path")],
        "reserved",
        id="parameter-names",
    ),
    pytest.param(
        MINIMAL + "    hostname: 'db_#'\n",
        [(6, 15, "nodes.box.hostname")],
        "invalid hostname pattern",
        id="hostname-pattern",
    ),
    pytest.param(
        "name: t\nversion: '1'\nnodes:\n  box:\n    count: 1\n",
        [(5, 5, "nodes.box.image")],
        "missing required field 'image'",
        id="missing-field-at-its-mapping",
    ),
    pytest.param(
        "name: t\nversion: '1'\nnodes:\n  box:\n    image: x\n    image: y\n",
        [(6, 5, None)],
        "duplicate key 'image' (first at line 5)",
        id="duplicate-key",
    ),
    pytest.param(
        "name: t\nversion: '1'\nnodes:\n  box:\n    image: [x\n",
        [(6, 1, None)],
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        "name: t\nversion: '1'\nnodes:\n  box:\n   image: x\n  bad indent: 1\n zz: 2\n",
        [(7, 2, None)],
        "invalid YAML",
        id="yaml-indentation",
    ),
    pytest.param("- a\n- b\n", [(1, 1, None)], "a blueprint is a YAML mapping", id="not-a-mapping"),
    pytest.param(
        MINIMAL + "cost:\n  machine_hour: {2x4096: 0.1}\n",
        [(5, 5, "nodes.box.size")],
        "no machine-hour price for size '1x512'",
        id="unpriced-size",
    ),
    pytest.param(
        MINIMAL + "lease: forever\napproval: maybe\n",
        [(6, 8, "lease"), (7, 11, "approval")],
        "invalid lease 'forever'",
        id="lease-and-approval",
    ),
    pytest.param(
        MINIMAL + "    volumes: [{size_gb: 0, mount: data}]\n    user_data: 'echo hi'\n",
        [
            (6, 25, "nodes.box.volumes.0.size_gb"),
            (6, 35, "nodes.box.volumes.0.mount"),
            (7, 16, "nodes.box.user_data"),
        ],
        "user data must be a cloud-init file",
        id="volumes-and-user-data",
    ),
]


@pytest.fixture(params=["libyaml", "python"])
def yaml_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions and errors are the same with PyYAML's C reader and its Python one (the
    fallback where PyYAML was built without libyaml)."""
    if request.param == "python":
        monkeypatch.setattr(yamlpos, "_Loader", yamlpos._PureLoader)


@pytest.mark.usefixtures("yaml_reader")
@pytest.mark.parametrize(("text", "where", "fragment"), BAD_CASES)
def test_errors_are_located(
    text: str, where: list[tuple[int, int, str | None]], fragment: str
) -> None:
    found = errors_of(text)
    assert found == [(line, column, field or "") for line, column, field in where]
    assert fragment in messages_of(text)


@pytest.mark.usefixtures("yaml_reader")
def test_every_error_is_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        name: shop
        version: 1.10
        colour: red
        parameters:
          workers: {type: int, default: 3}
          mode: {type: enum, choices: [a, b], default: c}
          pw: {type: secret, default: hunter2}
        nodes:
          db:
            image: debian-12
            imgae: x
            count: many
            depends_on: [app]
            publishes: [ready]
          app:
            image: debian-12
            count: wrkers
            size: {cpu: two}
            depends_on: [db]
            waits_for: [db.ready, db.done, cache.1.x]
          web:
            hostname: "web#"
        outputs:
          url: "http://{{ lb.1.address }}:8080/"
          bad: "{{ oops"
        """
    )
    fields = [field for _, _, field in errors_of(text)]
    assert fields == [
        "colour",
        "parameters.mode.default",
        "parameters.pw.default",
        "nodes.db.imgae",
        "nodes.db.count",
        "nodes.app.count",
        "nodes.app.size.cpu",
        "nodes.app.waits_for.0",  # the cycle db <-> app
        "nodes.app.waits_for.1",
        "nodes.app.waits_for.2",
        "nodes.web.image",
        "outputs.url",
        "outputs.bad",
    ]
    assert "did you mean 'workers'?" in messages_of(text)


def test_parse_errors_print_as_file_line_column() -> None:
    with pytest.raises(ParseErrors) as info:
        load_blueprint(MINIMAL + "    colour: red\n", "shop.yaml")
    assert str(
        info.value
    ) == "shop.yaml:6:5: unknown field 'colour'; expected one of: " + ", ".join(
        [
            "description",
            "count",
            "image",
            "size",
            "hostname",
            "volumes",
            "networks",
            "public_address",
            "user_data",
            "scripts",
            "depends_on",
            "publishes",
            "waits_for",
            "backup",
            "checks",
            "recovery",
        ]
    )


@pytest.mark.usefixtures("yaml_reader")
def test_yaml_quirks() -> None:
    bp = load_blueprint(
        MINIMAL.replace('"1"', "1.10")
        + "parameters:\n  label: {default: 1.50}\n  answer: {type: enum, choices: [yes, no]}\n"
    )
    assert bp.version == "1.10"
    assert bp.parameters["label"].default == "1.50"
    assert bp.parameters["answer"].choices == ("yes", "no")
    merged = load_blueprint(
        "name: t\nversion: '1'\nnodes:\n  a: &base\n    image: x\n    size: {cpu: 2}\n"
        "  b:\n    <<: *base\n    count: 3\n"
    )
    assert merged.nodes["b"].size.cpu == 2 and merged.nodes["b"].count == 3
    assert errors_of("a: &x [*x]\n") == [(1, 4, "")]
    assert errors_of("name: !!python/object:os.system x\n") == [(1, 7, "")]
    assert errors_of("a: 2001-13-45\nb: \x07\n")[0][0] == 2


@pytest.mark.usefixtures("yaml_reader")
def test_deep_nesting_is_refused_at_the_limit() -> None:
    # Refused where the 65th level opens: the reader stops there instead of scanning
    # (PyYAML's Python scanner slows down with the square of the depth). Past 1,000
    # levels newer libyaml stops at its own limit first; provisor's still answers.
    assert errors_of("[" * 200_000) == [(1, 65, "")]
    assert errors_of("{a: " * 5000) == [(1, 257, "")]
    assert errors_of("a:\n" + "- " * 1000 + "x") == [(2, 127, "")]
    assert errors_of("a:\n" + "- " * 3000 + "x") == [(2, 127, "")]
    assert messages_of("[" * 2000) == "nested more than 64 levels deep"


def test_the_documented_example() -> None:
    doc = (ROOT / "docs" / "blueprints.md").read_text()
    text = doc.split("## A complete example")[1].split("```yaml\n")[1].split("```")[0]
    bp = load_blueprint(text, "blueprints.md")
    plans = expand(bp, resolve_inputs(bp, {"replicas": "3"}), deployment="D", completion="ann")
    assert [(p.name, p.hostname) for p in plans] == [
        ("D-web-1", "web-ann1"),
        ("D-web-2", "web-ann2"),
        ("D-web-3", "web-ann3"),
    ]


def test_version_order() -> None:
    versions = ["1.10", "1.9", "2.0", "2.0-rc1", "1.9.1", "10", "1.0"]
    assert sorted(versions, key=version_key) == [
        "1.0",
        "1.9",
        "1.9.1",
        "1.10",
        "2.0-rc1",
        "2.0",
        "10",
    ]


# ---------------------------------------------------------------------------
# Inputs and secrets
# ---------------------------------------------------------------------------

INPUTS = MINIMAL + textwrap.indent(
    textwrap.dedent(
        """\
        parameters:
          port: {type: int, default: 8080, min: 1024, max: 65535}
          debug: {type: bool, default: false}
          tier: {type: enum, choices: [dev, prod], default: dev}
          owner: {type: string, pattern: "[a-z]+", max: 8}
          password: {type: secret, min: 12}
        """
    ),
    "",
)


def test_inputs_are_typed() -> None:
    bp = load_blueprint(INPUTS)
    values = resolve_inputs(
        bp, {"port": " 9000 ", "debug": "Yes", "owner": "ann", "password": SECRET}
    )
    assert values["port"] == 9000 and values["debug"] is True and values["tier"] == "dev"
    assert isinstance(values["password"], SecretStr)
    assert values["password"].get_secret_value() == SECRET
    assert (
        resolve_inputs(bp, {"port": 2000, "debug": False, "owner": "b", "password": SECRET})["port"]
        == 2000
    )


def test_input_problems_are_reported_together() -> None:
    bp = load_blueprint(INPUTS)
    with pytest.raises(ParseErrors) as info:
        resolve_inputs(
            bp, {"port": "80", "debug": "maybe", "tier": "qa", "prot": "1", "password": "short"}
        )
    found = {e.field: e.message for e in info.value.errors}
    assert found == {
        "parameters.prot": "unknown parameter 'prot' (did you mean 'port'?); "
        "the blueprint's parameters: port, debug, tier, owner, password",
        "parameters.port": "80 is below the minimum 1024",
        "parameters.debug": "expected true or false (or yes/no), got 'maybe'",
        "parameters.tier": "'qa' is not one of: dev, prod",
        "parameters.owner": "missing required parameter 'owner' (string, no default)",
        "parameters.password": "the value is shorter than 12 characters",
    }
    with pytest.raises(ParseErrors, match="does not match the pattern"):
        resolve_inputs(bp, {"owner": "Ann", "password": SECRET})
    with pytest.raises(ParseErrors, match="expected a whole number, got 'lots'"):
        resolve_inputs(bp, {"owner": "a", "password": SECRET, "port": "lots"})


def test_secrets_never_show() -> None:
    bp = load_blueprint(example("sap-2tier"))
    inputs = resolve_inputs(bp, {"db_password": SECRET})
    plans = expand(bp, inputs, deployment="erp", completion="j")
    assert plans[0].env["DB_PASSWORD"] == SECRET  # the scripts need it
    assert plans[0].secret_env == frozenset({"DB_PASSWORD"})
    shown = [repr(inputs), str(inputs), repr(plans), str(plans), bp.model_dump_json()]
    shown += [json.dumps(inputs, default=str), repr(bp.model_dump())]
    assert not any(SECRET in text for text in shown)
    with pytest.raises(ParseErrors) as info:
        resolve_inputs(bp, {"db_password": "x" * 200})
    assert "x" * 20 not in str(info.value)


# ---------------------------------------------------------------------------
# Expansion, order, outputs, cost
# ---------------------------------------------------------------------------

ORDERED = """\
name: stack
version: "1"
parameters:
  replicas: {type: int, default: 2}
nodes:
  lb: {image: x, depends_on: [web], waits_for: [web.ready]}
  web: {image: x, count: replicas, depends_on: [db], publishes: [ready], hostname: web2}
  db: {image: x, publishes: [ready]}
  cache: {image: x}
outputs:
  entry: "http://{{ lb.1.address }}:{{ params.replicas }}/{{ web.1.hostname }}"
"""


def test_waves_hostnames_and_waits() -> None:
    bp = load_blueprint(ORDERED)
    assert node_order(bp) == [["db", "cache"], ["web"], ["lb"]]
    plans = expand(bp, {"replicas": "3"}, deployment="s")
    assert [p.hostname for p in plans] == ["db", "cache", "web2-1", "web2-2", "web2-3", "lb"]
    assert plans[-1].waits_for == ("web.1.ready", "web.2.ready", "web.3.ready")
    assert plans[-1].depends_on == ("web",)
    assert isinstance(plans[0], MachinePlan) and plans[0].env["PROVISOR_INDEX"] == "1"
    assert plans[0].env["REPLICAS"] == "3" and plans[0].env["PROVISOR_DEPLOYMENT"] == "s"
    assert expand(bp, {"replicas": "0"}, deployment="s")[-1].waits_for == ()


def test_expansion_errors() -> None:
    bp = load_blueprint(ORDERED.replace("hostname: web2", "hostname: db"))
    with pytest.raises(ParseErrors, match="would both be named 'db'"):
        expand(bp, {"replicas": "1"}, deployment="s")
    long = load_blueprint(MINIMAL + "    hostname: 'a#'\n    count: 2\n")
    with pytest.raises(ParseErrors, match="not a valid DNS label"):
        expand(long, {}, deployment="s", completion="x" * 62)
    with pytest.raises(ParseErrors) as info:
        expand(long, {}, deployment="bad name", completion="-bad_")
    assert {e.field for e in info.value.errors} == {"deployment", "completion"}
    waits = load_blueprint(ORDERED.replace("waits_for: [web.ready]", "waits_for: [web.3.ready]"))
    with pytest.raises(ParseErrors, match="'web' has 2 machine"):
        expand(waits, {}, deployment="s")


def test_outputs_render() -> None:
    bp = load_blueprint(ORDERED)
    params = {"lb.1.address": "10.0.0.9", "web.1.hostname": "web2-1"}
    assert render_outputs(bp, params, inputs={"replicas": 2}) == {
        "entry": "http://10.0.0.9:2/web2-1"
    }
    with pytest.raises(ParseErrors) as info:
        render_outputs(bp, {"web.1.hostname": "w"})
    assert [e.message for e in info.value.errors] == [
        "runtime parameter 'lb.1.address' is not set",
        "input 'replicas' is not given",
    ]
    assert {e.field for e in info.value.errors} == {"outputs.entry"}


def test_cost_estimate() -> None:
    bp = load_blueprint(example("sap-2tier"))
    inputs = resolve_inputs(bp, {"db_password": SECRET, "app_servers": "3"})
    cost = estimate_cost(bp, inputs, hours=10)
    assert cost["currency"] == "EUR" and cost["machines"] == 4
    assert cost["volume_gb"] == 120 + 3 * 30 and cost["addresses"] == 1 + 3 * 2
    assert cost["machine_cost"] == pytest.approx(10 * (0.48 + 3 * 0.24))
    assert cost["total"] == pytest.approx(
        cost["machine_cost"] + 210 * 0.00014 * 10 + 7 * 0.004 * 10, abs=1e-4
    )
    assert cost["nodes"]["app"]["size"] == "2x8192"
    free = estimate_cost(load_blueprint(MINIMAL), {}, hours=5)
    assert free["total"] == 0 and free["currency"] is None


# ---------------------------------------------------------------------------
# The JSON Schema and arbitrary input
# ---------------------------------------------------------------------------


def test_json_schema_is_current() -> None:
    current = (ROOT / "docs" / "blueprint.schema.json").read_text()
    # Compared as JSON: pydantic releases differ only in how they print a number (0 or 0.0).
    assert json.loads(current) == json.loads(schema_text()), (
        "docs/blueprint.schema.json is stale: run .venv/bin/python -c 'from "
        'provisor.core.blueprint import schema_text; print(schema_text(), end="")\' '
        "> docs/blueprint.schema.json"
    )
    schema = json.loads(current)
    assert {"name", "version", "nodes"} <= set(schema["required"])
    assert set(Blueprint.model_fields) == set(schema["properties"])


_KEYS = st.sampled_from(
    [
        "name",
        "version",
        "nodes",
        "image",
        "count",
        "parameters",
        "type",
        "default",
        "outputs",
        "waits_for",
        "depends_on",
        "publishes",
        "hostname",
        "cost",
        "app",
        "db",
        "x",
        "<<",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["db.ready", "app.1.address", "{{ db.1.address }}", "int", "secret", "x#"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), _VALUES.map(yaml.safe_dump)))
def test_load_never_raises_anything_but_parse_errors(text: str) -> None:
    try:
        load_blueprint(text)
    except ParseErrors as exc:
        assert exc.errors and all(e.line is not None or e.field for e in exc.errors)


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


def test_migration_matches_the_model(store: Store) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "blueprints" in repr(d)] == []
    if store.engine.dialect.name == "sqlite":
        config = _alembic_config(store.engine)
        command.downgrade(config, "0002")
        command.upgrade(config, "head")


def test_add_list_get(ctx: Context) -> None:
    first = service.add_blueprint(ctx, MINIMAL.replace('"1"', "1.9"), "tiny.yaml")
    assert (first.name, first.version, first.nodes) == ("tiny", "1.9", {"box": 1})
    newer = MINIMAL.replace('"1"', "1.10").replace("debian-12", "debian-13")
    service.add_blueprint(ctx, newer, "tiny.yaml")
    service.add_blueprint(ctx, newer, "tiny.yaml")  # the same text again: nothing to do
    assert [v.version for v in service.list_blueprints(ctx)] == ["1.9", "1.10"]
    latest = service.get_blueprint(ctx, "tiny")
    assert latest.version == "1.10" and latest.text == newer
    assert service.get_blueprint(ctx, "tiny", "1.9").text.count("debian-12") == 1
    with pytest.raises(Conflict, match="stored versions never change"):
        service.add_blueprint(ctx, newer.replace("debian-13", "debian-14"), "tiny.yaml")
    with pytest.raises(NotFound, match=r"has no version '3' in the catalog; stored: 1.9, 1.10\."):
        service.get_blueprint(ctx, "tiny", "3")
    with pytest.raises(NotFound, match="no blueprint named 'nope'") as missing:
        service.get_blueprint(ctx, "nope")
    assert "blueprints add FILE" in str(missing.value) and "stored: tiny" in str(missing.value)
    with pytest.raises(ParseErrors):
        service.add_blueprint(ctx, MINIMAL + "    colour: red\n", "bad.yaml")
    events = [(e.kind, e.subject, e.outcome) for e in list_events(ctx)]
    assert events == [
        ("blueprint.added", "tiny", "ok"),
        ("blueprint.added", "tiny", "ok"),
        ("blueprint.added", "tiny", "ok"),
        ("blueprint.added", "tiny", "failed"),
        ("blueprint.added", "bad.yaml", "failed"),
    ]
    detail, bp = service.load_stored_blueprint(ctx, "tiny")
    assert bp.nodes["box"].image == "debian-13" and detail.sha256


def test_blueprints_are_per_tenant(store: Store) -> None:
    alpha = Context(store=store, actor="a", tenant="alpha")
    beta = Context(store=store, actor="b", tenant="beta")
    service.add_blueprint(alpha, MINIMAL)
    assert service.list_blueprints(beta) == []
    with pytest.raises(NotFound):
        service.get_blueprint(beta, "tiny")


def test_a_secret_never_reaches_the_store(ctx: Context) -> None:
    text = MINIMAL + f"parameters:\n  pw: {{type: secret, default: {SECRET}}}\n"
    with pytest.raises(ParseErrors, match="cannot have a default"):
        service.add_blueprint(ctx, text, "leak.yaml")
    assert service.list_blueprints(ctx) == []
    assert not any(SECRET in json.dumps(e.details) for e in list_events(ctx))
    service.add_blueprint(ctx, example("sap-2tier"))
    stored = service.get_blueprint(ctx, "sap-2tier")
    assert "db_password" in stored.text and SECRET not in stored.model_dump_json()


# ---------------------------------------------------------------------------
# The CLI, as a user runs it
# ---------------------------------------------------------------------------


def provisor(*args: str, home: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
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
    assert result.returncode == code, result.stdout + result.stderr
    return result


def test_cli_validate(home: Path, tmp_path: Path) -> None:
    good = provisor("blueprints", "validate", str(EXAMPLES / "webapp.yaml"), home=home).stdout
    assert "webapp 1.0: valid" in good and "4 machine(s)" in good
    assert "db (1), app (2), lb (1)" in good and "app_port (int, = 8080)" in good
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "    colour: red\n    count: workers\n")
    result = provisor("blueprints", "validate", str(bad), home=home, code=2)
    assert result.stderr.splitlines() == [
        f"{bad}:6:5: nodes.box.colour: unknown field 'colour'; expected one of: description, "
        "count, image, size, hostname, volumes, networks, public_address, user_data, scripts, "
        "depends_on, publishes, waits_for, backup, checks, recovery",
        f"{bad}:7:12: nodes.box.count: count refers to unknown parameter 'workers'",
        "2 error(s)",
    ]
    as_json = json.loads(
        provisor("blueprints", "validate", str(bad), "--output", "json", home=home, code=2).stdout
    )
    assert as_json["valid"] is False
    assert [(e["line"], e["column"], e["field"]) for e in as_json["errors"]] == [
        (6, 5, "nodes.box.colour"),
        (7, 12, "nodes.box.count"),
    ]
    sap = str(EXAMPLES / "sap-2tier.yaml")
    weak = provisor(
        "blueprints", "validate", sap, "--param", "db_password=hunter2", home=home, code=2
    )
    assert weak.stderr.splitlines()[0] == (
        f"{sap}: parameters.db_password: the value is shorter than 12 characters"
    )
    checked = provisor(
        "blueprints",
        "validate",
        sap,
        "--param",
        f"db_password={SECRET}",
        "--param",
        "app_servers=4",
        "--output",
        "json",
        home=home,
    ).stdout
    assert json.loads(checked)["machines"] == 5 and SECRET not in checked


def test_cli_add_list_show(home: Path, tmp_path: Path) -> None:
    for name in ("webapp", "sap-2tier"):
        out = provisor("blueprints", "add", str(EXAMPLES / f"{name}.yaml"), home=home).stdout
        assert f"stored blueprint {name}" in out
    v2 = tmp_path / "webapp.yaml"
    v2.write_text(example("webapp").replace('version: "1.0"', "version: 1.10"))
    provisor("blueprints", "add", str(v2), home=home)
    changed = tmp_path / "changed.yaml"
    changed.write_text(example("webapp").replace("debian-12", "debian-13"))
    conflict = provisor("blueprints", "add", str(changed), home=home, code=2)
    assert "already stored with a different text" in conflict.stderr
    listed = json.loads(provisor("blueprints", "list", "--output", "json", home=home).stdout)
    assert [(b["name"], b["version"]) for b in listed] == [
        ("sap-2tier", "2.1"),
        ("webapp", "1.0"),
        ("webapp", "1.10"),
    ]
    table = provisor("blueprints", "list", home=home).stdout
    assert "db=1 app=app_servers" in table and "3 blueprint version(s)" in table
    assert provisor("blueprints", "show", "webapp", home=home).stdout == v2.read_text()
    old = provisor("blueprints", "show", "webapp", "--version", "1.0", home=home).stdout
    assert old == example("webapp")
    shown = json.loads(
        provisor("blueprints", "show", "sap-2tier", "--output", "json", home=home).stdout
    )
    assert shown["approval"] == "required" and shown["parameters"]["db_password"] == "secret"
    missing = provisor("blueprints", "show", "webapp", "--version", "9", home=home, code=2)
    assert "has no version '9'" in missing.stderr


# ---------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with api_client(Settings(database_url=store.url), token_for(store)) as client:
        yield client


def test_api_validate(client: TestClient) -> None:
    good = client.post(
        "/api/v1/blueprints/validate",
        json={"text": example("cluster"), "params": {"workers": 7}},
    )
    assert good.status_code == 200
    assert good.json()["machines"] == 8 and good.json()["waves"] == [["head", "worker"]]
    bad = client.post(
        "/api/v1/blueprints/validate",
        json={"text": MINIMAL + "    colour: red\n    count: x\n", "source": "mine.yaml"},
    )
    assert bad.status_code == 400
    errors = bad.json()["error"]["errors"]
    assert [(e["location"], e["field"]) for e in errors] == [
        ("mine.yaml:6:5", "nodes.box.colour"),
        ("mine.yaml:7:12", "nodes.box.count"),
    ]


def test_api_add_list_get(client: TestClient) -> None:
    created = client.post("/api/v1/blueprints", json={"text": example("webapp")})
    assert created.status_code == 201 and created.json()["nodes"] == {"db": 1, "app": 2, "lb": 1}
    newer = example("webapp").replace('version: "1.0"', 'version: "1.1"')
    assert client.post("/api/v1/blueprints", json={"text": newer}).status_code == 201
    again = client.post("/api/v1/blueprints", json={"text": newer.replace("hello", "hi")})
    assert again.status_code == 409 and again.json()["error"]["field"] == "version"
    assert [b["version"] for b in client.get("/api/v1/blueprints").json()] == ["1.0", "1.1"]
    assert client.get("/api/v1/blueprints/webapp").json()["text"] == newer
    old = client.get("/api/v1/blueprints/webapp", params={"version": "1.0"}).json()
    assert old["version"] == "1.0" and old["text"] == example("webapp")
    assert client.get("/api/v1/blueprints/nope").status_code == 404
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/blueprints/{name}" in spec["paths"]


# ---------------------------------------------------------------------------
# The examples, deployed by a stand-in orchestrator on loopback addresses
# ---------------------------------------------------------------------------

_FAKE_PARAM = r"""#!/usr/bin/env python3
import os, pathlib, sys, time
store = pathlib.Path(os.environ["FAKE_PARAMS"])
args = sys.argv[1:]
if len(args) == 3 and args[0] == "set":
    key = f"{os.environ['PROVISOR_NODE']}.{os.environ['PROVISOR_INDEX']}.{args[1]}"
    (store / (key + ".tmp")).write_text(args[2])
    (store / (key + ".tmp")).replace(store / key)
    sys.exit(0)
if len(args) >= 2 and args[0] == "get":
    keys, wait = args[1:], 0.0
    if len(keys) >= 2 and keys[-2] == "--wait":
        keys, wait = keys[:-2], float(keys[-1])
    deadline = time.monotonic() + wait  # one deadline for all the keys, as the agent's
    for key in keys:
        while not (store / key).exists():
            if time.monotonic() >= deadline:
                sys.exit(f"provisor-param: {key} is not set")
            time.sleep(0.05)
        print((store / key).read_text())
    sys.exit(0)
sys.exit("usage: provisor-param set KEY VALUE | get NODE.INDEX.KEY... [--wait SECONDS]")
"""


class _Deployment:
    """Runs each machine's scripts in its own home, with `provisor-param` on a shared
    directory; machines wait for their `waits_for` keys as the orchestrator does."""

    def __init__(self, root: Path, plans: list[MachinePlan]) -> None:
        self.root = root
        self.params = root / "params"
        self.bin = root / "bin"
        for path in (self.params, self.bin, root / "machines"):
            path.mkdir(parents=True)
        fake = self.bin / "provisor-param"
        fake.write_text(_FAKE_PARAM)
        fake.chmod(0o755)
        net = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"
        for i, plan in enumerate(plans, start=1):
            (self.params / f"{plan.key}.address").write_text(f"{net}.{i}")
            (self.params / f"{plan.key}.hostname").write_text(plan.hostname)
        self.plans = plans
        self.outputs: dict[tuple[str, int], str] = {}  # (machine, script) -> stdout+stderr

    def run(self, plan: MachinePlan) -> None:
        deadline = time.monotonic() + 60
        for key in plan.waits_for:
            while not (self.params / key).exists():
                assert time.monotonic() < deadline, f"{plan.key} waited too long for {key}"
                time.sleep(0.05)
        home = self.root / "machines" / plan.name
        home.mkdir()
        env = {
            **plan.env,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(home),
            "FAKE_PARAMS": str(self.params),
        }
        for number, script in enumerate(plan.scripts, start=1):
            done = subprocess.run(
                ["/bin/sh", "-c", script],
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.outputs[plan.key, number] = done.stdout + done.stderr
            assert done.returncode == 0, f"{plan.key}: {done.stdout}{done.stderr}"

    def deploy(self, bp: Blueprint) -> None:
        with ThreadPoolExecutor(max_workers=len(self.plans)) as pool:
            for wave in node_order(bp):
                futures = [pool.submit(self.run, p) for p in self.plans if p.node in wave]
                for future in futures:
                    future.result()

    def runtime_parameters(self) -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in self.params.iterdir()}

    def stop(self) -> None:
        """Stop the servers the scripts started (found by their working directory)."""
        machines = str(self.root / "machines")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(machines):
                with suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGTERM)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


@contextmanager
def _deployed(
    bp: Blueprint, inputs: Mapping[str, Any], root: Path, completion: str | None = None
) -> Iterator[tuple[_Deployment, dict[str, str]]]:
    plans = expand(bp, inputs, deployment="t", completion=completion)
    deployment = _Deployment(root, plans)
    try:
        deployment.deploy(bp)
        outputs = render_outputs(bp, deployment.runtime_parameters(), inputs=inputs)
        yield deployment, outputs
    finally:
        deployment.stop()


@pytest.mark.slow
def test_webapp_example_runs(tmp_path: Path) -> None:
    bp = load_blueprint(example("webapp"))
    with _deployed(bp, resolve_inputs(bp, {"greeting": "hi"}), tmp_path) as (_, outputs):
        answers = [_get(outputs["url"]).split(" (visit ") for _ in range(4)]
        assert {greeting for greeting, _ in answers} == {"hi from app1", "hi from app2"}
        visits = [int(count.rstrip(")\n")) for _, count in answers]
        assert visits == list(range(visits[0], visits[0] + 4))  # counted in the store


@pytest.mark.slow
def test_cluster_example_runs(tmp_path: Path) -> None:
    bp = load_blueprint(example("cluster"))
    with _deployed(bp, resolve_inputs(bp, {"workers": "4"}), tmp_path) as (_, outputs):
        assert outputs["workers"] == "4" and outputs["requested"] == "4"
        registered = _get(outputs["coordinator"]).splitlines()
        assert [line.split()[0] for line in registered] == [f"worker{i}" for i in range(1, 5)]


@pytest.mark.slow
def test_sap_example_runs_and_keeps_the_secret(tmp_path: Path) -> None:
    bp = load_blueprint(example("sap-2tier"))
    inputs = resolve_inputs(bp, {"db_password": SECRET, "instance": "7"})
    with _deployed(bp, inputs, tmp_path, completion="john") as (deployment, outputs):
        assert outputs["sid"] == "PRD" and outputs["database"].startswith("sapjohn-db (")
        assert outputs["database"].endswith(":30713)")
        answer = _get(outputs["dispatcher"])
        assert answer == (
            "SAP system PRD (development), instance 07, application server sapjohn-app1\n"
        )
        assert deployment.outputs["app.1", 1] == deployment.outputs["app.2", 1]
        assert deployment.outputs["app.1", 1] == "database PRD online\n"
        written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
        assert not any(SECRET in text for text in [*written, *deployment.outputs.values()])


def test_validate_refuses_the_counts_up_would_refuse() -> None:
    """`validate -p` with inputs that make too many machines is not `valid, ? machines`."""
    text = (
        'name: big\nversion: "1"\nparameters:\n  n: {type: int, default: 1, max: 5000}\n'
        "nodes:\n  a: {image: debian-12, count: n}\n  b: {image: debian-12, count: n}\n"
        "  c: {image: debian-12, count: n}\n"
    )
    bp = service.validate_blueprint(text, "big.yaml")
    assert service.summarize_blueprint(bp, {"n": "10"}).machines == 30
    with pytest.raises(ParseErrors, match="2100 machines in all: a deployment has at most 2000"):
        service.summarize_blueprint(bp, {"n": "700"})
    with pytest.raises(ParseErrors, match="a node has 0 to 1000"):
        service.summarize_blueprint(bp, {"n": "2000"})
    required = text.replace("default: 1, ", "")
    open_count = service.validate_blueprint(required, "required.yaml")
    assert service.summarize_blueprint(open_count).machines is None  # not known yet: fine
