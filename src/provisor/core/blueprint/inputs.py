"""A deployment's inputs: `-p name=value` strings turned into typed values by the
blueprint's parameters (defaults fill in), and each node's machine count; every
unknown, missing or out-of-bounds value is reported together in one `ParseErrors`,
and a secret's value never appears in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisor.core.blueprint.checks import _Suggester
from provisor.core.blueprint.fields import MAX_COUNT, MAX_MACHINES
from provisor.core.blueprint.parts import _check_value, _convert
from provisor.core.blueprint.schema import Blueprint
from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError


def _input_errors(
    bp: Blueprint, given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[InvalidInput]]:
    values: dict[str, Any] = {}
    errors: list[InvalidInput] = []
    suggest = _Suggester()
    for name in given:
        if name not in bp.parameters:
            known = ", ".join(bp.parameters) or "none"
            errors.append(
                InvalidInput(
                    f"unknown parameter {name!r}{suggest(name, bp.parameters)}; "
                    f"the blueprint's parameters: {known}",
                    field=f"parameters.{name}",
                )
            )
    for name, p in bp.parameters.items():
        if name in given:
            try:
                value = _convert(p, given[name])
            except ValueError as exc:
                errors.append(InvalidInput(str(exc), field=f"parameters.{name}"))
                continue
        elif p.default is not None:
            value = p.default
        else:
            errors.append(
                InvalidInput(
                    f"missing required parameter {name!r} ({p.type}, no default)",
                    field=f"parameters.{name}",
                )
            )
            continue
        problem = _check_value(p, value)
        if problem:
            errors.append(InvalidInput(problem, field=f"parameters.{name}"))
            continue
        values[name] = value
    return values, errors


def resolve_inputs(bp: Blueprint, given: Mapping[str, Any]) -> dict[str, Any]:
    """Typed inputs from `-p name=value` strings (typed values are accepted too).

    Defaults fill in what is not given; a secret becomes a `SecretStr`. Unknown and
    missing parameters and values out of bounds are all reported in one `ParseErrors`.
    """
    values, errors = _input_errors(bp, given)
    if errors:
        raise ParseErrors([*errors])
    return values


def node_counts(bp: Blueprint, inputs: Mapping[str, Any]) -> dict[str, int]:
    """How many machines each node has with these inputs (defaults fill in)."""
    counts: dict[str, int] = {}
    errors: list[ProvisorError] = []
    for name, node in bp.nodes.items():
        if isinstance(node.count, int):
            counts[name] = node.count
            continue
        p = bp.parameters[node.count]
        raw = inputs.get(node.count, p.default)
        try:
            if raw is None:
                raise ValueError(f"parameter {node.count!r} is required (no default)")
            value = _convert(p, raw)
            problem = _check_value(p, value)
            if problem:
                raise ValueError(problem)
            if not 0 <= value <= MAX_COUNT:
                raise ValueError(f"{value} machines: a node has 0 to {MAX_COUNT}")
        except ValueError as exc:
            errors.append(
                InvalidInput(f"count of node {name!r}: {exc}", field=f"parameters.{node.count}")
            )
            continue
        counts[name] = value
    total = sum(counts.values())
    if total > MAX_MACHINES and not errors:
        errors.append(
            InvalidInput(
                f"{total} machines in all: a deployment has at most {MAX_MACHINES}", field="nodes"
            )
        )
    if errors:
        raise ParseErrors(errors)
    return counts
