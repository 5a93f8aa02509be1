"""The controller's own secrets in PROVISOR_HOME: a sealing key and an SSH key pair.

Secret blueprint inputs are sealed (Fernet: AES-128-CBC + HMAC) before they
reach the database; the same key signs the tokens machines present when they
publish runtime parameters. Files are created once, readable by their owner only.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import asyncssh
from cryptography.fernet import Fernet, InvalidToken

from provisor.core.errors import ProvisorError

_SEALED = "sealed:"


def _create_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def sealing_key(home: Path) -> bytes:
    path = home / "secret.key"
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first
            _create_private(path, Fernet.generate_key())
    return path.read_bytes().strip()


def seal(home: Path, value: str) -> str:
    return _SEALED + Fernet(sealing_key(home)).encrypt(value.encode()).decode()


def unseal(home: Path, value: str) -> str:
    if not value.startswith(_SEALED):
        return value
    try:
        return Fernet(sealing_key(home)).decrypt(value[len(_SEALED) :].encode()).decode()
    except InvalidToken:
        raise ProvisorError(
            f"cannot unseal a secret with {home / 'secret.key'}: the key changed?"
        ) from None


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_SEALED)


def controller_key(home: Path) -> Path:
    """The private key the controller logs in to its machines with."""
    path = home / "orchestrator_ed25519"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="provisor controller")
        with contextlib.suppress(FileExistsError):
            _create_private(path, key.export_private_key())
            (home / "orchestrator_ed25519.pub").write_bytes(key.export_public_key())
    return path


def controller_public_key(home: Path) -> str:
    controller_key(home)
    return (home / "orchestrator_ed25519.pub").read_text().strip()
