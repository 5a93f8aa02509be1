"""The API against its own OpenAPI with generated requests (schemathesis), as an admin and
as a requester: no server error, and every answer as the schema says it is.

Run as schemathesis's own command against the real server, for a bounded time. Excluded:
operations that would reach beyond this computer's loopback or start machines (a job,
patch and config operations among them, runs SSH to whatever target is generated, a
provider check calls its endpoint, a notifier (and the server's alert dispatcher) posts
to whatever URL is generated, a deployment launches machines; the other security tests
check their inputs), and the check that every schema-valid request is accepted (a
blueprint's YAML, a name's characters are judged by provisor's own rules, which a JSON
Schema does not carry).
Its server allows many refused tokens a minute: schemathesis sends bad ones on purpose,
to every operation, and the guard against guessing would answer 429 to the rest.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import Server, start_server

from provisor.store import Store

_REACHING_OUT = (
    r"/jobs(/stream)?$|/patches/(analyze|apply)$|/config/(plan|check|apply|set-password)$|"
    r"/config/applies/\{apply_id\}/rollback$|/providers/\{name\}/check$|"
    r"/notifiers(/\{name\}/test)?$|"
    r"/deployments(/\{name\}(/approve|/reject)?)?$"
)


@pytest.fixture(scope="module")
def tolerant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("schema-home")
    with start_server(home, env={"PROVISOR_SIGN_IN_FAILURES": "100000"}) as (url, process):
        store = Store(f"sqlite:///{home / 'provisor.db'}")
        try:
            yield Server(url=url, home=home, store=store, process=process)
        finally:
            store.close()


@pytest.mark.parametrize("role", ["admin", "requester"])
def test_the_api_keeps_to_its_schema(tolerant: Server, role: str, tmp_path: Path) -> None:
    server = tolerant
    schemathesis = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{server.url}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {server.token(role)}",
            "--exclude-path-regex",
            _REACHING_OUT,
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-time",
            "30",
            "--workers",
            "1",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its report files and caches stay out of the checkout
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
