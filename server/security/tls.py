"""Server certificates for one port: read, checked, and read again when their files change.

A port's certificate, key and (for mTLS) root CA are files; Kubernetes replaces a mounted Secret
by swapping a symlink, cert-manager rewrites them in place. Each new connection asks
``ReloadingCertificate.current()``, which compares the files' stat signatures with what it
loaded and, when they changed, loads and checks them again. A half-written rotation (a key that
does not match its certificate yet) keeps the previous material serving and is retried on the
next connection. Connections already open keep theirs: nothing is dropped.

gRPC gets the material through grpcio's dynamic server credentials (its fetcher runs before each
handshake); aiohttp through an SSLContext whose SNI callback, which OpenSSL calls on every
ClientHello (with or without SNI), moves the connection to the current context.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from server.observability.logging import ThrottledLog
from server.security.settings import TlsFiles

log = logging.getLogger(__name__)
_reload_log = ThrottledLog(log)


class TlsError(ValueError):
    """The certificate files cannot be used; the message names the port and the file."""


Signature = tuple[tuple[int, int, int, int], ...]


def _signature(paths: tuple[Path, ...]) -> Signature:
    """Changes whenever a file is rewritten or replaced (stat follows symlinks)."""
    result = []
    for path in paths:
        st = os.stat(path)
        result.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class CertificateMaterial:
    context: ssl.SSLContext
    cert_pem: bytes
    key_pem: bytes
    root_pem: bytes | None
    signature: Signature
    generation: int


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSLContext for a server port: TLS 1.2 or newer, client certificates required with mutual.

    Raises ssl.SSLError / OSError for unreadable or mismatched files.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    if files.root is not None:
        context.load_verify_locations(cafile=files.root)
    context.verify_mode = ssl.CERT_REQUIRED if files.mutual else ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_material(files: TlsFiles, port: str, generation: int) -> CertificateMaterial:
    """Read and check the files once. Raises TlsError, also when they changed while being read."""
    try:
        before = _signature(files.paths())
        context = server_context(files)
        cert_pem, key_pem = files.cert.read_bytes(), files.key.read_bytes()
        root_pem = files.root.read_bytes() if files.root is not None else None
        after = _signature(files.paths())
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{port} TLS: cannot use {', '.join(map(str, files.paths()))}: {exc}") from None
    if before != after:
        raise TlsError(f"{port} TLS: the certificate files changed while they were read")
    return CertificateMaterial(context, cert_pem, key_pem, root_pem, after, generation)


class ReloadingCertificate:
    """The current material of one port. Thread-safe (gRPC calls in from its own threads)."""

    def __init__(self, files: TlsFiles, port: str) -> None:
        self.files, self.port = files, port
        self._lock = threading.Lock()
        self._material = load_material(files, port, 1)  # raises TlsError at startup

    def current(self) -> CertificateMaterial:
        """The material to hand a new connection, reloaded first when the files changed."""
        with self._lock:
            material = self._material
            try:
                if _signature(self.files.paths()) == material.signature:
                    return material
                self._material = load_material(self.files, self.port, material.generation + 1)
            except (OSError, TlsError) as exc:
                _reload_log.warning("%s TLS: keeping the certificate loaded before: %s", self.port, exc)
                return material
        log.info("%s TLS: loaded the changed certificate files (generation %d)", self.port, self._material.generation)
        return self._material


def grpc_server_credentials(certificate: ReloadingCertificate) -> grpc.ServerCredentials:
    """Dynamic credentials: grpc asks before every handshake, and gets new material only after a change."""

    def configuration(material: CertificateMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(material.key_pem, material.cert_pem)], root_certificates=material.root_pem)

    served = [certificate.current().generation]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        material = certificate.current()
        if material.generation == served[0]:
            return None
        served[0] = material.generation
        return configuration(material)

    return grpc.dynamic_ssl_server_credentials(
        configuration(certificate.current()), fetch, require_client_authentication=certificate.files.mutual
    )


def http_ssl_context(certificate: ReloadingCertificate) -> ssl.SSLContext:
    """The context an aiohttp site listens with; each handshake is moved to the current material."""
    front = server_context(certificate.files)

    def to_current(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = certificate.current().context
        if connection.context is not current:
            connection.context = current

    front.sni_callback = to_current
    return front
