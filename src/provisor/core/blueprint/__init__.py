"""Blueprints: versioned YAML templates of multi-machine services, and what they expand to.

A blueprint names its **parameters** (typed inputs), its **nodes** (roles with a count,
an image, a size, volumes, networks, a hostname pattern, user data, post-install
scripts, and the runtime parameters each publishes and waits for) and its
**outputs** (text rendered from runtime parameters once a deployment is ready).
The format is documented in docs/blueprints.md; its JSON Schema, exported by
`schema_text()`, is docs/blueprint.schema.json.

- `load_blueprint(text, source)` reads and checks a blueprint; every problem (YAML
  syntax, schema, cross references, dependency cycles) is reported at once in one
  `ParseErrors`, each error with its line, column and dotted field path.
- `resolve_inputs(bp, given)` turns `-p key=value` strings into typed inputs.
- `expand(bp, inputs, deployment=..., completion=...)` gives one `MachinePlan`
  per machine; `node_order(bp)` the launch waves; `render_outputs` the outputs;
  `estimate_cost` the cost.

Pure: no I/O, nothing imported from the other layers.

The modules, each importing only those before it: `fields` (field checks and
patterns), `parts` (models of parameters, nodes, sizes, prices), `cycles` (graph
cycles), `checks` (cross-field checks), `schema` (the `Blueprint` model and its JSON
Schema), `loading`, `inputs`, `expansion`, `outputs` (outputs and cost). Import from
this package, not from them.
"""

from __future__ import annotations

from provisor.core.blueprint.checks import output_references
from provisor.core.blueprint.expansion import MachinePlan, expand, node_order
from provisor.core.blueprint.fields import (
    AUTOMATIC_KEYS,
    HOST_KEYS,
    MAX_COUNT,
    MAX_MACHINES,
    MAX_NODES,
    MAX_PARAMETERS,
)
from provisor.core.blueprint.inputs import node_counts, resolve_inputs
from provisor.core.blueprint.loading import MAX_ERRORS, load_blueprint
from provisor.core.blueprint.outputs import estimate_cost, render_outputs
from provisor.core.blueprint.parts import (
    Cost,
    Ingress,
    Network,
    Node,
    Parameter,
    Size,
    Volume,
    size_key,
)
from provisor.core.blueprint.schema import Blueprint, json_schema, schema_text, version_key

__all__ = [
    "AUTOMATIC_KEYS",
    "HOST_KEYS",
    "MAX_COUNT",
    "MAX_ERRORS",
    "MAX_MACHINES",
    "MAX_NODES",
    "MAX_PARAMETERS",
    "Blueprint",
    "Cost",
    "Ingress",
    "MachinePlan",
    "Network",
    "Node",
    "Parameter",
    "Size",
    "Volume",
    "estimate_cost",
    "expand",
    "json_schema",
    "load_blueprint",
    "node_counts",
    "node_order",
    "output_references",
    "render_outputs",
    "resolve_inputs",
    "schema_text",
    "size_key",
    "version_key",
]
