"""A configuration job's work on one host: read its objects, plan, and for an apply or a
rollback keep their states, write, and read them again to verify; two round trips."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from provisor._asyncssh import asyncssh
from provisor.core.changes.desired import HostPlan, object_keys, plan_host, rollback_plan
from provisor.core.changes.model import Change, ObjectKey, Resource, State, Write
from provisor.core.changes.report import host_text
from provisor.fleet.changes.probe import output_limit, parse_probe, probe_script
from provisor.fleet.changes.run import run_script
from provisor.fleet.changes.write import parse_write, write_output_limit, write_script
from provisor.fleet.output import DEFAULT_MAX_OUTPUT
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint

Mode = Literal["plan", "check", "apply", "rollback"]
SnapshotKeeper = Callable[[str, Sequence[Change]], Awaitable[None]]
Snapshot = Sequence[tuple[ObjectKey, State]]

DEFAULT_TIMEOUT = 600.0  # seconds per script: a package install may take minutes


class ProbeFailed(Exception):
    """The host's objects could not be read: nothing was planned or changed."""


@dataclass(frozen=True)
class ConfigOperation:
    """plan/check: what would change; apply: change it; rollback: write snapshots back.

    `resources` (per host name) are the rendered change set; `snapshots` (rollback) the
    states an apply recorded. An apply hands the states it is about to change to
    `keep_snapshot` and writes nothing unless that succeeds."""

    mode: Mode
    label: str
    resources: Mapping[str, Sequence[Resource]] = field(default_factory=dict)
    snapshots: Mapping[str, Snapshot] = field(default_factory=dict)
    keep_snapshot: SnapshotKeeper | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT

    @property
    def kind(self) -> str:
        return f"config-{self.mode}"

    def describe(self) -> str:
        return f"config {self.mode} {self.label}"

    def _planner(
        self, host: str
    ) -> tuple[list[ObjectKey], Callable[[Mapping[ObjectKey, State]], HostPlan]]:
        if self.mode == "rollback":
            snapshot = list(self.snapshots.get(host, ()))
            return [key for key, _ in snapshot], lambda seen: rollback_plan(snapshot, seen)
        resources = list(self.resources.get(host, ()))
        return object_keys(resources), lambda seen: plan_host(resources, seen)

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        keys, planner = self._planner(endpoint.name)
        try:
            observed = await self._read(connection, keys)
        except ProbeFailed as exc:
            return self._result(endpoint, Outcome.failed, "", error=str(exc))
        plan = planner(observed)
        text = host_text(plan)
        details: dict[str, Any] = {
            "changes": len(plan.changes),
            "objects": [{"object": str(c.key), "change": c.summary} for c in plan.changes],
        }
        if plan.errors:
            details["errors"] = plan.errors
            return self._result(
                endpoint, Outcome.failed, text, error="; ".join(plan.errors), details=details
            )
        if self.mode in ("plan", "check") or not plan.changes:
            return self._result(endpoint, Outcome.ok, text, details=details)
        if self.keep_snapshot is not None:
            try:
                await self.keep_snapshot(endpoint.name, plan.changes)
            except Exception as exc:  # nothing is written without its snapshot
                return self._result(
                    endpoint,
                    Outcome.error,
                    text,
                    error=f"snapshot not saved, nothing changed: {exc}",
                    details=details,
                )
        writes = [Write(c.key, c.before, c.after, c.restart) for c in plan.changes]
        code, out, err = await run_script(
            connection,
            write_script(writes),
            timeout=self.timeout,
            max_output=write_output_limit(writes),
            endpoint=endpoint,
        )
        report = parse_write(writes, out)
        details["written"] = [str(writes[i].key) for i in report.done]
        if report.failure is not None:
            index, message = report.failure
            return self._result(
                endpoint,
                Outcome.failed,
                text,
                error=f"{writes[index].key}: {message}"
                + (f" ({len(report.done)} object(s) written before it)" if report.done else ""),
                details=details,
            )
        if report.error is not None or code != 0 or not _all_read(report.states, keys):
            return self._result(
                endpoint,
                Outcome.failed,
                text,
                error=f"the write script ended with status {code}: "
                + (report.error or "")
                + " "
                + err.decode(errors="replace")[-500:].strip(),
                details=details,
            )
        left = planner(_states(report.states))
        if left.changes or left.errors:
            details["not_as_desired"] = [f"{c.key}: {c.summary}" for c in left.changes]
            return self._result(
                endpoint,
                Outcome.failed,
                text,
                error="written, but not as desired when read back: "
                + "; ".join(details["not_as_desired"] + left.errors),
                details=details,
            )
        return self._result(endpoint, Outcome.ok, text, details=details)

    async def _read(
        self, connection: asyncssh.SSHClientConnection, keys: Sequence[ObjectKey]
    ) -> dict[ObjectKey, State]:
        code, out, err = await run_script(
            connection, probe_script(keys), timeout=self.timeout, max_output=output_limit(keys)
        )
        found = parse_probe(keys, out)
        problems = [f"{key}: {found[key]}" for key in keys if isinstance(found.get(key), str)]
        missing = [str(key) for key in keys if key not in found]
        if problems or missing or code != 0:
            detail = "; ".join(problems + [f"{m}: not read" for m in missing])
            tail = err.decode(errors="replace")[-500:].strip()
            raise ProbeFailed(
                "could not read the host's objects: "
                + (detail or f"the probe ended with status {code}")
                + (f" ({tail})" if tail and not problems else "")
            )
        return _states(found)

    def _result(
        self,
        endpoint: Endpoint,
        outcome: Outcome,
        text: str,
        *,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> HostResult:
        data = text.encode()
        kept = data[: self.max_output]
        return HostResult(
            endpoint.name,
            endpoint.address,
            outcome,
            exit_code=0 if outcome is Outcome.ok else None,
            error=error,
            stdout=kept,
            stdout_dropped=len(data) - len(kept),
            details=details or {},
        )


def _states(found: Mapping[ObjectKey, State | str]) -> dict[ObjectKey, State]:
    return {key: value for key, value in found.items() if not isinstance(value, str)}


def _all_read(found: Mapping[ObjectKey, State | str], keys: Sequence[ObjectKey]) -> bool:
    return all(not isinstance(found.get(key, ""), str) for key in keys)
