"""What every change script shares: the frame it runs in and its record format.

A script is sent as `sh -s` with the script on stdin (POSIX sh, dash-compatible), so
nothing it holds, secrets included, is in any process's argv; the login user must be
root (a non-root login is refused by the script, not escalated). The whole script is
one brace group: the shell reads all of it before running any of it, so no command can
swallow the rest of the script from stdin (the group's stdin is /dev/null).

Records go to the group's fd 3 (the session's stdout); everything the commands print
goes to stderr. A record is a line `@@<index> <field> <base64 value>`, framed by
`@@start` and `@@end`, so text the host prints before the script runs (a login banner,
a shell rc file) is never taken for a record. A value of plain characters (a mode, an
owner, a version) goes as `=value` instead, without the two processes base64 costs:
most records are such, and forks are most of what a script costs the host.
"""

from __future__ import annotations

import base64
import shlex

START = "@@start"
END = "@@end"
GLOBAL = "-"  # the index of a record about the whole script (e.g. not root)
HEREDOC_END = "PROVISOR_EOF"  # base64 text never is this line

_PRELUDE = r"""{
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
export PATH LC_ALL
printf '@@start\n' >&3
r() {
  case $3 in
  *[!A-Za-z0-9._/:+@-]*) printf '@@%s %s %s\n' "$1" "$2" "$(printf '%s' "$3" | base64 -w0)" >&3 ;;
  *) printf '@@%s %s =%s\n' "$1" "$2" "$3" >&3 ;;
  esac
}
rfile() {
  base64 -w0 < "$3" > "$T/b64" && { printf '@@%s %s ' "$1" "$2"; cat "$T/b64"; echo; } >&3
}
if [ "$(id -u)" != 0 ]; then
  r - error "the login user is not root (provisor changes hosts as root)"
  printf '@@end\n' >&3
  exit 1
fi
if ! T=$(mktemp -d /tmp/.provisor.XXXXXX); then
  r - error "cannot make a temporary directory"
  printf '@@end\n' >&3
  exit 1
fi
trap 'rm -rf "$T"' EXIT
"""

_POSTLUDE = """printf '@@end\\n' >&3
} 3>&1 1>&2 </dev/null
"""


def script(*parts: str) -> str:
    """The parts (shell text) inside the frame."""
    return _PRELUDE + "".join(parts) + _POSTLUDE


def fill(template: str, **values: str) -> str:
    """Shell text with each `{{NAME}}` replaced (shell text is full of braces)."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def q(value: str) -> str:
    return shlex.quote(value)


def heredoc(data: bytes) -> str:
    """The body of a quoted here-document carrying `data` (base64, 76 columns), with
    its end line; the command that reads it ends with `<<'PROVISOR_EOF'`."""
    text = base64.encodebytes(data).decode()
    return f"{text}{HEREDOC_END}\n"


def check_name(name: str, what: str) -> str:
    """A user, package or service name as a command argument: no option look-alike,
    nothing a command line cannot hold."""
    if not name or name.startswith("-") or any(c in name for c in "\x00\n/"):
        raise ValueError(f"{what} name not usable on a host: {name!r}")
    return name


def check_path(path: str) -> str:
    if not path.startswith("/") or "\x00" in path or "\n" in path:
        raise ValueError(f"not an absolute path: {path!r}")
    return path


def sysctl_path(name: str) -> str:
    """/proc/sys file of a parameter: dots are levels, a slash is a dot in one level
    (as sysctl(8) writes `net.ipv4.conf.eth0/100.rp_filter`)."""
    parts = name.split(".")
    if len(parts) < 2 or any(p in ("", "..") for p in parts) or "\x00" in name:
        raise ValueError(f"not a kernel parameter name: {name!r}")
    return "/proc/sys/" + "/".join(p.replace("/", ".") for p in parts)
