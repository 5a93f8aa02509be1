"""The shell that brings one object from `before` to `after` (the body of a function in
a write script; see `write.py` for the helpers it calls: fail, try, put)."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Collection

from provisor.core.changes.model import (
    FileState,
    PackageState,
    ServiceState,
    SysctlState,
    UserState,
    Write,
)
from provisor.fleet.changes.shell import (
    check_name,
    check_path,
    fill,
    heredoc,
    q,
    sysctl_path,
)

_FILE_GUARD = r"""p={{P}}
if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then c=other
elif [ ! -e "$p" ]; then c=missing
elif c=$(sha256sum < "$p"); then c=${c%% *}
else fail "cannot read $p"; return 1
fi
[ "$c" = {{EXPECTED}} ] || { fail "changed since it was read; not overwritten"; return 1; }
"""


def _file(write: Write) -> str:
    before, after = write.before, write.after
    assert isinstance(before, FileState) and isinstance(after, FileState)
    path = check_path(write.key.name)
    was_file = before.exists and before.kind == "file"
    if before.kind == "other":
        expected = "other"
    elif was_file:
        expected = hashlib.sha256(before.content or b"").hexdigest()
    else:
        expected = "missing"
    shell = fill(_FILE_GUARD, P=q(path), EXPECTED=expected)
    if not after.exists or after.kind == "missing":
        return shell + ('try rm rm -f -- "$p" || return 1\n' if expected != "missing" else "")
    if after.kind == "other":
        if before.kind == "other":
            return shell
        return shell + 'fail "cannot make anything but a regular file"; return 1\n'
    owner = after.owner or (before.owner if was_file else None) or "root"
    group = after.group or (before.group if was_file else None) or ""
    owner_group = f"{owner}:{group}" if group else owner
    mode = format(after.mode if after.mode is not None else (before.mode or 0o644), "04o")
    if not was_file or before.content != after.content:
        directory = posixpath.dirname(path)
        return (
            f"{shell}[ -d {q(directory)} ] || "
            f"try mkdir mkdir -p -m 0755 -- {q(directory)} || return 1\n"
            f"put \"$p\" {q(owner_group)} {mode} <<'PROVISOR_EOF' || return 1\n"
            f"{heredoc(after.content or b'')}"
        )
    if owner != before.owner or (group and group != before.group):
        shell += f'try chown chown -- {q(owner_group)} "$p" || return 1\n'
        return shell + f'try chmod chmod -- {mode} "$p" || return 1\n'  # chown clears setuid
    if after.mode is not None and after.mode != before.mode:
        shell += f'try chmod chmod -- {mode} "$p" || return 1\n'
    return shell


_USER_KEYS = r"""h=$(getent passwd -- "$u" | cut -d: -f6); g=$(id -gn -- "$u")
[ -n "$h" ] || { fail "no home directory"; return 1; }
[ ! -L "$h/.ssh" ] || { fail "$h/.ssh is a symbolic link: not changed"; return 1; }
"""
_USER_SSH_DIR = r"""if [ ! -d "$h/.ssh" ]; then
  try mkdir mkdir -p -m 0700 -- "$h/.ssh" && try chown chown -- "$u:$g" "$h/.ssh" || return 1
fi
put "$h/.ssh/authorized_keys" "$u:$g" 0600 <<'PROVISOR_EOF' || return 1
"""
_CHPASSWD = r"""if ! printf '%s:%s\n' "$u" {{HASH}} | chpasswd -e >"$T/out" 2>&1; then
  fail "chpasswd failed: $(tail -c 2000 "$T/out")"; return 1
fi
"""


def _user(write: Write) -> str:
    before, after = write.before, write.after
    assert isinstance(before, UserState) and isinstance(after, UserState)
    shell = f"u={q(check_name(write.key.name, 'user'))}\n"
    if not after.exists:
        return shell + ('try userdel userdel -- "$u" || return 1\n' if before.exists else "")
    groups = q(",".join(after.groups))
    if not before.exists:
        options = "".join(
            [
                f" -d {q(after.home)}" if after.home else "",
                f" -s {q(after.shell)}" if after.shell else "",
                f" -G {groups}" if after.groups else "",
            ]
        )
        shell += f'try useradd useradd -m{options} -- "$u" || return 1\n'
        before = UserState(True, groups=after.groups, shell=after.shell)
    if after.groups != before.groups:
        shell += f'try usermod usermod -G {groups} -- "$u" || return 1\n'
    if after.shell and after.shell != before.shell:
        shell += f'try usermod usermod -s {q(after.shell)} -- "$u" || return 1\n'
    if after.password_hash is not None and after.password_hash != before.password_hash:
        shell += fill(_CHPASSWD, HASH=q(after.password_hash))
    if after.authorized_keys != before.authorized_keys:
        shell += _USER_KEYS
        if after.authorized_keys is None:
            shell += 'try rm rm -f -- "$h/.ssh/authorized_keys" || return 1\n'
        else:
            shell += _USER_SSH_DIR + heredoc(after.authorized_keys)
    return shell


def _package(write: Write) -> str:
    before, after = write.before, write.after
    assert isinstance(before, PackageState) and isinstance(after, PackageState)
    if after.version == before.version:
        return ""
    name = q(check_name(write.key.name, "package"))
    if after.version is None:
        apt = f'try "apt-get remove" apt-get remove -y -q {name}'
        dnf = f'try "dnf remove" dnf -y -q remove {name}'
    else:
        version = q(f"{write.key.name}={after.version}")
        apt = (
            'try "apt-get install" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q '
            f"--allow-downgrades -o Dpkg::Options::=--force-confold {version}"
        )
        wanted = q(f"{write.key.name}-{after.version}")
        dnf = (
            f'{{ try "dnf install" dnf -y -q install {wanted} || '
            f'try "dnf downgrade" dnf -y -q downgrade {wanted}; }}'
        )
    return (
        f"case $PM in\napt) {apt} || return 1 ;;\ndnf) {dnf} || return 1 ;;\n"
        '*) fail "no package manager (apt or dnf) on this host"; return 1 ;;\nesac\n'
    )


_SERVICE_HELPERS = r"""svc() {
  if [ "$SM" = systemd ]; then try "systemctl $2 $1" systemctl "$2" -- "$1"
  elif command -v service >/dev/null 2>&1; then try "service $1 $2" service "$1" "$2"
  else try "/etc/init.d/$1 $2" "/etc/init.d/$1" "$2"
  fi
}
"""


def _service(write: Write) -> str:
    before, after = write.before, write.after
    assert isinstance(before, ServiceState) and isinstance(after, ServiceState)
    name = q(check_name(write.key.name, "service"))
    if not after.exists:
        return (
            'fail "a service cannot be removed (only its package)"; return 1\n'
            if before.exists
            else ""
        )
    shell = ""
    if after.enabled is not None and after.enabled != before.enabled:
        shell += _enable(name, after.enabled)
    if after.running and not before.running:
        shell += f"svc {name} start || return 1\n"
    elif after.running is False and before.running is not False:
        shell += f"svc {name} stop || return 1\n"
    elif write.restart and (after.running or (after.running is None and before.running)):
        shell += f"svc {name} restart || return 1\n"
    return shell


def _enable(name: str, enabled: bool) -> str:
    action = "enable" if enabled else "disable"
    # sysv-rc: `defaults` makes the links from the LSB header when there are none,
    # `enable` turns K links (left by `disable`) back into S links
    sysv = (
        f'try "update-rc.d {action}" update-rc.d {name} defaults && '
        f'try "update-rc.d enable" update-rc.d {name} enable'
        if enabled
        else f'try "update-rc.d disable" update-rc.d {name} disable'
    )
    return (
        f'if [ "$SM" = systemd ]; then try "systemctl {action}" systemctl {action} -- {name}\n'
        f"else {sysv}\nfi || return 1\n"
    )


_SYSCTL = r"""if ! { printf '%s\n' {{VALUE}} > {{PATH}}; } 2>"$T/out"; then
  fail "cannot set it: $(tail -c 2000 "$T/out")"; return 1
fi
"""


def _sysctl(write: Write) -> str:
    before, after = write.before, write.after
    assert isinstance(before, SysctlState) and isinstance(after, SysctlState)
    path = sysctl_path(write.key.name)
    if after.value == before.value:
        return ""
    if after.value is None:
        return 'fail "a kernel parameter cannot be removed"; return 1\n'
    return fill(_SYSCTL, VALUE=q(after.value), PATH=q(path))


_WRITERS: dict[str, Callable[[Write], str]] = {
    "file": _file,
    "user": _user,
    "package": _package,
    "service": _service,
    "sysctl": _sysctl,
}


def write_body(write: Write) -> str:
    return _WRITERS[write.key.kind](write)


def helpers(kinds: Collection[str]) -> str:
    """Shell functions the bodies of `kinds` call, besides fail/try/put."""
    return _SERVICE_HELPERS if "service" in kinds else ""
