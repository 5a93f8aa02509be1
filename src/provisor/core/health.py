"""A machine's health as a state machine, a pure function of (state, event).

    healthy -fail-> degraded -(failures in a row)-> unhealthy -recovery-> recovering
    degraded, unhealthy, recovering, failed -(successes in a row)-> healthy
    recovering -(ladder exhausted)-> failed

A round is one run of every check of the machine: it passes when all pass. `failures`
consecutive failed rounds make a machine unhealthy (a new incident, numbered), and
`successes` consecutive good rounds make a degraded, unhealthy, recovering or failed
machine healthy again. While recovering, failed rounds are counted (the recovery
decides when an action did not help) but change no state: only the recovery ends it,
or good rounds. The monitor and the recovery workflow both step machines with
`observe`; `recovery_started` and `recovery_exhausted` are the recovery's own moves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class HealthState(StrEnum):
    healthy = "healthy"
    degraded = "degraded"  # failing, not yet for `failures` rounds
    unhealthy = "unhealthy"  # an incident: recovery starts
    recovering = "recovering"  # the recovery ladder is being climbed
    failed = "failed"  # the ladder was exhausted; a person is needed


@dataclass(frozen=True)
class Thresholds:
    failures: int = 3  # consecutive failed rounds before unhealthy
    successes: int = 2  # consecutive good rounds before healthy again

    def __post_init__(self) -> None:
        if self.failures < 1 or self.successes < 1:
            raise ValueError("failures and successes are at least 1")


@dataclass(frozen=True)
class Health:
    """A machine's health: its state, consecutive results, and its incidents so far."""

    state: HealthState = HealthState.healthy
    failures: int = 0  # consecutive failed rounds
    successes: int = 0  # consecutive good rounds
    incident: int = 0  # the number of the last incident (0: none yet)

    @property
    def in_incident(self) -> bool:
        """Whether an incident is open (unhealthy, recovering or failed)."""
        return self.state in (HealthState.unhealthy, HealthState.recovering, HealthState.failed)


_CAP = 1_000_000  # counters stop here: a machine checked for years never overflows a column


def observe(health: Health, ok: bool, thresholds: Thresholds) -> Health:
    """The machine's health after one round of checks that passed (`ok`) or not."""
    if ok:
        successes = min(health.successes + 1, _CAP)
        if health.state is HealthState.healthy:
            return replace(health, failures=0, successes=successes)
        if successes >= thresholds.successes:
            return replace(health, state=HealthState.healthy, failures=0, successes=0)
        return replace(health, failures=0, successes=successes)
    failures = min(health.failures + 1, _CAP)
    if health.state in (HealthState.healthy, HealthState.degraded):
        if failures >= thresholds.failures:
            return Health(HealthState.unhealthy, failures, 0, health.incident + 1)
        return replace(health, state=HealthState.degraded, failures=failures, successes=0)
    return replace(health, failures=failures, successes=0)


def recovery_started(health: Health) -> Health:
    """An unhealthy machine's recovery began; its counters start over (the recovery
    counts the rounds after each action). Any other state is kept as it is."""
    if health.state is not HealthState.unhealthy:
        return health
    return replace(health, state=HealthState.recovering, failures=0, successes=0)


def action_taken(health: Health) -> Health:
    """A recovery action was taken: the rounds after it are counted from zero."""
    if health.state is not HealthState.recovering:
        return health
    return replace(health, failures=0, successes=0)


def recovery_exhausted(health: Health) -> Health:
    """Every rung of the ladder was tried and the machine is still not healthy."""
    if health.state not in (HealthState.recovering, HealthState.unhealthy):
        return health
    return replace(health, state=HealthState.failed, successes=0)


def gave_up(health: Health, thresholds: Thresholds) -> bool:
    """Whether the rounds since the last action say it did not help."""
    return health.state is not HealthState.healthy and health.failures >= thresholds.failures


__all__ = [
    "Health",
    "HealthState",
    "Thresholds",
    "action_taken",
    "gave_up",
    "observe",
    "recovery_exhausted",
    "recovery_started",
]
