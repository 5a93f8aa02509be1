"""The controller's own secrets in PROVISOR_HOME: a master key, an SSH key pair and the
parameter endpoint's TLS key.

`secret.key` holds one master key; two independent keys are derived from it (HKDF,
SHA-256, one label each), so that nothing made with one is accepted by the other:
the sealing key seals secret inputs and provider credentials (Fernet: AES-128-CBC +
HMAC) before they reach the database, and the signing key signs the tokens machines
present when they publish runtime parameters. Values sealed before the keys were split
(sealed with the master key itself) still open. Every file is created once, atomically,
readable by its owner only.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from provisor.core.errors import ProvisorError
from provisor.core.masking import Masker
from provisor.files import create_once, keep_private, write_private

_SEALED = "sealed:"  # sealed with the master key itself (before the split)
_SEALED_V2 = "sealed:v2:"  # sealed with the derived sealing key
# HKDF labels: a key derived with one label says nothing about the key of another.
_SEALING_LABEL = b"provisor/sealing/v1"
_SIGNING_LABEL = b"provisor/parameter-tokens/v1"


def _read_private(path: Path) -> bytes:
    keep_private(path)  # an older install's may be wider
    return path.read_bytes()


def master_key(home: Path) -> bytes:
    """The key in `secret.key` (a Fernet key: 32 bytes, URL-safe base64), made on first
    use. Only for deriving the others, and for opening values sealed before the split."""
    path = home / "secret.key"
    if not path.exists():
        create_once(path, Fernet.generate_key())  # another process may win: its key counts
    key = _read_private(path).strip()
    try:
        if len(base64.urlsafe_b64decode(key)) == 32:
            return key
    except ValueError:
        pass
    raise ProvisorError(f"{path} is not a provisor key (32 bytes in URL-safe base64)")


@lru_cache(maxsize=8)
def _derive(master: bytes, label: bytes) -> bytes:
    raw = base64.urlsafe_b64decode(master)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(raw)


def sealing_key(home: Path) -> bytes:
    """The Fernet key that seals secrets at rest."""
    return base64.urlsafe_b64encode(_derive(master_key(home), _SEALING_LABEL))


def signing_key(home: Path) -> bytes:
    """The HMAC key of the machines' runtime-parameter tokens."""
    return _derive(master_key(home), _SIGNING_LABEL)


def seal(home: Path, value: str) -> str:
    return _SEALED_V2 + Fernet(sealing_key(home)).encrypt(value.encode()).decode()


def seal_given(home: Path, value: str | None) -> str | None:
    """`seal`, for a secret that may be absent (a provider, store or notifier without one)."""
    return None if value is None else seal(home, value)


def unseal(home: Path, value: str) -> str:
    if value.startswith(_SEALED_V2):
        key, token = sealing_key(home), value[len(_SEALED_V2) :]
    elif value.startswith(_SEALED):
        key, token = master_key(home), value[len(_SEALED) :]
    else:
        return value
    try:
        return Fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ProvisorError(
            f"cannot unseal a secret with {home / 'secret.key'}: the key changed?"
        ) from None


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_SEALED)


def inputs_masker(home: Path, inputs: Mapping[str, Any]) -> Masker:
    """A masker of the secret (sealed) values among a deployment's inputs."""
    return Masker.of(*(unseal(home, v) for v in inputs.values() if is_sealed(v)))


def controller_key(home: Path) -> Path:
    """The private key the controller logs in to its machines with."""
    path = home / "orchestrator_ed25519"
    public = home / "orchestrator_ed25519.pub"
    if not path.exists():
        from provisor._asyncssh import asyncssh  # only here: sealing needs no SSH

        key = asyncssh.generate_private_key("ssh-ed25519", comment="provisor controller")
        create_once(path, key.export_private_key())
    keep_private(path)
    if not public.exists():  # for people and ssh-copy-id; provisor reads the private key
        create_once(public, _public_half(path))
    keep_private(public)
    return path


def _public_half(path: Path) -> bytes:
    from provisor._asyncssh import asyncssh

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


def server_tls(home: Path, names: list[str]) -> tuple[Path, Path, str]:
    """The API server's self-signed key and certificate (one PEM file) for `names` (host
    names and addresses clients use), the certificate alone (what clients trust), and
    its SHA-256 fingerprint. Made once and kept; made anew only when the names change
    (a new fingerprint, then)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    path = home / "server_tls.pem"
    wanted = sorted(set(names))
    if path.exists():
        certificate = x509.load_pem_x509_certificate(_read_private(path))
        try:
            held = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            have = sorted(str(n.value) for n in held.value)
        except x509.ExtensionNotFound:
            have = []
        if have != wanted:
            path.unlink()
    if not path.exists():
        create_once(path, _self_signed("provisor server", wanted))
    keep_private(path)
    text = _read_private(path)
    certificate = x509.load_pem_x509_certificate(text)
    public = home / "server_cert.pem"
    write_private(public, text[text.index(b"-----BEGIN CERTIFICATE-----") :])
    return path, public, certificate.fingerprint(hashes.SHA256()).hex(":")


def _self_signed(
    common_name: str = "provisor parameter endpoint", names: Sequence[str] = ()
) -> bytes:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    alternatives: list[x509.GeneralName] = []
    for entry in names:  # addresses as IP names, the rest as DNS names
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            alternatives.append(x509.DNSName(entry))
    builder = x509.CertificateBuilder()
    if alternatives:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    certificate = (
        builder.subject_name(name)
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
