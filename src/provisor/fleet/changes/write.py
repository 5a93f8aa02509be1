"""Writing host objects: one script brings each object from `before` to `after` in
order, stops at the first failure, then reads every object back (the probe) so the
caller verifies without another round trip.

A file is written atomically (a temporary file beside it, moved over it) and only if
its content is still `before`'s; a password hash goes to `chpasswd -e` through a pipe
from the shell's printf builtin, so it is in no process's argv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provisor.core.changes.model import ObjectKey, State, Write
from provisor.fleet.changes.probe import (
    PACKAGE_MANAGER,
    SERVICE_MANAGER,
    output_limit,
    probe_body,
)
from provisor.fleet.changes.records import read_records
from provisor.fleet.changes.shell import script
from provisor.fleet.changes.states import read_state
from provisor.fleet.changes.writers import helpers, write_body

# try WHAT CMD...: run a command (no stdin, output kept, the session's fd 3 closed so
# a daemon it starts cannot hold the session open); on failure the message ends with
# the tail of its output. put PATH OWNER MODE: stdin (base64) to PATH, atomically.
_HELPERS = r"""stop=0
fail() { printf '%s' "$1" > "$T/msg"; return 1; }
try() {
  w=$1; shift
  "$@" </dev/null >"$T/out" 2>&1 3>&- && return 0
  fail "$w failed (exit $?): $(tail -c 2000 "$T/out")"
}
put() {
  if ! t=$(mktemp "${1%/*}/.provisor.XXXXXX" 2>"$T/out"); then
    fail "cannot create a file beside $1: $(cat "$T/out")"; return 1
  fi
  if ! base64 -d > "$t" 2>"$T/out"; then
    rm -f -- "$t"; fail "cannot write $t: $(cat "$T/out")"; return 1
  fi
  try chown chown -- "$2" "$t" && try chmod chmod -- "$3" "$t" && try mv mv -f -- "$t" "$1" &&
    return 0
  rm -f -- "$t"; return 1
}
step() {
  [ "$stop" = 0 ] || return 0
  : > "$T/msg"
  if "$2"; then printf '@@ok %s\n' "$1" >&3; return 0; fi
  stop=1
  [ -s "$T/msg" ] || printf 'failed' > "$T/msg"
  printf '@@fail %s %s\n' "$1" "$(base64 -w0 < "$T/msg")" >&3
}
"""


@dataclass(frozen=True)
class WriteReport:
    """What a write script did: the writes done (indices, in order), the one that
    failed and why (nothing after it was tried), and every object as read afterwards."""

    done: tuple[int, ...]
    failure: tuple[int, str] | None
    states: dict[ObjectKey, State | str]
    error: str | None = None  # the script did not report on every write (see the text)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.error is None


def write_script(writes: Sequence[Write]) -> str:
    """A script (for `sh -s`) doing `writes` in order, then probing their objects.
    Raises ValueError for an object name no host can have."""
    kinds = {write.key.kind for write in writes}
    parts = [
        PACKAGE_MANAGER if "package" in kinds else "",
        SERVICE_MANAGER if "service" in kinds else "",
        _HELPERS,
        helpers(kinds),
    ]
    for index, write in enumerate(writes):
        parts.append(f"w{index}() {{\n{write_body(write)}:\n}}\nstep {index} w{index}\n")
    parts.append(probe_body([write.key for write in writes]))
    return script(*parts)


def write_output_limit(writes: Sequence[Write]) -> int:
    """The most output a write script prints (its messages and the probe)."""
    return output_limit([write.key for write in writes]) + 4096 * (len(writes) + 1)


def parse_write(writes: Sequence[Write], output: bytes) -> WriteReport:
    """The report of `write_script(writes)` from its stdout (at most
    `write_output_limit(writes)` bytes of it are read)."""
    keys = [write.key for write in writes]
    records = read_records(output, len(writes), write_output_limit(writes))
    states = {key: read_state(records, index, key) for index, key in enumerate(keys)}
    done = tuple(records.done)
    reported = len(done) + (records.failure is not None)
    error = None
    if records.error is not None:
        error = records.error
    elif not records.started:
        error = "the host printed no output (the script did not run)"
    elif records.failure is None and reported < len(writes):
        error = f"the script stopped after {reported} of {len(writes)} writes (output cut short?)"
    return WriteReport(done, records.failure, states, error)
