"""What stands before every route of a real server: the Host it is asked by, the site a
browser request comes from, body sizes, token guessing; and how it may be exposed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served import Server, start_server

MIB = 1024 * 1024


def test_a_foreign_host_header_is_refused(server: Server) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::2]"):
        answer = httpx.get(f"{server.url}/api/v1/health", headers={"Host": host})
        assert answer.status_code == 400, host
        assert "does not answer to the host" in answer.json()["error"]["message"]
    for host in ("127.0.0.1", "localhost", f"localhost:{server.url.rsplit(':', 1)[1]}"):
        assert httpx.get(f"{server.url}/api/v1/health", headers={"Host": host}).is_success


def test_cross_site_browser_requests_are_refused(server: Server) -> None:
    with server.client("operator") as api:
        refused = api.post(
            "/hosts",
            json={"name": "x-site", "address": "127.0.0.9"},
            headers={"Origin": "http://evil.example"},
        )
        assert refused.status_code == 403
        assert api.get("/hosts/x-site").status_code == 404  # nothing was done
        same_site = api.get("/hosts", headers={"Origin": server.url})
        assert same_site.status_code == 200


def test_bodies_over_the_limit_are_refused(server: Server) -> None:
    big = b'{"name": "' + b"x" * (2 * MIB) + b'"}'
    with server.client("operator") as api:
        declared = api.post("/hosts", content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]

        streamed = api.post(
            "/hosts", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert api.get("/health").is_success  # the server is fine


def test_token_guessing_is_slowed_down(tmp_path: Path) -> None:
    with start_server(tmp_path / "home") as (url, _):
        codes = [
            httpx.get(
                f"{url}/api/v1/hosts", headers={"Authorization": f"Bearer pvs_1_guess{n}"}
            ).status_code
            for n in range(25)
        ]
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
        anonymous = httpx.get(f"{url}/api/v1/health")  # the server itself still answers
        assert anonymous.status_code == 200


def _provisor(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVISOR_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "provisor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_exposing_the_server_needs_tls_or_a_said_risk(tmp_path: Path) -> None:
    # Refused before anything listens: these addresses are never bound by the tests.
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        refused = _provisor("server", "--host", host, home=tmp_path)
        assert refused.returncode == 2
        assert f"listening on {host} needs HTTPS" in refused.stderr
    half = _provisor("server", "--tls-cert", str(tmp_path / "c.pem"), home=tmp_path)
    assert half.returncode == 2 and "both --tls-cert and --tls-key" in half.stderr


def _certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert, private = directory / "server.crt", directory / "server.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, private


def test_the_server_speaks_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    with start_server(
        tmp_path / "home", "--tls-cert", str(cert), "--tls-key", str(key), scheme="https", ca=cert
    ) as (url, _):
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{url}/api/v1/health", verify=trust).is_success
        with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
            httpx.get(f"{url}/api/v1/health")
        # The CLI's job stream checks the certificate too: refused until it is trusted.
        job = ["run", "--server", url, "web01", "--", "true"]
        env = {"PROVISOR_TOKEN": "pvs_1_unknown"}
        untrusted = _provisor(*job, home=tmp_path / "client", env=env)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        trusted = _provisor(*job, home=tmp_path / "client", env={**env, "SSL_CERT_FILE": str(cert)})
        assert trusted.returncode == 2 and "token" in trusted.stderr, trusted.stderr  # its 401


def test_a_self_signed_certificate_is_made_kept_and_its_fingerprint_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    public = home / "server_cert.pem"
    shown = []
    for _ in range(2):  # made once, then kept: the same fingerprint after a restart
        with start_server(home, "--tls-self-signed", scheme="https", ca=public) as (url, process):
            trust = ssl.create_default_context(cafile=str(public))
            assert httpx.get(f"{url}/api/v1/health", verify=trust).is_success
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/api/v1/health")
        assert process.stderr is not None
        shown.append(process.stderr.read().decode())
    fingerprints = [line for text in shown for line in text.splitlines() if "SHA-256" in line]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert "BEGIN CERTIFICATE" in public.read_text()
    assert "PRIVATE KEY" not in public.read_text()  # what clients get has no key
    assert oct((home / "server_tls.pem").stat().st_mode & 0o777) == "0o600"
