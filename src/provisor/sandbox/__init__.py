"""A testbed of real SSH hosts on loopback addresses.

Namespace mode (root): each host is Debian's OpenSSH sshd in its own UTS, PID and
mount namespaces with a copy-on-write overlay over the system directories.
Process mode (any user): each host is a detached asyncssh server serving a directory.
See docs/testbed.md.
"""

from ._api import (
    authorized_keys_path,
    destroy,
    is_running,
    known_hosts_entry,
    list_hosts,
    load,
    rekey,
    restart,
    start,
    stop,
)
from ._host import OVERLAID_DIRS, Isolation, SandboxHost, default_base_dir, default_isolation

__all__ = [
    "OVERLAID_DIRS",
    "Isolation",
    "SandboxHost",
    "authorized_keys_path",
    "default_base_dir",
    "default_isolation",
    "destroy",
    "is_running",
    "known_hosts_entry",
    "list_hosts",
    "load",
    "rekey",
    "restart",
    "start",
    "stop",
]
