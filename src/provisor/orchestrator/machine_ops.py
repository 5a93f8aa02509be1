"""What the controller does on a machine over SSH while configuring it.

Each SSH command costs the controller a channel, a few packets and a wake-up of
its event loop, so a machine is configured in as few commands as possible: one
to wait for the user data and write the agent, its settings and every script
(`prepare`), then one per script (`run_script`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provisor.fleet.operations import run_command
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint, ScopedPool, TransportError
from provisor.orchestrator.param_agent import AGENT
from provisor.polling import poll_until
from provisor.providers.base import USER_DATA_DONE

CLOUD_INIT_DONE = "/var/lib/cloud/instance/boot-finished"
SCRIPTS = "/var/lib/provisor/scripts"
_USER_DATA_FAILED = 97  # `prepare`'s exit status when the user data failed
_USER_DATA_RUNNING = 98  # ... and when it is still running at the deadline


class MachineStepError(Exception):
    """A configuration step failed on a machine; the message says how."""


async def run(pool: ScopedPool, endpoint: Endpoint, command: str, **kw: object) -> HostResult:
    connection = await pool.connect(endpoint)
    return await run_command(connection, endpoint, command, **kw)  # type: ignore[arg-type]


async def probe(pool: ScopedPool, endpoint: Endpoint, *, timeout: float) -> None:
    """Until SSH lets the controller in (its host key and our key accepted), or `timeout`.

    The connection stays in the pool for the commands that follow; the first of them
    shows whether the machine runs commands.
    """
    last = ["no answer"]

    async def reached() -> bool:
        try:
            await asyncio.wait_for(pool.connect(endpoint), 10.0)
            return True
        except TimeoutError:
            last[0] = "no answer within 10s"
        except TransportError as exc:
            last[0] = exc.message
            if exc.outcome in (Outcome.auth, Outcome.hostkey):
                raise MachineStepError(f"SSH refused: {exc.message}") from None
        pool.forget(endpoint)
        return False

    if await poll_until(reached, timeout=timeout, first=0.2, factor=1.0):
        return
    raise MachineStepError(f"not reachable over SSH within {timeout:g}s: {last[0]}")


def script_path(number: int) -> str:
    return f"{SCRIPTS}/{number:02d}.sh"


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def _delimiter(contents: Sequence[str]) -> str:
    """A here-document end marker that is no line of any of the contents."""
    while True:
        marker = f"PROVISOR_EOF_{secrets.token_hex(8)}"
        if not any(marker in content for content in contents):
            return marker


def _write_files(files: Sequence[tuple[str, str, str]]) -> str:
    """Shell that writes each (path, mode, content) atomically (a `.new` file, then mv)."""
    end = _delimiter([content for _, _, content in files])
    lines = []
    for path, mode, content in files:
        target = shlex.quote(path)
        body = content if content.endswith("\n") or not content else content + "\n"
        lines.append(f"cat > {target}.new <<'{end}'\n{body}{end}")
        lines.append(f"chmod {mode} {target}.new && mv {target}.new {target}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Setup:
    """What `prepare` installs on a machine."""

    url: str  # where provisor-param reaches the controller
    certificate: str  # the one certificate it trusts there (PEM)
    token: str  # the machine's own token
    env: Mapping[str, str]  # the scripts' environment
    known: Mapping[str, str]  # values provisor-param answers by itself
    scripts: Sequence[str]
    user_data: bool  # wait for the user data to finish first


def _prepare_script(setup: Setup, timeout: float) -> str:
    """The shell `prepare` runs."""
    wait = ""
    if setup.user_data:
        # Poll on the machine, not over SSH: one command however long it takes.
        done = shlex.quote(USER_DATA_DONE)
        folder = shlex.quote(USER_DATA_DONE.rsplit("/", 1)[0])
        wait = (
            f"deadline=$(( $(date +%s) + {max(1, int(timeout))} ))\n"
            f"while [ ! -s {done} ]; do\n"
            # A #cloud-config on a cloud image: cloud-init's own mark that it finished
            # (a #! user data leaves the provisor mark before this one).
            f"  if [ -e {CLOUD_INIT_DONE} ]; then mkdir -p {folder}; echo 0 > {done}; break; fi\n"
            f"  if [ $(date +%s) -ge $deadline ]; then exit {_USER_DATA_RUNNING}; fi\n"
            "  sleep 0.2 2>/dev/null || sleep 1\n"
            "done\n"
            f"status=$(cat {done})\n"
            f'if [ "$status" != 0 ]; then echo "$status"; exit {_USER_DATA_FAILED}; fi\n'
        )
    files = [
        ("/usr/local/bin/provisor-param", "0755", AGENT),
        (
            "/etc/provisor/param.env",
            "0600",
            f"PROVISOR_PARAM_URL={setup.url}\nPROVISOR_PARAM_TOKEN={setup.token}\n",
        ),
        ("/etc/provisor/param.crt", "0644", setup.certificate),
        ("/etc/provisor/env", "0600", _exports(setup.env)),
        ("/etc/provisor/known.json", "0644", json.dumps(dict(setup.known), sort_keys=True)),
        *((script_path(n), "0700", s) for n, s in enumerate(setup.scripts, start=1)),
    ]
    return (
        "set -e\n"
        + wait
        + f"mkdir -p /usr/local/bin /etc/provisor {SCRIPTS}\n"
        + "umask 077\n"
        + _write_files(files)
    )


async def prepare(pool: ScopedPool, endpoint: Endpoint, setup: Setup, *, timeout: float) -> None:
    """In one command: wait for the user data (when there is one) to finish, fail if it
    failed; then write `provisor-param`, where it reaches the controller and the
    certificate it trusts there, the values it answers itself, the scripts' environment
    and the scripts themselves."""
    script = _prepare_script(setup, timeout)
    result = await run(pool, endpoint, "sh -s", stdin=script.encode(), timeout=timeout + 30.0)
    if result.ok:
        return
    if result.exit_code == _USER_DATA_FAILED:
        status = result.text().strip()
        raise MachineStepError(f"user data exited with status {status} (see the console log)")
    if result.exit_code == _USER_DATA_RUNNING or result.outcome is Outcome.timeout:
        raise MachineStepError(f"user data still running after {timeout:g}s")
    raise MachineStepError(
        "cannot install provisor-param and the scripts: "
        + (result.error or result.text("stderr").strip() or f"exit {result.exit_code}")
    )


async def run_script(
    pool: ScopedPool, endpoint: Endpoint, number: int, *, timeout: float
) -> HostResult:
    """Run script `number` (written by `prepare`) with the deployment's environment."""
    return await run(
        pool,
        endpoint,
        f'. /etc/provisor/env && cd "$HOME" && sh {script_path(number)}',
        timeout=timeout,
    )
