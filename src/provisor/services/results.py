"""What a job's hosts report: one `HostResult` per host, with exactly one `Outcome`.

Kept apart from `services.jobs`, and light (no store, no SSH), so a command can show
results as they arrive without loading the rest.
"""

from provisor.fleet.results import HostResult, Outcome, result_json

__all__ = ["HostResult", "Outcome", "result_json"]
