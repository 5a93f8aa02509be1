"""Expansion: a blueprint and its inputs become one `MachinePlan` per machine (name,
hostname, environment, concrete waits), in the launch waves of `node_order`; all that
is wrong (names, hostnames, counts, waits) is reported together in one `ParseErrors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import SecretStr

from provisor.core.blueprint.fields import _DNS_LABEL, _WAIT
from provisor.core.blueprint.inputs import _input_errors, node_counts
from provisor.core.blueprint.parts import Ingress, Network, Node, Size, Volume
from provisor.core.blueprint.schema import Blueprint
from provisor.core.errors import InvalidInput, ParseErrors, ProvisorError
from provisor.core.names import check_name

_COMPLETION = re.compile(r"[A-Za-z0-9-]{1,63}")


@dataclass(frozen=True)
class MachinePlan:
    """One machine of a deployment, fully resolved.

    `waits_for` lists concrete `NODE.INDEX.KEY` runtime parameters; `publishes` the
    keys this machine's scripts set (besides `address` and `hostname`). `env` holds
    the parameters (secrets in clear: scripts need them) and is left out of `repr`;
    `secret_env` names the variables that hold secrets.
    """

    node: str
    index: int
    name: str
    hostname: str
    image: str
    size: Size
    volumes: tuple[Volume, ...]
    networks: tuple[Network, ...]
    user_data: str | None
    scripts: tuple[str, ...]
    depends_on: tuple[str, ...]
    publishes: tuple[str, ...]
    waits_for: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False, compare=False)
    secret_env: frozenset[str] = frozenset()
    public_address: bool = False
    ingress: tuple[Ingress, ...] = ()

    @property
    def key(self) -> str:
        """`app.2`: how runtime parameters name this machine."""
        return f"{self.node}.{self.index}"


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def _count_variable(node: str) -> str:
    return "PROVISOR_COUNT_" + node.upper().replace("-", "_")


def _hostname(pattern: str, index: int, count: int, completion: str) -> str:
    hostname = pattern.replace("#", completion)
    if count > 1:
        hostname += ("-" if hostname[-1].isdigit() else "") + str(index)
    return hostname


def expand(
    bp: Blueprint,
    inputs: Mapping[str, Any],
    *,
    deployment: str,
    completion: str | None = None,
) -> list[MachinePlan]:
    """Every machine of a deployment, in launch order (`node_order`, then index).

    `inputs` are those of `resolve_inputs` (raw strings are converted the same way).
    The machine name is DEPLOYMENT-NODE-INDEX; the hostname comes from the node's
    pattern (default: the node name) with `#` replaced by `completion`, and the index
    appended when the node has more than one machine (`app1`, `app2`; `web2-1` when
    the pattern ends in a digit).
    """
    errors: list[ProvisorError] = []
    try:
        check_name(deployment, field="deployment")
    except InvalidInput as exc:
        errors.append(exc)
    if completion is not None and not _COMPLETION.fullmatch(completion):
        errors.append(
            InvalidInput(
                f"invalid hostname completion {completion!r}: letters, digits and '-'",
                field="completion",
            )
        )
    values, input_errors = _input_errors(bp, inputs)
    errors += input_errors
    if errors:
        raise ParseErrors(errors)
    counts = node_counts(bp, values)
    env: dict[str, str] = {name.upper(): _env_text(v) for name, v in values.items()}
    env["PROVISOR_DEPLOYMENT"] = deployment
    env.update({_count_variable(n): str(c) for n, c in counts.items()})
    secret_env = frozenset(n.upper() for n, p in bp.parameters.items() if p.type == "secret")
    plans: list[MachinePlan] = []
    hostnames: dict[str, str] = {}
    for wave in node_order(bp):
        for node_name in wave:
            node = bp.nodes[node_name]
            pattern = node.hostname or node_name
            if "#" in pattern and completion is None:
                errors.append(
                    InvalidInput(
                        f"node {node_name!r} has the hostname pattern {pattern!r}: give the "
                        "hostname completion that replaces '#' (--hostname-completion; "
                        "`completion` over the API)",
                        field="completion",
                    )
                )
                continue
            waits = _concrete_waits(node_name, node, counts, errors)
            for index in range(1, counts[node_name] + 1):
                hostname = _hostname(pattern, index, counts[node_name], completion or "")
                machine = f"{node_name}.{index}"
                if not _DNS_LABEL.fullmatch(hostname):
                    errors.append(
                        InvalidInput(
                            f"hostname {hostname!r} of {machine} is not a valid DNS label "
                            "(letters, digits, '-', at most 63)",
                            field=f"nodes.{node_name}.hostname",
                        )
                    )
                    continue
                if hostname.lower() in hostnames:
                    errors.append(
                        InvalidInput(
                            f"{machine} and {hostnames[hostname.lower()]} would both be "
                            f"named {hostname!r}",
                            field=f"nodes.{node_name}.hostname",
                        )
                    )
                    continue
                hostnames[hostname.lower()] = machine
                plan_name = f"{deployment}-{node_name}-{index}"
                plans.append(
                    MachinePlan(
                        node=node_name,
                        index=index,
                        name=plan_name,
                        hostname=hostname,
                        image=node.image,
                        size=node.size,
                        volumes=node.volumes,
                        networks=node.networks,
                        user_data=node.user_data,
                        scripts=node.scripts,
                        depends_on=node.depends_on,
                        publishes=node.publishes,
                        waits_for=waits,
                        env=MappingProxyType(
                            {
                                **env,
                                "PROVISOR_NODE": node_name,
                                "PROVISOR_INDEX": str(index),
                                "PROVISOR_MACHINE": plan_name,
                                "PROVISOR_HOSTNAME": hostname,
                            }
                        ),
                        secret_env=secret_env,
                        public_address=node.public_address,
                        ingress=bp.ingress,
                    )
                )
    try:
        for plan in plans:
            check_name(plan.name, field="deployment")
    except InvalidInput as exc:
        errors.append(InvalidInput(f"machine name too long: {exc.message}", field="deployment"))
    if errors:
        raise ParseErrors(errors)
    return plans


def _concrete_waits(
    name: str, node: Node, counts: Mapping[str, int], errors: list[ProvisorError]
) -> tuple[str, ...]:
    waits: list[str] = []
    for ref in node.waits_for:
        match = _WAIT.fullmatch(ref)
        assert match is not None
        target, index, key = match.group(1), match.group(2), match.group(3)
        if index is None:
            waits += [f"{target}.{i}.{key}" for i in range(1, counts[target] + 1)]
        elif int(index) > counts[target]:
            errors.append(
                InvalidInput(
                    f"{name} waits for {ref}, but node {target!r} has {counts[target]} machine(s)",
                    field=f"nodes.{name}.waits_for",
                )
            )
        else:
            waits.append(f"{target}.{int(index)}.{key}")
    return tuple(dict.fromkeys(waits))


def node_order(bp: Blueprint) -> list[list[str]]:
    """The nodes in launch waves: each wave depends only on earlier ones (`depends_on`).

    Within a wave nodes keep their order in the blueprint. A loaded blueprint has no
    cycles; were there one, its nodes would be left out.
    """
    remaining = {name: set(node.depends_on) for name, node in bp.nodes.items()}
    waves: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        wave = [name for name, needs in remaining.items() if needs <= done]
        if not wave:
            break
        waves.append(wave)
        done.update(wave)
        for name in wave:
            del remaining[name]
    return waves
