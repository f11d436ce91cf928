"""Certificates and kubeconfigs for a test control plane (controlplane.py), made with `cryptography`.

Throwaway: valid for a day, written into the test's temporary folder; EC P-256 for TLS (fast to make),
RSA for the service-account token signing key, as the README of the assets asks.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    """Files the control plane and its clients need, all in one folder."""

    ca: Path
    ca_key: Path
    serving: Path
    serving_key: Path
    admin: Path
    admin_key: Path
    controller_manager: Path
    controller_manager_key: Path
    service_account_key: Path
    service_account_pub: Path


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    names: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> Certificates:
    """A CA, the API server's serving certificate (127.0.0.1, localhost), client certificates for the
    admin (O=system:masters) and kube-controller-manager, and the service-account signing key pair."""
    folder.mkdir(parents=True, exist_ok=True)

    def name(common: str, org: str | None = None) -> x509.Name:
        parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
        if org:
            parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(parts)

    def write(stem: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
        crt_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return crt_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("hookline-test-ca")
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    ca_paths = write("ca", ca_cert, ca_key)

    def issue(stem: str, subject: x509.Name, usage: x509.ObjectIdentifier, **kw: Any) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        return write(stem, _certificate(subject, key, ca_name, ca_key, usage=usage, **kw), key)

    serving = issue(
        "serving",
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    admin = issue("admin", name("hookline-test-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    kcm = issue("kcm", name("system:kube-controller-manager"), ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path, sa_pub_path = folder / "sa.key", folder / "sa.pub"
    sa_key_path.write_bytes(_pem_key(sa_key))
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Certificates(*ca_paths, *serving, *admin, *kcm, sa_key_path, sa_pub_path)


def kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> Path:
    """A kubeconfig for ``server`` as a client certificate or a bearer token."""
    user: dict[str, str] = {"token": token} if token else {}
    if cert is not None and key is not None:
        user = {"client-certificate": str(cert), "client-key": str(key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path
