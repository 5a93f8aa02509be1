"""A fleet job from the CLI's options: the request, checked as far as a client can, and
its run through a server.

Light on purpose (no typer, rich or pydantic): `provisor run` uses it through the CLI,
and the warm path (`thin_run`) without it, so both send the same request and print the
same results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisor.core.errors import InvalidInput


def seconds_option(text: str | None, field: str) -> float | None:
    """`90`, `90s`, `15m`, `2h` as seconds; None stays None (the configured default)."""
    if text is None:
        return None
    from provisor.core.timespec import parse_seconds

    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None
    if not 0 < seconds <= 30 * 24 * 3600:
        raise InvalidInput(f"{field} must be more than 0 and at most 30 days", field=field)
    return seconds


def size_option(text: str | None, field: str) -> int | None:
    """`64K`, `1M` as bytes; None stays None (the configured default)."""
    if text is None:
        return None
    from provisor.core.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None


def output_mode(requested: str | None, hosts: int) -> str:
    if requested is None:
        return "fold" if hosts > 10 else "stream"
    if requested not in ("stream", "fold", "json"):
        raise InvalidInput(
            f"unknown output {requested!r}: use stream, fold or json", field="output"
        )
    return requested


def job_spec(
    kind: str,
    target: str,
    parallel: int,
    connect_timeout: float,
    user: str | None,
    identity: Path | None,
    **fields: Any,
) -> dict[str, Any]:
    """The job as the jobs service takes it (a `JobSpec`), checked by whoever runs it:
    the CLI, or the server, which answers a bad value as that check would."""
    return {
        "kind": kind,
        "target": target,
        "parallel": parallel,
        "connect_timeout": connect_timeout,
        "user": user,
        "identity": identity_option(identity),
        **fields,
    }


def identity_option(identity: Path | None) -> str | None:
    """`-i FILE` as the request names it; a missing file is refused here, by its path."""
    if identity is not None and not identity.is_file():
        raise InvalidInput(f"no private key file at {identity}", field="identity")
    return str(identity) if identity else None


def _as_json(spec: dict[str, Any]) -> dict[str, Any]:
    """The request a server takes: standard input as text (JSON has no bytes)."""
    data = spec.get("stdin")
    if isinstance(data, bytes):
        try:
            return {**spec, "stdin": data.decode("utf-8")}
        except UnicodeDecodeError:
            raise InvalidInput(
                "through a server, --stdin must be UTF-8 text", field="stdin"
            ) from None
    return spec


def run_through_server(
    spec: dict[str, Any], output: str | None, server: str, tenant: str | None
) -> int:
    """Run the job on `server` as the token kept for it, printing its results as they
    come; the exit status of the job (see `fleet_output.exit_status`)."""
    from provisor.cli.fleet_output import Reporter
    from provisor.cli.remote import run_remote, server_token

    output_mode(output, 0)  # a bad --output is refused before anything runs
    reporters: list[Reporter] = []

    def on_start(job: dict[str, Any]) -> None:
        hosts = int(job.get("host_count") or 0)
        reporters.append(Reporter(output_mode(output, hosts), hosts))

    finished = run_remote(
        server,
        _as_json(spec),
        token=server_token(server),
        tenant=tenant,
        on_start=on_start,
        on_result=lambda r: reporters[0].result(r),
    )
    return reporters[0].finish(int(str(finished["id"])))
