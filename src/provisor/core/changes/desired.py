"""From observed states to changes: each resource, in document order, applied to its
object's observed state gives the desired state; every object whose desired state
differs from the observed one is a `Change`. A rollback plan is the same comparison
with the snapshot as the desired state.

States are compared normalised (a sysctl value's whitespace, a missing file's
attributes), so planning again after a successful apply finds nothing to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from provisor.core.changes.desired_apply import (
    SYSCTL_FILE,
    ResourceError,
    apply_resource,
    keys_of,
    same_state,
)
from provisor.core.changes.model import (
    Change,
    FileState,
    ObjectKey,
    PackageState,
    Resource,
    ServiceResource,
    ServiceState,
    State,
    SysctlState,
    UserState,
)
from provisor.core.changes.report import change_diff, change_summary

__all__ = ["SYSCTL_FILE", "HostPlan", "object_keys", "plan_host", "rollback_plan"]


@dataclass
class HostPlan:
    """What one host needs: its changes, and why some objects could not be planned."""

    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def object_keys(resources: Sequence[Resource]) -> list[ObjectKey]:
    """The objects the resources act on, in document order, each once."""
    keys: dict[ObjectKey, None] = {}
    for resource in resources:
        keys.update(dict.fromkeys(keys_of(resource)))
    return list(keys)


def _label(index: int, resource: Resource) -> str:
    return f"resources[{index}]" + (f" ({resource.id})" if resource.id else "")


def plan_host(resources: Sequence[Resource], observed: Mapping[ObjectKey, State]) -> HostPlan:
    """The changes that bring the observed objects to what `resources` say (rendered:
    see `render`). A resource that fails leaves its object unplanned; the others are."""
    plan = HostPlan()
    desired: dict[ObjectKey, State] = {}
    failed: set[ObjectKey] = set()
    for index, resource in enumerate(resources):
        for key, effect in apply_resource(resource):
            if key in failed:
                continue
            current = desired.get(key, observed.get(key))
            if current is None:
                plan.errors.append(f"{key}: not read from the host ({_label(index, resource)})")
                failed.add(key)
                continue
            try:
                desired[key] = effect(current)
            except ResourceError as exc:
                plan.errors.append(f"{key}: {exc} ({_label(index, resource)})")
                failed.add(key)
    changed: dict[ObjectKey, Change] = {}
    for key in object_keys(resources):
        if key in failed or key not in desired or same_state(observed[key], desired[key]):
            continue
        before, after = observed[key], desired[key]
        changed[key] = Change(
            key, before, after, change_summary(key, before, after), change_diff(key, before, after)
        )
    _mark_restarts(resources, observed, changed, failed)
    plan.changes = [change for change in changed.values()]
    return plan


def _mark_restarts(
    resources: Sequence[Resource],
    observed: Mapping[ObjectKey, State],
    changed: dict[ObjectKey, Change],
    failed: set[ObjectKey],
) -> None:
    """A service restarts when a file in its `restart_on` changes in this plan, unless it
    is being started anyway, or is stopped before and after (a restart would start it)."""
    for resource in resources:
        if not isinstance(resource, ServiceResource) or not resource.restart_on:
            continue
        key = ObjectKey("service", resource.name)
        causes = [p for p in resource.restart_on if ObjectKey("file", p) in changed]
        before = observed.get(key)
        if not causes or key in failed or not isinstance(before, ServiceState):
            continue
        change = changed.get(key)
        after = change.after if change is not None else before
        assert isinstance(after, ServiceState)
        if before.running is False or after.running is False:
            continue
        reason = ", ".join(causes) + " changed"
        summary = change_summary(key, before, after, restart=reason)
        changed[key] = Change(key, before, after, summary, restart=True)


def rollback_plan(
    snapshot: Sequence[tuple[ObjectKey, State]], observed: Mapping[ObjectKey, State]
) -> HostPlan:
    """The changes that write each snapshot state back where the observed state differs,
    each with notes on what cannot be restored."""
    plan = HostPlan()
    for key, recorded in snapshot:
        current = observed.get(key)
        if current is None:
            plan.errors.append(f"{key}: not read from the host")
            continue
        problem = _unrestorable(recorded)
        if problem:
            plan.errors.append(f"{key}: {problem}; not restored")
            continue
        if same_state(current, recorded):
            continue
        plan.changes.append(
            Change(
                key,
                current,
                recorded,
                change_summary(key, current, recorded),
                change_diff(key, current, recorded),
                notes=_rollback_notes(current, recorded),
            )
        )
    return plan


def _unrestorable(recorded: State) -> str | None:
    if isinstance(recorded, FileState) and recorded.kind == "other":
        return "was not a regular file when the snapshot was taken"
    if isinstance(recorded, FileState) and recorded.exists and recorded.content is None:
        return "its content was not kept in the snapshot"
    if isinstance(recorded, SysctlState) and recorded.value is None:
        return "the kernel had no such parameter when the snapshot was taken"
    return None


def _rollback_notes(current: State, recorded: State) -> tuple[str, ...]:
    notes: list[str] = []
    if isinstance(current, PackageState) and isinstance(recorded, PackageState):
        wanted = recorded.version
        if wanted is not None and wanted != current.version and current.candidate != wanted:
            manager = current.manager or recorded.manager or "the package manager"
            notes.append(
                f"{manager} may not offer version {wanted} any more; the rollback tries it"
            )
    if isinstance(current, UserState) and isinstance(recorded, UserState):
        if current.exists and not recorded.exists:
            home = current.home or "its home directory"
            notes.append(f"the user is removed but keeps {home}")
        if recorded.exists and not current.exists:
            notes.append(
                "the user is created again with a new uid; files it owned keep the old one"
            )
    return tuple(notes)


def applied(observed: Mapping[ObjectKey, State], plan: HostPlan) -> dict[ObjectKey, State]:
    """The observed states with the plan's changes made (what a successful apply leaves)."""
    result = dict(observed)
    for change in plan.changes:
        after = change.after
        if isinstance(after, FileState) and not after.exists:
            after = dataclasses.replace(after, content=None)
        result[change.key] = after
    return result
