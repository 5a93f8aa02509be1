"""Loading a blueprint from YAML text, every problem (syntax, schema, cross references,
cycles) reported at once in one `ParseErrors` at its line and column: when the model
does not validate, the parts that can be read are salvaged and cross-checked anyway,
so one run shows all that is wrong rather than the first layer of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from typing import Any

from pydantic import ValidationError

from provisor.core.blueprint._model import _Model
from provisor.core.blueprint.checks import _Problem, _problems
from provisor.core.blueprint.parts import Cost, Node, Parameter
from provisor.core.blueprint.schema import Blueprint
from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.yamlpos import Document, dotted, located_errors, parse_yaml, prefer_text

MAX_ERRORS = 1000
"""Errors reported per blueprint."""


def load_blueprint(text: str, source: str = "<blueprint>") -> Blueprint:
    """Read a blueprint; raises one `ParseErrors` listing every problem, each located."""
    document = parse_yaml(text, source)
    data = document.data
    if not isinstance(data, dict):
        at = document.mark(())
        raise ParseErrors(
            [
                InvalidInput(
                    "a blueprint is a YAML mapping with at least name, version and nodes",
                    source=source,
                    line=at.line,
                    column=at.column,
                )
            ],
            source=source,
        )
    prefer_text(document, Blueprint)
    _defaults_as_written(document)
    errors: list[InvalidInput] = []
    blueprint: Blueprint | None = None
    try:
        blueprint = Blueprint.model_validate(data)
    except ValidationError as exc:
        located = located_errors(exc, document, source, Blueprint, limit=MAX_ERRORS + 1)
        errors += [e for e in located if e.field is not None]  # the rest: cross checks below
    if blueprint is None:
        for problem in _partial_problems(data):
            at = document.mark(problem.path, key=problem.key)
            errors.append(
                InvalidInput(
                    problem.message,
                    source=source,
                    line=at.line,
                    column=at.column,
                    field=dotted(problem.path),
                )
            )
    if errors or blueprint is None:
        raise _collected(errors, source)
    return blueprint


def _collected(errors: list[InvalidInput], source: str) -> ParseErrors:
    unique: dict[tuple[Any, ...], ProvisorError] = {}
    for error in errors:
        unique.setdefault((error.line, error.column, error.field, error.message), error)
    ordered = sorted(unique.values(), key=lambda e: (e.line or 0, e.column or 0))
    if len(ordered) > MAX_ERRORS:
        first_left_out = ordered[MAX_ERRORS]
        ordered = ordered[:MAX_ERRORS]
        ordered.append(
            InvalidInput(
                f"too many errors: only the first {MAX_ERRORS} are shown; more from here on",
                source=source,
                line=first_left_out.line,
                column=first_left_out.column,
            )
        )
    if not ordered:  # cannot happen: a failed validation always says why
        ordered = [InvalidInput("invalid blueprint", source=source)]
    return ParseErrors(ordered, source=source)


def _defaults_as_written(document: Document) -> None:
    """A string or enum parameter's `default: 1.10` is the text "1.10"."""
    params = document.data.get("parameters")
    if not isinstance(params, dict):
        return
    for name, spec in params.items():
        if not isinstance(spec, dict) or spec.get("type", "string") not in ("string", "enum"):
            continue
        default = spec.get("default")
        if default is not None and not isinstance(default, str | list | dict):
            spec["default"] = document.texts.get(("parameters", name, "default"), str(default))


_PLACEHOLDERS = {"image": "unknown"}  # for required fields that failed validation


def _salvage(
    section: str, raw: Any, model: type[_Model], broken: dict[str, Collection[str]]
) -> dict[str, Any]:
    """The section's items as models, each without the fields that failed validation
    (recorded in `broken`), so the rest of it can still be cross-checked."""
    found: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return found
    for name, spec in raw.items():
        try:
            found[name] = model.model_validate(spec)
            continue
        except ValidationError as exc:
            locs = [error["loc"] for error in exc.errors()]
        if not isinstance(spec, dict) or any(not loc for loc in locs):
            continue
        bad = {str(loc[0]) for loc in locs}
        if section == "parameters" and "type" in bad:
            continue  # what it is decides everything else
        kept = {k: v for k, v in spec.items() if k not in bad}
        kept.update({k: v for k, v in _PLACEHOLDERS.items() if k in bad})
        with contextlib.suppress(ValidationError):
            found[name] = model.model_validate(kept)
            broken[f"{section}.{name}"] = bad
    return found


def _partial_problems(data: dict[str, Any]) -> list[_Problem]:
    """Cross-field problems among the parts of a blueprint that could be read."""

    def names(key: str) -> Collection[str] | None:
        raw = data.get(key)
        if raw is None:
            return set()
        return set(raw) if isinstance(raw, dict) else None

    broken: dict[str, Collection[str]] = {}
    params = _salvage("parameters", data.get("parameters"), Parameter, broken)
    nodes = _salvage("nodes", data.get("nodes"), Node, broken)
    raw_outputs = data.get("outputs")
    outputs = (
        {k: v for k, v in raw_outputs.items() if isinstance(v, str)}
        if isinstance(raw_outputs, dict)
        else {}
    )
    cost: Cost | None = None
    if isinstance(data.get("cost"), dict):
        with contextlib.suppress(ValidationError):
            cost = Cost.model_validate(data["cost"])
    param_names, node_names = names("parameters"), names("nodes")
    return _problems(
        params,
        nodes,
        outputs if param_names is not None and node_names is not None else {},
        cost,
        param_names=param_names if param_names is not None else _Everything(),
        node_names=node_names if node_names is not None else _Everything(),
        broken=broken,
        limit=MAX_ERRORS,
    )


class _Everything(Collection[str]):
    """Stands for the names of a section that could not be read: every name is in it."""

    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
