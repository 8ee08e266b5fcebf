"""Certificates made at run time with ``cryptography`` (the tests and loadtest.bench_security): a
CA, server and client certificates signed by it (or by another CA), expired ones, as PEM files.

Nothing here is for a real deployment: every key is fresh for the run.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, in PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA256())

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """``<stem>.crt`` and ``<stem>.key`` in ``directory``; returns both paths."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "ortserve test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> Path:
        path = directory / f"{stem}.crt"
        path.write_bytes(self.cert_pem)
        return path

    def server_cert(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), common_name: str = "ortserve") -> Issued:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(common_name, names, ExtendedKeyUsageOID.SERVER_AUTH)

    def client_cert(self, common_name: str, sans: tuple[str, ...] = (), expired: bool = False) -> Issued:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(san) if "://" in san else x509.DNSName(san) for san in sans]
        return self._issue(common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH, expired)

    def _issue(self, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_before, not_after = (now - 10 * _DAY, now - 2 * _DAY) if expired else (now - _DAY, now + 10 * _DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class Pki:
    """Every file the TLS tests need, written once per test module."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN "ortserve-test-client", SAN "client.test", signed by ``ca``
    client_key: Path
    expired_cert: Path  # signed by ``ca``, expired
    expired_key: Path
    foreign_cert: Path  # same names, signed by another CA
    foreign_key: Path
    foreign_ca: Path
    authority: CertificateAuthority  # the CA behind ``ca``, to issue more (a rotated server certificate)

    def tls_flags(self, port: str, mutual: bool = True) -> list[str]:
        """ortserve's flags for TLS (mTLS with ``mutual``) on ``port``: grpc, http or metrics."""
        flags = [f"--{port}-use-ssl-mutual" if mutual else f"--{port}-use-ssl"]
        flags += [f"--{port}-server-cert={self.server_cert}", f"--{port}-server-key={self.server_key}"]
        return flags + ([f"--{port}-root-cert={self.ca}"] if mutual else [])


CLIENT_CN = "ortserve-test-client"


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = CertificateAuthority(), CertificateAuthority("another CA")
    server_cert, server_key = ca.server_cert().write(directory, "server")
    client_cert, client_key = ca.client_cert(CLIENT_CN, ("client.test",)).write(directory, "client")
    expired_cert, expired_key = ca.client_cert(CLIENT_CN, ("client.test",), expired=True).write(directory, "expired")
    foreign_cert, foreign_key = other.client_cert(CLIENT_CN, ("client.test",)).write(directory, "foreign")
    return Pki(
        directory,
        ca.write(directory),
        server_cert,
        server_key,
        client_cert,
        client_key,
        expired_cert,
        expired_key,
        foreign_cert,
        foreign_key,
        other.write(directory, "foreign-ca"),
        ca,
    )
