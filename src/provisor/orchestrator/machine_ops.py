"""What the controller does on a machine over SSH while configuring it."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping

from provisor.fleet.operations import run_command
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint, SSHPool, TransportError
from provisor.orchestrator.param_agent import AGENT

USER_DATA_DONE = "/var/lib/provisor/user-data.done"


class MachineStepError(Exception):
    """A configuration step failed on a machine; the message says how."""


async def run(pool: SSHPool, endpoint: Endpoint, command: str, **kw: object) -> HostResult:
    connection = await pool.connect(endpoint)
    return await run_command(connection, endpoint, command, **kw)  # type: ignore[arg-type]


async def probe(pool: SSHPool, endpoint: Endpoint, *, timeout: float) -> None:
    """Until SSH answers a command, or `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    while loop.time() < deadline:
        try:
            result = await run(pool, endpoint, "true", timeout=10.0)
            if result.ok:
                return
            last = result.error or f"exit {result.exit_code}"
        except TransportError as exc:
            last = exc.message
            if exc.outcome in (Outcome.auth, Outcome.hostkey):
                raise MachineStepError(f"SSH refused: {exc.message}") from None
        pool.forget(endpoint)
        await asyncio.sleep(0.2)
    raise MachineStepError(f"not reachable over SSH within {timeout:g}s: {last}")


async def wait_user_data(pool: SSHPool, endpoint: Endpoint, *, timeout: float) -> None:
    """Until the provider's user-data run has left its exit status; fail if non-zero."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await run(pool, endpoint, f"cat {USER_DATA_DONE} 2>/dev/null", timeout=10.0)
        status = result.text().strip()
        if result.ok and status:
            if status != "0":
                raise MachineStepError(
                    f"user data exited with status {status} (see the console log)"
                )
            return
        if loop.time() > deadline:
            raise MachineStepError(f"user data still running after {timeout:g}s")
        await asyncio.sleep(0.3)


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


async def install_agent(
    pool: SSHPool, endpoint: Endpoint, *, url: str, token: str, env: Mapping[str, str]
) -> None:
    """`provisor-param`, where it reaches the controller, and the scripts' environment."""
    files = (
        ("/usr/local/bin/provisor-param", "0755", AGENT),
        (
            "/etc/provisor/param.env",
            "0600",
            f"PROVISOR_PARAM_URL={url}\nPROVISOR_PARAM_TOKEN={token}\n",
        ),
        ("/etc/provisor/env", "0600", _exports(env)),
    )
    for path, mode, content in files:
        command = (
            f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} /var/lib/provisor/scripts && "
            f"umask 077 && cat > {shlex.quote(path)}.new && chmod {mode} {shlex.quote(path)}.new"
            f" && mv {shlex.quote(path)}.new {shlex.quote(path)}"
        )
        result = await run(pool, endpoint, command, stdin=content.encode(), timeout=30.0)
        if not result.ok:
            raise MachineStepError(f"cannot write {path}: {result.error or result.text('stderr')}")


async def run_script(
    pool: SSHPool, endpoint: Endpoint, number: int, script: str, *, timeout: float
) -> HostResult:
    """Upload script `number` and run it with the deployment's environment."""
    path = f"/var/lib/provisor/scripts/{number:02d}.sh"
    upload = await run(
        pool,
        endpoint,
        f"cat > {path} && chmod 0700 {path}",
        stdin=script.encode(),
        timeout=30.0,
    )
    if not upload.ok:
        raise MachineStepError(f"cannot upload script {number}: {upload.text('stderr')}")
    return await run(
        pool, endpoint, f'. /etc/provisor/env && cd "$HOME" && sh {path}', timeout=timeout
    )
