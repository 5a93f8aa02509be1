"""Secrets that stay secret: separate keys for sealing and signing."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from provisor.core.errors import ProvisorError
from provisor.orchestrator import secrets

# Keys


def test_sealing_and_signing_keys_are_derived_apart(tmp_path: Path) -> None:
    master = base64.urlsafe_b64decode(secrets.master_key(tmp_path))
    sealing, signing = secrets.sealing_key(tmp_path), secrets.signing_key(tmp_path)
    raw = base64.urlsafe_b64decode(sealing)
    halves = {master[:16], master[16:], raw[:16], raw[16:], signing[:16], signing[16:]}
    assert len(signing) == 32 and len(halves) == 6  # no key shares a part with another
    assert (secrets.sealing_key(tmp_path), secrets.signing_key(tmp_path)) == (sealing, signing)
    other = tmp_path / "other"
    assert secrets.signing_key(other) != signing  # another master, other keys


def test_values_sealed_before_the_split_still_open(tmp_path: Path) -> None:
    master = secrets.master_key(tmp_path)
    before = "sealed:" + Fernet(master).encrypt(b"old s3cret").decode()  # how 0.x sealed
    assert secrets.unseal(tmp_path, before) == "old s3cret"
    now = secrets.seal(tmp_path, "new s3cret")
    assert now.startswith("sealed:v2:") and secrets.is_sealed(now)
    assert secrets.unseal(tmp_path, now) == "new s3cret"
    with pytest.raises(InvalidToken):  # not sealed with the master key itself any more
        Fernet(master).decrypt(now.removeprefix("sealed:v2:").encode())
    with pytest.raises(ProvisorError, match="cannot unseal a secret with"):
        secrets.unseal(tmp_path / "elsewhere", now)
    (tmp_path / "secret.key").write_text("short\n")
    with pytest.raises(ProvisorError, match=r"secret.key is not a provisor key"):
        secrets.signing_key(tmp_path)
