"""A deployment's outputs and cost: output templates rendered from runtime parameters
and inputs, and the estimate of what its machines, volumes and addresses cost over
some hours by the blueprint's prices; the top of the package, since rendering uses the
value text of `expansion` and the estimate the node counts of `inputs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisor.core.blueprint.checks import _template_parts
from provisor.core.blueprint.expansion import _env_text
from provisor.core.blueprint.inputs import node_counts
from provisor.core.blueprint.parts import Cost, size_key
from provisor.core.blueprint.schema import Blueprint
from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError


def render_outputs(
    bp: Blueprint, params: Mapping[str, str], *, inputs: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The outputs with `{{ NODE.INDEX.KEY }}` replaced by `params["NODE.INDEX.KEY"]` (the
    runtime parameters) and `{{ params.NAME }}` by the input `NAME`.

    A plain substitution, not a template language; every reference that has no value
    is reported, naming it, in one `ParseErrors`.
    """
    rendered: dict[str, str] = {}
    errors: list[ProvisorError] = []
    for name, template in bp.outputs.items():
        pieces: list[str] = []
        position = 0
        for ref, start, end in _template_parts(template):
            assert ref is not None
            pieces.append(template[position:start])
            position = end
            if ref.startswith("params."):
                param = ref.removeprefix("params.")
                if inputs is None or param not in inputs:
                    errors.append(
                        InvalidInput(f"input {param!r} is not given", field=f"outputs.{name}")
                    )
                    continue
                pieces.append(_env_text(inputs[param]))
            elif ref in params:
                pieces.append(str(params[ref]))
            else:
                errors.append(
                    InvalidInput(f"runtime parameter {ref!r} is not set", field=f"outputs.{name}")
                )
        pieces.append(template[position:])
        rendered[name] = "".join(pieces)
    if errors:
        raise ParseErrors(errors)
    return rendered


def estimate_cost(bp: Blueprint, inputs: Mapping[str, Any], *, hours: float) -> dict[str, Any]:
    """What a deployment with these inputs costs over `hours`, by the blueprint's prices.

    Each machine is priced by its size (`size_key`), each GB of volume and each
    address (one per network a machine is on, at least one per machine) per hour.
    Without a `cost` section every price is 0 and the currency is None.
    """
    if not hours >= 0 or hours == float("inf"):
        raise InvalidInput(f"invalid duration {hours} hours", field="hours")
    counts = node_counts(bp, inputs)
    cost = bp.cost or Cost()
    per_node: dict[str, dict[str, Any]] = {}
    totals = {"machines": 0, "volume_gb": 0, "addresses": 0}
    money = {"machine_cost": 0.0, "volume_cost": 0.0, "address_cost": 0.0}
    for name, node in bp.nodes.items():
        count = counts[name]
        key = size_key(node.size)
        hourly = cost.machine_hour.get(key, cost.machine_hour.get("default", 0.0))
        gigabytes = count * sum(v.size_gb for v in node.volumes)
        addresses = count * max(1, len(node.networks))
        machine_cost = count * hourly * hours
        volume_cost = gigabytes * cost.volume_gb_hour * hours
        address_cost = addresses * cost.address_hour * hours
        per_node[name] = {
            "count": count,
            "size": key,
            "machine_hour": hourly,
            "volume_gb": gigabytes,
            "addresses": addresses,
            "cost": round(machine_cost + volume_cost + address_cost, 4),
        }
        totals["machines"] += count
        totals["volume_gb"] += gigabytes
        totals["addresses"] += addresses
        money["machine_cost"] += machine_cost
        money["volume_cost"] += volume_cost
        money["address_cost"] += address_cost
    return {
        "currency": bp.cost.currency if bp.cost else None,
        "hours": hours,
        **totals,
        **{k: round(v, 4) for k, v in money.items()},
        "total": round(sum(money.values()), 4),
        "nodes": per_node,
    }
