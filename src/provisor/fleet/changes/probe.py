"""Reading host objects: one script reads every object of a list, one parser reads its
records back into states (or, per object, the reason it could not be read).

Package managers: apt (dpkg-query, apt-cache) is tested; dnf/rpm is written from their
documentation and untested. Services: systemd when /run/systemd/system is a directory,
else sysv init scripts (tested). A user's password hash is read: the probe's output
is as secret as the states it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from provisor.core.changes.model import MAX_FILE_BYTES, ObjectKey, State
from provisor.fleet.changes.records import read_records
from provisor.fleet.changes.shell import check_name, check_path, fill, q, script, sysctl_path
from provisor.fleet.changes.states import read_state

_FILE = r"""p={{P}}
if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then r {{I}} kind other
elif [ ! -e "$p" ]; then r {{I}} kind missing
elif ! m=$(stat -c '%s %a %U %G' -- "$p" 2>&1); then r {{I}} error "cannot stat it: $m"
else
  set -f; set -- $m; set +f
  if [ "$1" -gt {{MAX}} ]; then r {{I}} error "larger than 1 MiB ($1 bytes)"
  elif rfile {{I}} content "$p"; then
    r {{I}} mode "$2"; r {{I}} owner "$3"; r {{I}} group "$4"; r {{I}} kind file
  else r {{I}} error "cannot read it"
  fi
fi
r {{I}} done 1
"""

_USER = r"""u={{N}}
if e=$(getent passwd -- "$u"); then
  h=$(printf '%s\n' "$e" | cut -d: -f6)
  r {{I}} home "$h"
  r {{I}} shell "$(printf '%s\n' "$e" | cut -d: -f7)"
  r {{I}} groups "$(id -nG -- "$u")"
  r {{I}} primary "$(id -gn -- "$u")"
  if s=$(getent shadow -- "$u"); then r {{I}} hash "$(printf '%s\n' "$s" | cut -d: -f2)"; fi
  k="$h/.ssh/authorized_keys"
  if [ -L "$h/.ssh" ] || [ -L "$k" ]; then r {{I}} error "$k is or is in a symbolic link: not read"
  elif [ -f "$k" ]; then
    if [ "$(stat -c %s -- "$k")" -gt {{MAX}} ]; then r {{I}} error "$k is larger than 1 MiB"
    elif ! rfile {{I}} keys "$k"; then r {{I}} error "cannot read $k"
    fi
  elif [ -e "$k" ]; then r {{I}} error "$k is not a regular file"
  fi
  r {{I}} exists 1
else
  r {{I}} exists 0
fi
r {{I}} done 1
"""

PACKAGE_MANAGER = r"""has() { command -v "$1" >/dev/null 2>&1; }
if has dpkg-query && has apt-get; then PM=apt
elif has rpm && has dnf; then PM=dnf
else PM=
fi
"""

_PACKAGE = r"""n={{N}}; v=; c=
case $PM in
apt)
  v=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}\n' -- "$n" 2>/dev/null |
    sed -n 's/^ii *|//p' | head -n 1)
  c=$(apt-cache policy "$n" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1) ;;
dnf)
  v=$(rpm -q --qf '%{VERSION}-%{RELEASE}\n' "$n" 2>/dev/null | head -n 1) || v=
  c=$(dnf -q repoquery --latest-limit 1 --qf '%{version}-%{release}' "$n" 2>/dev/null |
    head -n 1) ;;
esac
r {{I}} manager "$PM"
if [ -n "$v" ]; then r {{I}} version "$v"; fi
if [ -n "$c" ] && [ "$c" != "(none)" ]; then r {{I}} candidate "$c"; fi
r {{I}} done 1
"""

SERVICE_MANAGER = r"""if [ -d /run/systemd/system ]; then SM=systemd; else SM=sysv; fi
"""

_SERVICE = r"""n={{N}}
r {{I}} manager "$SM"
if [ "$SM" = systemd ]; then
  if [ "$(systemctl show -p LoadState --value -- "$n" 2>/dev/null)" = loaded ]; then
    r {{I}} exists 1
    if systemctl is-active --quiet -- "$n"; then r {{I}} running 1; else r {{I}} running 0; fi
    if systemctl is-enabled --quiet -- "$n"; then r {{I}} enabled 1; else r {{I}} enabled 0; fi
  else
    r {{I}} exists 0
  fi
elif [ -f "/etc/init.d/$n" ]; then
  r {{I}} exists 1
  if "/etc/init.d/$n" status >/dev/null 2>&1; then r {{I}} running 1; else r {{I}} running 0; fi
  e=0
  for f in /etc/rc[2345].d/S[0-9][0-9]"$n"; do if [ -e "$f" ]; then e=1; fi; done
  r {{I}} enabled $e
else
  r {{I}} exists 0
fi
r {{I}} done 1
"""

_SYSCTL = r"""f={{P}}
if [ -f "$f" ] && v=$(cat -- "$f" 2>/dev/null); then r {{I}} value "$v"; fi
r {{I}} done 1
"""


def _file(index: int, key: ObjectKey) -> str:
    return fill(_FILE, I=str(index), P=q(check_path(key.name)), MAX=str(MAX_FILE_BYTES))


def _user(index: int, key: ObjectKey) -> str:
    return fill(_USER, I=str(index), N=q(check_name(key.name, "user")), MAX=str(MAX_FILE_BYTES))


def _package(index: int, key: ObjectKey) -> str:
    return fill(_PACKAGE, I=str(index), N=q(check_name(key.name, "package")))


def _service(index: int, key: ObjectKey) -> str:
    return fill(_SERVICE, I=str(index), N=q(check_name(key.name, "service")))


def _sysctl(index: int, key: ObjectKey) -> str:
    return fill(_SYSCTL, I=str(index), P=q(sysctl_path(key.name)))


_READERS: dict[str, Callable[[int, ObjectKey], str]] = {
    "file": _file,
    "user": _user,
    "package": _package,
    "service": _service,
    "sysctl": _sysctl,
}


def probe_body(keys: Sequence[ObjectKey]) -> str:
    """The shell that reads `keys` (record index = position), inside a script's frame."""
    kinds = {key.kind for key in keys}
    parts = [PACKAGE_MANAGER if "package" in kinds else ""]
    parts.append(SERVICE_MANAGER if "service" in kinds else "")
    parts.extend(_READERS[key.kind](index, key) for index, key in enumerate(keys))
    return "".join(parts)


def probe_script(keys: Sequence[ObjectKey]) -> str:
    """A script (for `sh -s`) that reads every object in `keys`. Raises ValueError for a
    name no host object can have (e.g. a user name starting with '-')."""
    return script(probe_body(keys))


def output_limit(keys: Sequence[ObjectKey]) -> int:
    """The most output a probe of `keys` prints: capture at least this much of stdout."""
    large = 2 * MAX_FILE_BYTES  # base64 of a file, and the object's other fields
    return 64 * 1024 + sum(large if k.kind in ("file", "user") else 64 * 1024 for k in keys)


def parse_probe(keys: Sequence[ObjectKey], output: bytes) -> dict[ObjectKey, State | str]:
    """Each object's state, or why it could not be read (a message), from the stdout of
    `probe_script(keys)`; reads at most `output_limit(keys)` bytes of it."""
    records = read_records(output, len(keys), output_limit(keys))
    return {key: read_state(records, index, key) for index, key in enumerate(keys)}
