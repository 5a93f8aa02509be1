"""The controller's own secrets in PROVISOR_HOME: a sealing key, an SSH key pair and the
parameter endpoint's TLS key.

Secret blueprint inputs are sealed (Fernet: AES-128-CBC + HMAC) before they
reach the database; the same key signs the tokens machines present when they
publish runtime parameters. Every file is created once, atomically, readable by its
owner only.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from provisor._asyncssh import asyncssh
from provisor.core.errors import ProvisorError
from provisor.files import create_once, keep_private

_SEALED = "sealed:"


def _read_private(path: Path) -> bytes:
    keep_private(path)  # an older install's may be wider
    return path.read_bytes()


def sealing_key(home: Path) -> bytes:
    path = home / "secret.key"
    if not path.exists():
        create_once(path, Fernet.generate_key())  # another process may win: its key counts
    return _read_private(path).strip()


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
    public = home / "orchestrator_ed25519.pub"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="provisor controller")
        create_once(path, key.export_private_key())
    keep_private(path)
    if not public.exists():  # for people and ssh-copy-id; provisor reads the private key
        create_once(public, _public_half(path))
    keep_private(public)
    return path


def _public_half(path: Path) -> bytes:
    key = asyncssh.import_private_key(path.read_bytes())
    return bytes(key.export_public_key())


def controller_public_key(home: Path) -> str:
    """From the private key: the .pub file may not be written yet by the process that
    made the pair."""
    return _public_half(controller_key(home)).decode().strip()


def parameter_tls(home: Path) -> Path:
    """The parameter endpoint's private key and self-signed certificate, in one PEM file.

    Machines get the certificate with their agent and trust it alone (pinned), so the
    endpoint needs no name or CA: whoever answers must hold this key.
    """
    path = home / "param_tls.pem"
    if not path.exists():
        create_once(path, _self_signed())
    keep_private(path)
    return path


def parameter_certificate(home: Path) -> str:
    """The public half of `parameter_tls`, as PEM."""
    text = _read_private(parameter_tls(home)).decode()
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
