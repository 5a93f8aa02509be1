"""A rollout: a fleet job done in stages (a canary, then batches) that stops when too many
hosts fail, so that a bad change reaches as few hosts as possible."""

from __future__ import annotations

import math
from dataclasses import dataclass

from provisor.core.errors import InvalidInput


@dataclass(frozen=True)
class Amount:
    """A number of hosts, or a percentage of the job's hosts (rounded up)."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int, field: str) -> Amount:
        raw = str(text).strip()
        percent = raw.endswith("%")
        digits = raw.removesuffix("%").strip()
        if not digits.isdigit() or (percent and not 0 <= int(digits) <= 100):
            raise InvalidInput(
                f"{field} {text!r}: give a number of hosts (10) or a percentage (10%)",
                field=field,
            )
        return cls(int(digits), percent)

    def of(self, total: int) -> int:
        return math.ceil(total * self.value / 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class Rollout:
    """`canary` hosts first, each of which must succeed; then `batch` hosts at a time.
    After each stage, more than `max_failures` failed hosts stops the rollout: the hosts
    of later stages are not touched."""

    batch: Amount | None = None  # None: all the remaining hosts at once
    canary: int = 0
    max_failures: Amount | None = None  # None: never stop (each host reports)

    @property
    def staged(self) -> bool:
        return self.batch is not None or self.canary > 0 or self.max_failures is not None

    def stages(self, total: int) -> list[int]:
        """The sizes of the stages for `total` hosts (they add up to `total`)."""
        sizes = []
        left = total
        if self.canary and left:
            sizes.append(min(self.canary, left))
            left -= sizes[-1]
        step = max(1, self.batch.of(total)) if self.batch is not None else left
        while left > 0:
            sizes.append(min(step, left))
            left -= sizes[-1]
        return sizes

    def stop_reason(self, stage: int, failed: int, total: int) -> str | None:
        """Why the rollout stops after `stage` (0-based) with `failed` hosts failed in all,
        or None to go on."""
        if stage == 0 and self.canary and failed:
            return f"{failed} of the {self.canary} canary host(s) failed (--canary)"
        if self.max_failures is not None and failed > self.max_failures.of(total):
            return f"{failed} host(s) failed, more than --max-failures {self.max_failures}" + (
                f" ({self.max_failures.of(total)} of {total})" if self.max_failures.percent else ""
            )
        return None

    def describe(self) -> str:
        parts = []
        if self.canary:
            parts.append(f"canary {self.canary}")
        if self.batch is not None:
            parts.append(f"batches of {self.batch}")
        if self.max_failures is not None:
            parts.append(f"stop above {self.max_failures} failed")
        return ", ".join(parts)
