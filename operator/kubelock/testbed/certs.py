"""The test control plane's PKI: one throw-away CA, the apiserver's serving certificate, the admin's
client certificate and the service-account signing key pair, written as PEM files.

ECDSA P-256 everywhere: generating it takes microseconds where RSA takes tens of milliseconds, and
every Kubernetes component accepts it (including for service-account tokens, signed as ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_USER = "kubelock-admin"
ADMIN_GROUP = "system:masters"

#: 10.0.0.1 is the first address of the service range, i.e. the in-cluster `kubernetes` Service.
SERVING_IPS: tuple[str, ...] = ("127.0.0.1", "10.0.0.1")
SERVING_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

_VALIDITY = datetime.timedelta(days=365)
# Tolerate a little clock skew between this process and the components that verify the certificates.
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files; private keys are written with mode 0600."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


@dataclass(frozen=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def write_pki(directory: Path) -> Pki:
    """Creates a fresh PKI in ``directory`` (created if missing), overwriting any previous one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _self_signed_ca("kubelock-testbed-ca")
    serving_key = _new_key()
    serving = _issue(
        ca,
        serving_key,
        _name(common_name="kube-apiserver"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=_serving_san(),
    )
    admin_key = _new_key()
    admin = _issue(
        ca,
        admin_key,
        _name(common_name=ADMIN_USER, organization=ADMIN_GROUP),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _new_key()

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    _write_cert(pki.ca_cert, ca.cert)
    _write_key(pki.ca_key, ca.key)
    _write_cert(pki.serving_cert, serving)
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.admin_cert, admin)
    _write_key(pki.admin_key, admin_key)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(*, common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _serving_san() -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVING_NAMES]
    entries += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
    return x509.SubjectAlternativeName(entries)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _self_signed_ca(common_name: str) -> _Issuer:
    key = _new_key()
    name = _name(common_name=common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert=cert, key=key)


def _issue(
    issuer: _Issuer,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    # The authority key identifier and critical key usage keep strict verifiers (OpenSSL 3 with
    # X509_STRICT, as newer Pythons enable by default) as happy as Go's.
    builder = (
        _builder(subject, issuer.cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable only by its owner (keys, tokens, kubeconfigs with credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # the file may have existed with wider permissions
