"""Showing a fleet job as it runs: stream, fold or JSON, a progress line, a summary."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from typing import IO

from provisor.core.nodeset import fold, natural_key
from provisor.services.results import HostResult, Outcome, result_json

CONNECTION_PROBLEMS = {Outcome.unreachable, Outcome.auth, Outcome.hostkey, Outcome.error}


def exit_status(counts: Counter[str], *, unconnected: int = 0) -> int:
    """0 all ok; 1 a command failed or timed out, or a rollout stopped; 3 a host could not
    be worked on (among them `unconnected` hosts whose SSH connection timed out)."""
    if unconnected or any(counts.get(o.value) for o in CONNECTION_PROBLEMS):
        return 3
    if any(counts.get(o.value) for o in (Outcome.failed, Outcome.timeout, Outcome.skipped)):
        return 1
    return 0


def _status_text(result: HostResult) -> str:
    text = result.outcome.value
    if result.ok and "signalled" in result.details:  # kill: how many, not just ok
        count = int(result.details["signalled"])
        text += f" ({count} process{'es' if count != 1 else ''} signalled)"
    if result.outcome is Outcome.failed and result.exit_code is not None:
        text += f" (exit {result.exit_code})"
    if result.error:
        text += f": {result.error}"
    return text


class Reporter:
    """Prints results in one of three modes, with a live progress line on a TTY."""

    def __init__(
        self,
        mode: str,
        total: int,
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.mode = mode
        self.total = total
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.progress = self.err.isatty() if progress is None else progress
        self.counts: Counter[str] = Counter()
        self.results: list[HostResult] = []
        self._last_progress = 0.0
        self._progress_shown = False
        self.started = time.monotonic()

    # called by the job as each host finishes
    def result(self, result: HostResult) -> None:
        self.counts[result.outcome.value] += 1
        self.results.append(result)
        if self.mode == "stream":
            self._clear_progress()
            self._stream(result)
        elif self.mode == "json":
            self._clear_progress()
            self.out.write(json.dumps(result_json(result)) + "\n")
            self.out.flush()
        self._show_progress()

    def _stream(self, result: HostResult) -> None:
        for line in result.text("stdout").splitlines():
            self.out.write(f"{result.host}: {line}\n")
        for line in result.text("stderr").splitlines():
            self.err.write(f"{result.host}: {line}\n")
        if not result.ok:
            self.err.write(f"{result.host}: [{_status_text(result)}]\n")
        elif "signalled" in result.details:
            self.out.write(f"{result.host}: [{_status_text(result)}]\n")
        self.out.flush()

    def _show_progress(self, force: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        done = sum(self.counts.values())
        if not force and now - self._last_progress < 0.1 and done < self.total:
            return
        self._last_progress = now
        failed = done - self.counts.get("ok", 0)
        self.err.write(
            f"\r\033[K[{done}/{self.total}] ok {self.counts.get('ok', 0)}  "
            f"failed {failed}  remaining {self.total - done}  {now - self.started:.1f}s"
        )
        self.err.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\033[K")
            self._progress_shown = False

    def finish(self, job_id: int | None = None) -> int:
        """Print what is left to print and the summary; return the exit status."""
        self._clear_progress()
        if self.mode == "fold":
            self._fold()
        if self.mode != "json":
            self._summary(job_id)
        unconnected = sum(1 for r in self.results if r.details.get("limit") == "connect")
        return exit_status(self.counts, unconnected=unconnected)

    def _fold(self) -> None:
        groups: dict[tuple[str, str, bytes, bytes, int, int], list[HostResult]] = defaultdict(list)
        for r in self.results:  # the kept bytes themselves: no copy per host
            key = (
                _status_text(r),
                r.outcome.value,
                r.stdout,
                r.stderr,
                r.stdout_dropped,
                r.stderr_dropped,
            )
            groups[key].append(r)
        for (status, _outcome, *_), results in sorted(
            groups.items(),
            key=lambda item: (item[0][1] != "ok", -len(item[1]), natural_key(item[1][0].host)),
        ):
            self.out.write("-" * 15 + "\n")
            self.out.write(f"{fold([r.host for r in results])} ({len(results)}): {status}\n")
            self.out.write("-" * 15 + "\n")
            for stream in ("stdout", "stderr"):
                if results[0].size(stream):
                    self.out.write(results[0].text(stream).rstrip("\n") + "\n")
        self.out.flush()

    def _summary(self, job_id: int | None) -> None:
        elapsed = time.monotonic() - self.started
        parts = [f"{n} {o}" for o, n in sorted(self.counts.items(), key=lambda i: i[0] != "ok")]
        job = f"job {job_id}, " if job_id is not None else ""
        self.err.write(
            f"{self.total} host(s): {', '.join(parts) or 'none'} ({job}{elapsed:.2f}s)\n"
        )
        by_outcome: dict[str, list[str]] = defaultdict(list)
        for r in self.results:
            if not r.ok:
                by_outcome[r.outcome.value].append(r.host)
        for outcome, hosts in sorted(by_outcome.items()):
            self.err.write(f"  {outcome}: {fold(hosts)}\n")
        self.err.flush()
