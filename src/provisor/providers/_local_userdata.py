"""User-data for local machines: a shell script or a `#cloud-config` document.

The machine runs it itself: the provider hands the sandbox an init script (see
`init_script`) that the machine runs at every boot, in the background, with its output
appended to the console log. At first boot it waits until sshd listens, runs the
user-data as root, and writes its exit status to /var/lib/provisor/user-data.done.

`#cloud-config` is turned into a shell script here, so that a malformed document is an
error of the `launch` call rather than a surprise in the console log. Supported:
`write_files` (path, content, encoding, permissions, owner, append), `runcmd` (strings
run by the shell, lists run as argv), `ssh_authorized_keys` (root's) and
`final_message`; `packages`, `package_update` and `package_upgrade` are ignored with a
note (a local machine has no package manager access of its own); any other key is
ignored with a note.
"""

from __future__ import annotations

import base64
import shlex
import socket
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from provisor.core.userdata import UserDataError, check_cloud_config, decode_content
from provisor.providers.base import USER_DATA_DONE, ProviderError

STATE_DIR = "/var/lib/provisor"  # inside the machine
DONE_MARKER = USER_DATA_DONE
CONSOLE_LINK = "/var/log/provisor-console.log"
MAX_USER_DATA = 1024 * 1024  # bytes
_IGNORED_PACKAGE_KEYS = ("packages", "package_update", "package_upgrade")
_SUPPORTED = ("write_files", "runcmd", "ssh_authorized_keys", "final_message")


def _fail(message: str) -> ProviderError:
    return ProviderError(f"invalid user_data: {message}", call="launch")


def to_script(user_data: str) -> str:
    """The program the machine runs for `user_data`: the script itself, or one made
    from a #cloud-config document. Raises ProviderError when it is neither or malformed."""
    if len(user_data.encode()) > MAX_USER_DATA:
        raise _fail(f"{len(user_data.encode())} bytes, more than the {MAX_USER_DATA} allowed")
    first = user_data.split("\n", 1)[0].strip()
    if first.startswith("#!"):
        return user_data
    if first == "#cloud-config":
        return _cloud_config_script(user_data)
    raise _fail(
        f"the first line is {first[:60]!r}: expected a script (#!/bin/sh ...) or a "
        "#cloud-config document"
    )


def _cloud_config_script(document: str) -> str:
    try:
        check_cloud_config(document)  # bounded first: aliases, depth, what files decode to
    except UserDataError as exc:
        raise _fail(str(exc)) from None
    try:
        config = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise _fail(f"#cloud-config is not valid YAML: {exc}") from exc
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise _fail(f"#cloud-config must be a mapping, not {type(config).__name__}")
    lines = [
        "#!/bin/sh",
        "# Made by provisor from the machine's #cloud-config user-data.",
        "status=0",
    ]
    for key in config:
        if key in _IGNORED_PACKAGE_KEYS:
            continue
        if key not in _SUPPORTED:
            lines.append(_say(f"cloud-config: {key!s} is not supported here, ignored"))
    packages = config.get("packages") or []
    if not isinstance(packages, list):
        raise _fail("#cloud-config packages must be a list")
    if packages or config.get("package_update") or config.get("package_upgrade"):
        names = " ".join(p if isinstance(p, str) else "=".join(map(str, p)) for p in packages)
        lines.append(
            _say(
                "cloud-config: packages ignored, a local machine has no package manager "
                f"access of its own: {names or '(update/upgrade only)'}"
            )
        )
    keys = config.get("ssh_authorized_keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _fail("#cloud-config ssh_authorized_keys must be a list of strings")
    if keys:
        lines += [
            "mkdir -p /root/.ssh && chmod 700 /root/.ssh",
            *(
                f"printf '%s\\n' {shlex.quote(k.strip())} >> /root/.ssh/authorized_keys"
                for k in keys
            ),
            "chmod 600 /root/.ssh/authorized_keys",
        ]
    files = config.get("write_files") or []
    if not isinstance(files, list):
        raise _fail("#cloud-config write_files must be a list")
    for index, item in enumerate(files):
        lines += _write_file(index, item)
    commands = config.get("runcmd") or []
    if not isinstance(commands, list):
        raise _fail("#cloud-config runcmd must be a list")
    for index, command in enumerate(commands):
        lines += _run_command(index, command)
    final = config.get("final_message")
    if final is not None:
        lines.append(_say(str(final)))
    lines.append('exit "$status"')
    return "\n".join(lines) + "\n"


def _say(message: str) -> str:
    return f"echo {shlex.quote('provisor: ' + message)}"


def _content(index: int, item: Mapping[str, Any]) -> bytes:
    content = item.get("content", "")
    if not isinstance(content, str | bytes):
        raise _fail(f"write_files[{index}].content must be a string")
    try:
        return decode_content(content, str(item.get("encoding", "text")))
    except UserDataError as exc:
        raise _fail(f"write_files[{index}].content: {exc}") from None


def _write_file(index: int, item: object) -> list[str]:
    if not isinstance(item, Mapping):
        raise _fail(f"write_files[{index}] must be a mapping")
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _fail(f"write_files[{index}].path must be an absolute path, not {path!r}")
    permissions = item.get("permissions", "0644")
    try:
        mode = permissions if isinstance(permissions, int) else int(str(permissions), 8)
    except ValueError:
        raise _fail(
            f"write_files[{index}].permissions {permissions!r} is not an octal mode"
        ) from None
    if not 0 <= mode <= 0o7777:
        raise _fail(f"write_files[{index}].permissions {permissions!r} is out of range")
    owner = str(item.get("owner", "root:root"))
    append = bool(item.get("append", False))
    data = base64.b64encode(_content(index, item)).decode()
    target = shlex.quote(path)
    redirect = ">>" if append else ">"
    encoded = "\n".join(textwrap.wrap(data, 76)) if data else ""
    return [
        _say(f"write_files: {path}"),
        f"if mkdir -p \"$(dirname {target})\" && base64 -d {redirect} {target} <<'PROVISOR_EOF'",
        *([encoded] if encoded else []),
        "PROVISOR_EOF",
        f"then chmod {mode:04o} {target} && chown {shlex.quote(owner)} {target}; fi",
        "rc=$?",
        f'if [ "$rc" -ne 0 ]; then {_say(f"write_files[{index}] failed")}; '
        '[ "$status" -eq 0 ] && status=$rc; fi',
    ]


def _run_command(index: int, command: object) -> list[str]:
    if isinstance(command, str):
        line = command
    elif isinstance(command, list) and command and all(isinstance(a, str | int) for a in command):
        line = shlex.join(str(a) for a in command)
    else:
        raise _fail(f"runcmd[{index}] must be a string or a non-empty list of strings")
    return [
        # As cloud-init does, the commands are lines of one shell script: a `cd` or a
        # variable set by one is seen by the next.
        f"echo {shlex.quote('+ ' + line)}",
        line,
        "rc=$?",
        f'if [ "$rc" -ne 0 ]; then echo "provisor: runcmd[{index}] exit status $rc"; '
        '[ "$status" -eq 0 ] && status=$rc; fi',
    ]


def _listen_pattern(address: str, port: int) -> str:
    """How /proc/net/tcp shows a socket listening on address:port."""
    number = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    return f": {number:08X}:{port:04X} 00000000:0000 0A "


_INIT = """\
#!/bin/sh
# provisor local provider: the boot script of machine {machine_id}. The sandbox runs it
# at every boot, in the background, with its output appended to the console log; its
# argument is the machine's directory.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
umask 022
state={state}
echo "provisor: booted $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
mkdir -p "$state"
ln -sfn "$1/console.log" {console_link} 2>/dev/null
if [ "$(cat "$state/instance-id" 2>/dev/null)" != {machine_id} ]; then
    # A disk that started from another machine's snapshot: its user-data ran there.
    rm -f "$state"/user-data*
    echo {machine_id} > "$state/instance-id"
fi
{user_data}"""

_RUN_USER_DATA = """\
[ -e {done} ] && exit 0
(umask 077 && base64 -d > "$state/user-data") <<'PROVISOR_EOF'
{encoded}
PROVISOR_EOF
chmod 0700 "$state/user-data"
# After sshd listens, as cloud-init's user scripts run late in the boot.
tries=0
while ! grep -qF '{listening}' /proc/net/tcp && [ "$tries" -lt 200 ]; do
    sleep 0.05
    tries=$((tries + 1))
done
echo "provisor: running user-data"
(cd / && exec "$state/user-data") < /dev/null
status=$?
echo "$status" > {done}.tmp && mv -f {done}.tmp {done}
echo "provisor: user-data exit status $status"
"""


def init_script(machine_id: str, address: str, port: int, user_data: str | None) -> str:
    """The script the machine runs at every boot (see the module docstring)."""
    body = ""
    if user_data is not None:
        program = to_script(user_data)
        encoded = "\n".join(textwrap.wrap(base64.b64encode(program.encode()).decode(), 76))
        body = _RUN_USER_DATA.format(
            done=DONE_MARKER, encoded=encoded, listening=_listen_pattern(address, port)
        )
    return _INIT.format(
        machine_id=machine_id, state=STATE_DIR, console_link=CONSOLE_LINK, user_data=body
    )
