"""Patching on one host: what its package manager could upgrade (`PatchAnalyze`), and
upgrading it, then rebooting when asked and waiting for the host to come back
(`PatchApply`).

apt (Debian, Ubuntu) is what the tests run against; dnf (Fedora, RHEL and rebuilds) is
written to the same shape from its documented output and is untested. Every name put on
a command line passed `core.patches.check_packages` and is quoted with shlex; the
scripts run as root (through `sudo -n` for another login user).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from provisor._asyncssh import asyncssh
from provisor.core.patches import (
    PACKAGE_NAME,
    RebootPolicy,
    Update,
    check_packages,
    parse_apt_simulation,
    parse_dnf,
)
from provisor.fleet import engine
from provisor.fleet.operations import KEEP_DEFAULT, run_command
from provisor.fleet.output import OutputPolicy
from provisor.fleet.results import HostResult, Outcome
from provisor.fleet.transport import Endpoint, TransportError

Reconnect = Callable[[Endpoint], Awaitable[asyncssh.SSHClientConnection]]

DEFAULT_TIMEOUT = 3600.0  # seconds the upgrade itself may take on a host
DEFAULT_REFRESH_TIMEOUT = 300.0  # seconds for apt-get update / dnf makecache
DEFAULT_REBOOT_TIMEOUT = 600.0  # seconds a rebooted host has to answer again
_DOWN_TIMEOUT = 120.0  # seconds a host has to go down once told to reboot
_RETRY_SECONDS = 3.0  # between logins while a rebooted host comes back
_SMALL_TIMEOUT = 60.0  # seconds for the quick commands (which manager, versions, boot id)

# Runs everything that changes the host as root: itself when root, else through sudo.
_AS_ROOT = (
    'if [ "$(id -u)" = 0 ]; then as_root() { "$@"; }; '
    'else as_root() { sudo -n -- "$@"; }; fi; '
    "export LC_ALL=C DEBIAN_FRONTEND=noninteractive; "
)
_DETECT = (
    "if command -v apt-get >/dev/null 2>&1; then echo apt; "
    "elif command -v dnf >/dev/null 2>&1; then echo dnf; else echo none; fi"
)
# Which boot this is: the kernel's boot id, and when PID 1 started (a container or a
# sandbox host restarts its PID 1 without a new kernel).
_BOOT_ID = (
    "printf '%s %s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\" "
    "\"$(sed 's/.*) //' /proc/1/stat | cut -d' ' -f20)\""
)
# systemd first; `reboot` for the rest. Both return once the shutdown is under way.
REBOOT_COMMAND = "systemctl reboot || reboot"


class _Apt:
    name = "apt"

    @staticmethod
    def refresh(timeout: float) -> str:
        return f"as_root timeout {int(timeout)} apt-get -q update >&2"

    @staticmethod
    def plan(packages: Sequence[str]) -> str:
        """Simulate as any user (no lock taken): `Inst` lines say what would change."""
        if packages:
            names = " ".join(shlex.quote(p) for p in packages)
            return f"apt-get -s -o Debug::NoLocking=1 install --only-upgrade {names}"
        return "apt-get -s -o Debug::NoLocking=1 dist-upgrade"

    @staticmethod
    def parse_plan(stdout: str) -> list[Update]:
        return parse_apt_simulation(stdout)

    @staticmethod
    def upgrade(packages: Sequence[str]) -> str:
        options = "-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
        if packages:
            names = " ".join(shlex.quote(p) for p in packages)
            return f"as_root apt-get {options} install --only-upgrade {names}"
        return f"as_root apt-get {options} dist-upgrade"

    @staticmethod
    def versions(packages: Sequence[str]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        return f"dpkg-query -W -f='${{binary:Package}} ${{Version}}\\n' {names} 2>/dev/null; true"

    # Debian's update-notifier-common / needrestart write it; kernel packages too.
    reboot_needed = "test -e /var/run/reboot-required && echo yes || echo no"


class _Dnf:
    """Untested: written from dnf's documented output."""

    name = "dnf"

    @staticmethod
    def refresh(timeout: float) -> str:
        return f"as_root timeout {int(timeout)} dnf -q -y makecache >&2"

    @staticmethod
    def plan(packages: Sequence[str]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        # check-update exits 100 when there are updates: that is no failure here
        return (
            f"echo @check-update; dnf -q check-update {names}; rc=$?; "
            '[ "$rc" = 0 ] || [ "$rc" = 100 ] || exit "$rc"; '
            f"echo @security; dnf -q updateinfo list --security --updates {names} "
            "2>/dev/null; "
            "echo @installed; rpm -qa --qf '%{NAME}.%{ARCH} %{VERSION}-%{RELEASE}\\n'"
        )

    @staticmethod
    def parse_plan(stdout: str) -> list[Update]:
        sections: dict[str, list[str]] = {"@check-update": [], "@security": [], "@installed": []}
        current: list[str] | None = None
        for line in stdout.splitlines():
            if line in sections:
                current = sections[line]
            elif current is not None:
                current.append(line)
        return parse_dnf(
            "\n".join(sections["@check-update"]),
            "\n".join(sections["@security"]),
            "\n".join(sections["@installed"]),
        )

    @staticmethod
    def upgrade(packages: Sequence[str]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        return f"as_root dnf -y -q upgrade {names}"

    @staticmethod
    def versions(packages: Sequence[str]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        return f"rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}}\\n' {names} 2>/dev/null; true"

    # needs-restarting (dnf-utils) exits 1 when a reboot is needed
    reboot_needed = (
        "if command -v needs-restarting >/dev/null 2>&1; then "
        "needs-restarting -r >/dev/null 2>&1 && echo no || echo yes; else echo no; fi"
    )


_Manager = type[_Apt] | type[_Dnf]
_MANAGERS: dict[str, _Manager] = {"apt": _Apt, "dnf": _Dnf}


class _Stop(Exception):
    """A step failed: the host's result says why."""

    def __init__(self, result: HostResult) -> None:
        super().__init__(result.error)
        self.result = result


def _failed(
    endpoint: Endpoint, error: str, step: HostResult | None = None, **details: Any
) -> HostResult:
    """The host's result for a failed step: the step's output and outcome (a timeout
    stays a timeout), with `error` saying which step."""
    if step is None:
        return HostResult(
            endpoint.name, endpoint.address, Outcome.failed, error=error, details=details
        )
    outcome = step.outcome if step.outcome is not Outcome.ok else Outcome.failed
    reason = f"{error}: {step.error}" if step.error else error
    return replace(step, outcome=outcome, error=reason, details={**step.details, **details})


async def _step(
    connection: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    what: str,
    script: str,
    *,
    timeout: float,
    output: OutputPolicy,
    manager: str | None = None,
) -> HostResult:
    """One script; `_Stop` with the host's result unless it exits 0."""
    result = await run_command(
        connection, endpoint, _AS_ROOT + script, timeout=timeout, output=output
    )
    if result.outcome is not Outcome.ok:
        extra = {"manager": manager} if manager else {}
        raise _Stop(_failed(endpoint, what, result, **extra))
    if result.stdout_dropped:
        raise _Stop(
            _failed(
                endpoint,
                f"{what}: the output is longer than --max-output, so it cannot be read whole; "
                "raise --max-output",
                result,
            )
        )
    return result


async def _manager(
    connection: asyncssh.SSHClientConnection, endpoint: Endpoint, output: OutputPolicy
) -> _Manager:
    found = await _step(
        connection,
        endpoint,
        "finding the package manager",
        _DETECT,
        timeout=_SMALL_TIMEOUT,
        output=output,
    )
    name = found.text().strip()
    if name not in _MANAGERS:
        raise _Stop(_failed(endpoint, "no supported package manager on this host (apt-get, dnf)"))
    return _MANAGERS[name]


def _quiet(output: OutputPolicy) -> OutputPolicy:
    """The job's limit and masking, without its files: only the upgrade's own output is
    the host's output (each command would start the files again)."""
    return replace(output, files=None)


@dataclass(frozen=True)
class PatchAnalyze:
    """Refresh the package lists, then list what could be upgraded (nothing changes)."""

    refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT
    output: OutputPolicy = KEEP_DEFAULT
    kind: str = "patch-analyze"

    def describe(self) -> str:
        return "patch analyze"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        quiet = _quiet(self.output)
        try:
            manager = await _manager(connection, endpoint, quiet)
            refreshed = await _step(
                connection,
                endpoint,
                f"refreshing the package lists ({manager.name})",
                manager.refresh(self.refresh_timeout),
                timeout=self.refresh_timeout + 30,
                output=quiet,
                manager=manager.name,
            )
            plan = await _step(
                connection,
                endpoint,
                "listing the updates",
                manager.plan(()),
                timeout=self.refresh_timeout,
                output=quiet,
                manager=manager.name,
            )
        except _Stop as stop:
            return stop.result
        updates = manager.parse_plan(plan.text())
        listing = "".join(
            f"{u.package} {u.installed} -> {u.candidate}{' [security]' if u.security else ''}\n"
            for u in updates
        )
        return HostResult(
            endpoint.name,
            endpoint.address,
            Outcome.ok,
            exit_code=0,
            stdout=listing.encode(),
            stderr=refreshed.stderr,
            stderr_dropped=refreshed.stderr_dropped,
            details={
                "manager": manager.name,
                "updates": [u.to_json() for u in updates],
                "count": len(updates),
                "security": sum(u.security for u in updates),
            },
        )


@dataclass(frozen=True)
class PatchApply:
    """Upgrade `packages` (every upgradable package when empty; only security updates
    with `security_only`), report each from -> to, then reboot as `reboot` says and
    wait up to `reboot_timeout` for the host to answer again with a new boot id."""

    packages: tuple[str, ...] = ()
    security_only: bool = False
    reboot: RebootPolicy = RebootPolicy.never
    timeout: float = DEFAULT_TIMEOUT
    refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT
    reboot_timeout: float = DEFAULT_REBOOT_TIMEOUT
    output: OutputPolicy = KEEP_DEFAULT
    reboot_command: str = REBOOT_COMMAND
    reconnect: Reconnect = field(default=engine.reconnect, compare=False, repr=False)
    kind: str = "patch-apply"

    def __post_init__(self) -> None:
        check_packages(self.packages)  # never a name a shell could misread

    def describe(self) -> str:
        what = " ".join(self.packages) if self.packages else "all upgradable packages"
        security = " (security updates only)" if self.security_only else ""
        return f"patch apply {what}{security}, reboot {self.reboot.value}"

    async def __call__(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint
    ) -> HostResult:
        quiet = _quiet(self.output)
        details: dict[str, Any] = {"reboot": self.reboot.value}
        try:
            manager = await _manager(connection, endpoint, quiet)
            details["manager"] = manager.name
            await _step(
                connection,
                endpoint,
                f"refreshing the package lists ({manager.name})",
                manager.refresh(self.refresh_timeout),
                timeout=self.refresh_timeout + 30,
                output=quiet,
                manager=manager.name,
            )
            plan = await _step(
                connection,
                endpoint,
                "planning the upgrade",
                manager.plan(self.packages),
                timeout=self.refresh_timeout,
                output=quiet,
                manager=manager.name,
            )
            planned = manager.parse_plan(plan.text())
            if self.security_only:
                planned = [u for u in planned if u.security]
            names = [u.package for u in planned if PACKAGE_NAME.fullmatch(u.package)]
            upgrade: HostResult | None = None
            if names:
                # with --security, or packages given, exactly the planned ones: a
                # dist-upgrade could take more than was analyzed
                wanted = names if (self.security_only or self.packages) else []
                upgrade = await run_command(
                    connection,
                    endpoint,
                    _AS_ROOT + manager.upgrade(wanted),
                    timeout=self.timeout,
                    output=self.output,
                )
                after = await _step(
                    connection,
                    endpoint,
                    "reading the installed versions",
                    manager.versions(names),
                    timeout=_SMALL_TIMEOUT,
                    output=quiet,
                )
                details.update(_outcome_of(planned, after.text()))
                if upgrade.outcome is not Outcome.ok:
                    raise _Stop(
                        _failed(endpoint, f"upgrade failed ({manager.name})", upgrade, **details)
                    )
            else:
                details.update({"upgraded": [], "not_upgraded": []})
            details["reboot_needed"] = await self._reboot_needed(
                connection, endpoint, manager, quiet
            )
            if self._should_reboot(details["reboot_needed"]):
                details.update(await self._reboot(connection, endpoint, quiet))
        except _Stop as stop:
            stop.result.details = {**details, **stop.result.details}
            return stop.result
        return self._result(endpoint, upgrade, details)

    def _should_reboot(self, needed: bool) -> bool:
        return self.reboot is RebootPolicy.always or (
            self.reboot is RebootPolicy.if_needed and needed
        )

    async def _reboot_needed(
        self,
        connection: asyncssh.SSHClientConnection,
        endpoint: Endpoint,
        manager: _Manager,
        output: OutputPolicy,
    ) -> bool:
        found = await _step(
            connection,
            endpoint,
            "asking whether a reboot is needed",
            manager.reboot_needed,
            timeout=_SMALL_TIMEOUT,
            output=output,
        )
        return found.text().strip() == "yes"

    async def _reboot(
        self, connection: asyncssh.SSHClientConnection, endpoint: Endpoint, output: OutputPolicy
    ) -> dict[str, Any]:
        """Reboot, see the host go down, and log in again until its boot id changed."""
        booted = await _step(
            connection,
            endpoint,
            "reading the boot id",
            _BOOT_ID,
            timeout=_SMALL_TIMEOUT,
            output=output,
        )
        before = booted.text().strip()
        started = time.monotonic()
        try:
            ordered = await run_command(
                connection,
                endpoint,
                _AS_ROOT + f"as_root sh -c {shlex.quote(self.reboot_command)}",
                timeout=_SMALL_TIMEOUT,
                output=output,
            )
        except (asyncssh.Error, OSError):
            ordered = None  # the connection went with the shutdown: that is the reboot
        if ordered is not None and ordered.outcome is Outcome.failed:
            raise _Stop(_failed(endpoint, f"reboot refused ({self.reboot_command})", ordered))
        try:
            await asyncio.wait_for(connection.wait_closed(), _DOWN_TIMEOUT)
        except TimeoutError:
            raise _Stop(
                _failed(
                    endpoint,
                    f"told to reboot, the host was still up {_DOWN_TIMEOUT:g}s later",
                )
            ) from None
        after = await self._back(endpoint, before, started)
        return {
            "rebooted": True,
            "reboot_seconds": round(time.monotonic() - started, 1),
            "boot_id": after,
        }

    async def _back(self, endpoint: Endpoint, before: str, started: float) -> str:
        """Log in again until the host answers with a new boot id, or say it did not."""
        deadline = started + self.reboot_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                connection = await self.reconnect(endpoint)
                seen = await run_command(connection, endpoint, _BOOT_ID, timeout=_SMALL_TIMEOUT)
                boot_id = seen.text().strip()
                if seen.ok and boot_id and boot_id != before:
                    return boot_id
                last = "it answered with the boot id it had before the reboot"
            except TransportError as exc:
                last = exc.message
            except (asyncssh.Error, OSError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(min(_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
        raise _Stop(
            HostResult(
                endpoint.name,
                endpoint.address,
                Outcome.timeout,
                error=f"rebooted, but the host did not come back within {self.reboot_timeout:g}s "
                f"(--reboot-timeout); last attempt: {last}",
                details={"limit": "reboot", "seconds": self.reboot_timeout, "rebooted": True},
            )
        )

    def _result(
        self, endpoint: Endpoint, upgrade: HostResult | None, details: dict[str, Any]
    ) -> HostResult:
        lines = [f"upgraded {u['package']} {u['from']} -> {u['to']}\n" for u in details["upgraded"]]
        lines += [
            f"not upgraded {u['package']} (still {u['installed']})\n"
            for u in details["not_upgraded"]
        ]
        if not upgrade:
            lines.append("nothing to upgrade\n")
        if details.get("rebooted"):
            lines.append(f"rebooted, back after {details['reboot_seconds']:g}s\n")
        elif details["reboot_needed"]:
            lines.append(f"a reboot is needed (--reboot {self.reboot.value})\n")
        summary = "".join(lines).encode()
        base = upgrade or HostResult(endpoint.name, endpoint.address, Outcome.ok, exit_code=0)
        outcome = Outcome.ok if not details["not_upgraded"] else Outcome.failed
        return replace(
            base,
            outcome=outcome,
            error=None if outcome is Outcome.ok else "some packages were not upgraded",
            stdout=base.stdout + (b"\n" if base.stdout else b"") + summary,
            details=details,
        )


def _outcome_of(planned: Sequence[Update], versions: str) -> dict[str, Any]:
    """What the upgrade did to each planned package, by its installed version after."""
    now: dict[str, str] = {}
    for line in versions.splitlines():
        name, _, version = line.strip().partition(" ")
        if version:
            now[name] = version
            now.setdefault(name.split(":")[0], version)
    upgraded, missed = [], []
    for update in planned:
        version = now.get(update.package, "")
        if version and version != update.installed:
            upgraded.append(
                {
                    "package": update.package,
                    "from": update.installed,
                    "to": version,
                    "security": update.security,
                }
            )
        else:
            missed.append(
                {
                    "package": update.package,
                    "installed": version or update.installed,
                    "candidate": update.candidate,
                }
            )
    return {"upgraded": upgraded, "not_upgraded": missed}


__all__ = [
    "DEFAULT_REBOOT_TIMEOUT",
    "DEFAULT_REFRESH_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "REBOOT_COMMAND",
    "PatchAnalyze",
    "PatchApply",
]
