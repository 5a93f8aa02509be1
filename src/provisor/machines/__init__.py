"""A testbed of real SSH hosts on loopback addresses.

Namespace mode (root): each host is Debian's OpenSSH sshd in its own UTS, PID and
mount namespaces with a copy-on-write overlay over the system directories.
Process mode (any user): each host is a detached asyncssh server serving a directory.
See docs/testbed.md.
"""

from ._api import (
    authorized_keys_path,
    check_mount,
    console_log_path,
    destroy,
    host_file,
    is_running,
    known_hosts_entry,
    list_hosts,
    load,
    rekey,
    restart,
    start,
    stop,
)
from ._host import (
    OVERLAID_DIRS,
    Isolation,
    Mount,
    MountKind,
    SandboxHost,
    check_namespace_base_dir,
    default_base_dir,
    default_isolation,
    validate_hostname,
)

__all__ = [
    "OVERLAID_DIRS",
    "Isolation",
    "Mount",
    "MountKind",
    "SandboxHost",
    "authorized_keys_path",
    "check_mount",
    "check_namespace_base_dir",
    "console_log_path",
    "default_base_dir",
    "default_isolation",
    "destroy",
    "host_file",
    "is_running",
    "known_hosts_entry",
    "list_hosts",
    "load",
    "rekey",
    "restart",
    "start",
    "stop",
    "validate_hostname",
]
