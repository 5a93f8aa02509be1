"""The controller's own secrets in PROVISOR_HOME: a sealing key, an SSH key pair and the
parameter endpoint's TLS key.

Secret blueprint inputs are sealed (Fernet: AES-128-CBC + HMAC) before they
reach the database; the same key signs the tokens machines present when they
publish runtime parameters. Files are created once, readable by their owner only.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from provisor._asyncssh import asyncssh
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


def parameter_tls(home: Path) -> Path:
    """The parameter endpoint's private key and self-signed certificate, in one PEM file.

    Machines get the certificate with their agent and trust it alone (pinned), so the
    endpoint needs no name or CA: whoever answers must hold this key.
    """
    path = home / "param_tls.pem"
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            _create_private(path, _self_signed())
    return path


def parameter_certificate(home: Path) -> str:
    """The public half of `parameter_tls`, as PEM."""
    text = parameter_tls(home).read_text()
    return text[text.index("-----BEGIN CERTIFICATE-----") :]


def _self_signed() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisor parameter endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        # Its own root: the machines' only trust anchor for the endpoint.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)
