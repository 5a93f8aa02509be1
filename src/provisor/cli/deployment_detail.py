"""`provisor deployments show`: one deployment's whole picture, printed for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape

from provisor.cli.output import Col, compact, console, fields, full_time, short_time, table

if TYPE_CHECKING:
    from provisor.services.backups import BackupSummary
    from provisor.services.deployments import DeploymentDetail


def _state(view: DeploymentDetail) -> str:
    return view.state if view.step == view.state else f"{view.state} ({view.step})"


def _backups(summary: BackupSummary | None) -> str:
    if summary is None:
        return "(your role may not read backups)"
    if not summary.counts:
        return "none yet"
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items()))
    if summary.last_good is None:
        return f"{counts}; no good one"
    assert summary.last_good_at is not None
    return f"{counts}; newest good {summary.last_good} ({full_time(summary.last_good_at)} UTC)"


def _health(view: DeploymentDetail) -> str:
    if not view.health:
        return "not checked"
    return ", ".join(f"{n} {state}" for state, n in sorted(view.health.items()))


def _values(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Parameters or outputs as given: a `[` in a value is text, not markup."""
    return [(escape(key), escape(compact(value))) for key, value in sorted(values.items())]


def _heading(text: str) -> None:
    console.print(f"\n[bold]{escape(text)}[/]", highlight=False)


def show_detail(view: DeploymentDetail) -> None:
    """The fields, then its parameters, machines, outputs, latest events and jobs."""
    from provisor.cli.deployments import lease_line

    fields(
        [
            ("deployment", view.name),
            ("tenant", view.tenant),
            ("blueprint", f"{view.blueprint}@{view.blueprint_version}"),
            ("state", _state(view)),
            *([("error", escape(view.error))] if view.error else []),
            ("owner", view.owner),
            ("provider", view.provider),
            ("created", f"{full_time(view.created_at)} UTC"),
            *([("starts", f"{full_time(view.starts_at)} UTC")] if view.starts_at else []),
            ("lease", lease_line(view) or "none"),
            ("health", _health(view)),
            ("backups", _backups(view.backups)),
        ]
    )
    _heading("parameters")
    if view.inputs:
        fields(_values(view.inputs))  # secrets come masked from the service
    else:
        console.print("none")
    _heading(f"machines ({len(view.machines)})")
    checked = any(m.health for m in view.machines)
    failed = any(m.error for m in view.machines)
    table(
        [
            Col("machine"),
            Col("node"),
            Col("state"),
            Col("address"),
            Col("health", wide=not checked),
            Col("error", cut=True, wide=not failed),
        ],
        [(m.name, m.node, m.state, m.address, m.health, m.error) for m in view.machines],
    )
    if view.outputs:
        _heading("outputs")
        fields(_values(view.outputs))
    _heading("latest events")
    table(
        [
            Col("time"),
            Col("kind"),
            Col("subject", cut=True),
            Col("outcome"),
            Col("details", cut=True),
        ],
        [
            (short_time(e.time, seconds=True), e.kind, e.subject, e.outcome, e.details)
            for e in view.history
        ],
    )
    if view.jobs is not None:
        _heading("latest jobs on its machines")
        if view.jobs:
            table(
                [
                    Col("job"),
                    Col("created"),
                    Col("state"),
                    Col("summary", cut=True),
                    Col("command", cut=True),
                ],
                [_job(j) for j in view.jobs],
            )
        else:
            console.print("none")
    console.print(
        f"\nmore: provisor params {view.name}; provisor backup list {view.name}; "
        f"provisor health {view.name}",
        highlight=False,
        markup=False,
    )


def _job(job: Any) -> tuple[Any, ...]:
    return (job.id, short_time(job.created_at), job.state, compact(job.summary), job.command)
