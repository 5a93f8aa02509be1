"""ed25519 key pairs for sandbox hosts and for the client that logs in to them.

Keys are made with asyncssh (no ssh-keygen process per host) in OpenSSH format,
which both OpenSSH and asyncssh read.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from provisor._asyncssh import asyncssh

CLIENT_KEY = "client_ed25519"
HOST_KEY = "ssh_host_ed25519_key"


def public_line(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 AAAA...`, without a comment: the form known_hosts pins."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {blob}"


def _write_private(path: Path, key: asyncssh.SSHKey) -> None:
    """Write the key with mode 0600 from the start (ssh refuses readable keys)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(key)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    tmp.replace(path)


def client_key(base_dir: Path) -> tuple[Path, str]:
    """The client key of a base dir, made on first use: (private key path, public line).

    Many hosts start at once: each candidate is written to a temporary name and
    hard-linked into place, so the first one wins and every caller reads that one.
    """
    path = base_dir / CLIENT_KEY
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="provisor-sandbox-client")
        tmp = base_dir / f".{CLIENT_KEY}.{os.getpid()}.{id(key)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    key = asyncssh.read_private_key(path)
    line = public_line(key)
    pub = path.with_name(path.name + ".pub")
    if not pub.exists():
        pub.write_text(f"{line} provisor-sandbox-client\n")
    return path, line


def new_host_key(directory: Path) -> str:
    """Replace the host key in `directory` with a fresh one; returns its public line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = public_line(key)
    _write_private(directory / HOST_KEY, key)
    pub = directory / f"{HOST_KEY}.pub"
    tmp = pub.with_name(f".{pub.name}.{os.getpid()}")
    tmp.write_text(line + "\n")
    tmp.replace(pub)
    return line


def host_public_line(directory: Path) -> str:
    return public_line(asyncssh.read_private_key(directory / HOST_KEY))
