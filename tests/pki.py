"""Throwaway certificates for the TLS tests: two CAs, a server certificate and client certificates.

    files = make_test_pki(tmp_path)   # {"ca": ..., "server_cert": ..., "client_cert": ..., ...} -> Path

EC P-256 keys (fast: the whole set takes well under a second). CA `ca` signs the server certificate
(SAN DNS:localhost and IP:127.0.0.1) and the client certificate `client`; CA `other_ca` signs
`other_client`, a certificate the server must refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, extensions=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_test_pki(directory: Path) -> dict[str, Path]:
    """Write the CAs, the server's and the clients' certificates and keys (PEM) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    authorities = {}
    for stem in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(_name(f"hnd test {stem}"), _name(f"hnd test {stem}"), key.public_key(), key, ca=True)
        authorities[stem] = (key, cert)
        files[stem], files[f"{stem}_key"] = _write(directory, stem, key, cert)
    leaves = {
        "server": (
            "ca",
            [
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            ],
        ),
        "client": ("ca", [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]),
        "other_client": ("other_ca", [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]),
    }
    for stem, (authority, extensions) in leaves.items():
        ca_key, ca_cert = authorities[authority]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            _name(f"hnd test {stem}"), ca_cert.subject, key.public_key(), ca_key, ca=False, extensions=extensions
        )
        files[f"{stem}_cert"], files[f"{stem}_key"] = _write(directory, stem, key, cert)
    return files
