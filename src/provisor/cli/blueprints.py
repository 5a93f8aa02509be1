"""`provisor blueprints ...`: validate, add, list and show blueprints."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from provisor.cli._context import context
from provisor.cli.output import (
    Col,
    Format,
    WideOption,
    console,
    emit_json,
    full_time,
    read_input_file,
    short_time,
    table,
)
from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.names import parse_key_values

if TYPE_CHECKING:
    from provisor.services.blueprints import BlueprintSummary


def _service() -> Any:
    """The blueprint use cases, loaded by the commands that need them."""
    from provisor.services import blueprints

    return blueprints


app = typer.Typer(
    help="Blueprints: versioned templates of multi-machine services.", no_args_is_help=True
)

OutputOption = Annotated[Format, typer.Option("--output", help="table or json")]


class ShowFormat(StrEnum):
    yaml = "yaml"
    json = "json"


def _read(path: Path) -> str:
    from provisor.core.yamlpos import MAX_TEXT  # here: the YAML reader loads on use

    # A blueprint is at most MAX_TEXT characters, each at most 4 bytes of UTF-8.
    data = read_input_file(path, field="file", limit=4 * MAX_TEXT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path} is not UTF-8 text (byte {exc.start + 1})", field="file"
        ) from None


def error_line(error: ProvisorError, source: str) -> str:
    """`file:line:col: field: message`, leaving out the parts that are not known."""
    where = error.location if error.source else source
    return ": ".join(part for part in (where, error.field, error.message) if part)


def _error_record(error: ProvisorError, source: str) -> dict[str, object]:
    return {
        "source": error.source or source,
        "line": error.line,
        "column": error.column,
        "field": error.field,
        "message": error.message,
    }


def _fail(exc: ParseErrors, source: str, output: Format) -> None:
    """Every error on its own line (or as JSON), then exit 2."""
    if output is Format.json:
        records = [_error_record(e, source) for e in exc.errors]
        sys.stdout.write(json.dumps({"valid": False, "errors": records}, indent=2) + "\n")
    else:
        for error in exc.errors:
            sys.stderr.write(error_line(error, source) + "\n")
        sys.stderr.write(f"{len(exc.errors)} error(s)\n")
    raise typer.Exit(2)


def _print_summary(summary: BlueprintSummary) -> None:
    console.print(f"[bold]{escape(summary.name)}[/] {escape(summary.version)}: valid")
    nodes = ", ".join(f"{name} ({count})" for name, count in summary.nodes.items())
    machines = "?" if summary.machines is None else str(summary.machines)
    console.print(f"  nodes: {escape(nodes)}; {machines} machine(s) with these inputs")
    console.print("  launch: " + " then ".join(", ".join(wave) for wave in summary.waves))
    params = []
    for name, p in summary.parameters.items():
        value = "required" if p.required else f"= {p.default!r}"
        params.append(f"{name} ({p.type}, {value})")
    console.print("  parameters: " + escape(", ".join(params) or "none"))
    console.print("  outputs: " + escape(", ".join(summary.outputs) or "none"))
    extras = [f"approval {summary.approval}", f"lease {summary.lease or 'none'}"]
    if summary.cost_per_hour is not None:
        extras.append(f"{summary.cost_per_hour:.4f} {summary.currency}/hour")
    console.print("  " + ", ".join(extras))


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="the blueprint's YAML file")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="NAME=VALUE, repeatable: check these inputs too"),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Check a blueprint; print every problem as file:line:col: field: message."""
    source = str(file)
    text = _read(file)
    try:
        bp = _service().validate_blueprint(text, source)
        given = parse_key_values(param or [], field="param")
        summary = _service().summarize_blueprint(bp, given or None)
    except ParseErrors as exc:
        _fail(exc, source, output)
        return
    if output is Format.json:
        sys.stdout.write(json.dumps({"valid": True, **summary.model_dump(mode="json")}, indent=2))
        sys.stdout.write("\n")
    else:
        _print_summary(summary)


@app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="the blueprint's YAML file")],
    output: OutputOption = Format.table,
) -> None:
    """Store a blueprint as a new version (its name and version come from the file)."""
    source = str(file)
    text = _read(file)
    try:
        view = _service().add_blueprint(context(), text, source)
    except ParseErrors as exc:
        _fail(exc, source, output)
        return
    if output is Format.json:
        emit_json(view)
    else:
        console.print(
            f"stored blueprint [bold]{escape(view.name)}[/] version {escape(view.version)} "
            f"({len(view.nodes)} node(s), sha256 {view.sha256[:12]})"
        )


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Option("--name", help="only this blueprint")] = None,
    output: OutputOption = Format.table,
    wide: WideOption = False,
) -> None:
    """List stored blueprints, every version (long fields shortened to fit the terminal;
    --wide: whole)."""
    views = _service().list_blueprints(context(), name=name)
    if output is Format.json:
        emit_json(views)
        return
    table(
        [
            Col("name"),
            Col("version"),
            Col("approval"),
            Col("nodes", cut=True),
            Col("parameters", cut=True),
            Col("added"),
            Col("by", cut=True),
        ],
        [
            (
                v.name,
                v.version,
                v.approval,
                v.nodes,
                ",".join(v.parameters),
                full_time(v.created_at) if wide else short_time(v.created_at),
                v.created_by,
            )
            for v in views
        ],
        wide=wide,
    )
    console.print(f"{len(views)} blueprint version(s)")


@app.command("show")
def show(
    name: str,
    version: Annotated[str | None, typer.Option("--version", help="default: the latest")] = None,
    output: Annotated[
        ShowFormat, typer.Option("--output", help="yaml (the text) or json")
    ] = ShowFormat.yaml,
) -> None:
    """Print a stored blueprint: its YAML text, or JSON with the text and details."""
    detail = _service().get_blueprint(context(), name, version)
    if output is ShowFormat.json:
        emit_json(detail)
        return
    sys.stdout.write(detail.text if detail.text.endswith("\n") else detail.text + "\n")
