"""Gathering facts on one host: run `core.gather.SCRIPT` (read-only, its output bounded
on the host), parse what it printed (`core.gather.parse_facts`), and answer with the
facts in the result's details and a one-line summary as its output."""

from __future__ import annotations

from dataclasses import dataclass, replace

from provisor._asyncssh import asyncssh
from provisor.core.gather import SCRIPT, UnreadableFacts, parse_facts, summary
from provisor.fleet.operations import run_command
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint

DEFAULT_TIMEOUT = 60.0  # seconds the script may run on a host


@dataclass(frozen=True)
class GatherFacts:
    """Ask a host what it is; the facts are `details["facts"]`, nothing is changed."""

    timeout: float = DEFAULT_TIMEOUT
    kind: str = "gather"

    def describe(self) -> str:
        return "gather facts"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        answer = await run_command(connection, endpoint, SCRIPT, timeout=self.timeout)
        if not answer.ok:
            reason = answer.error or f"exit {answer.exit_code}"
            return replace(answer, error=f"the facts script did not finish: {reason}")
        try:
            facts = parse_facts(answer.stdout.decode("utf-8", errors="replace"))
        except UnreadableFacts as exc:
            # Its own output stays in the result, for whoever looks into why.
            return replace(answer, outcome=Outcome.failed, error=str(exc))
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.ok,
            exit_code=0,
            stdout=(summary(facts) + "\n").encode(),
            details={"facts": facts},
        )


__all__ = ["DEFAULT_TIMEOUT", "GatherFacts"]
