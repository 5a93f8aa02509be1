"""Running a change script on a connected host."""

from __future__ import annotations

from provisor._asyncssh import asyncssh
from provisor.fleet.operations import run_command
from provisor.fleet.output import OutputPolicy
from provisor.fleet.transport import Endpoint

_UNNAMED = Endpoint(name="", address="")


async def run_script(
    connection: asyncssh.SSHClientConnection,
    script: str,
    *,
    timeout: float,
    max_output: int,
    endpoint: Endpoint | None = None,
) -> tuple[int | None, bytes, bytes]:
    """Run `script` as `sh -s` with the script on stdin (nothing of it in any argv):
    (exit status, stdout, stderr), each stream's first `max_output` bytes; exit status
    None when it timed out (the script's processes are then killed), was killed by a
    signal or the connection was lost. `endpoint` only names the host in output files."""
    result = await run_command(
        connection,
        endpoint or _UNNAMED,
        "sh -s",
        stdin=script.encode(),
        timeout=timeout,
        output=OutputPolicy(max_output=max_output),
    )
    code = result.exit_code if result.exit_code is None or result.exit_code >= 0 else None
    return code, result.stdout, result.stderr
