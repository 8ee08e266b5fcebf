"""Certificate files are checked at startup and reloaded when they change; a rotation caught
half-way (a key that does not match its certificate yet) keeps the previous material."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from loadtest.certificates import CertificateAuthority
from server.security.settings import TlsFiles
from server.security.tls import ReloadingCertificate, TlsError, server_context


def replace(path: Path, data: bytes) -> None:
    """Write a new file and rename it over the old one, as cert-manager and kubelet do."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def test_startup_refuses_a_mismatched_pair(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    cert, _ = ca.server_cert().write(tmp_path, "a")
    _, other_key = ca.server_cert().write(tmp_path, "b")
    with pytest.raises(TlsError, match=r"^gRPC TLS: cannot use "):
        ReloadingCertificate(TlsFiles(cert, other_key), "gRPC")


def test_startup_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="No such file"):
        ReloadingCertificate(TlsFiles(tmp_path / "none.crt", tmp_path / "none.key"), "HTTP")


def test_reload_on_change_and_keep_the_old_one_when_half_written(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    first, second = ca.server_cert(common_name="first"), ca.server_cert(common_name="second")
    cert, key = first.write(tmp_path, "server")
    reloading = ReloadingCertificate(TlsFiles(cert, key), "HTTP")
    initial = reloading.current()
    assert reloading.current() is initial  # unchanged files: nothing is read again
    replace(cert, second.cert_pem)  # the certificate is new, its key not yet
    assert reloading.current() is initial
    replace(key, second.key_pem)
    rotated = reloading.current()
    assert rotated.generation == initial.generation + 1
    assert rotated.cert_pem == second.cert_pem and rotated.key_pem == second.key_pem
    assert reloading.current() is rotated


def test_server_context_is_tls_1_2_or_newer_and_mutual_requires_a_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    cert, key = ca.server_cert().write(tmp_path, "server")
    context = server_context(TlsFiles(cert, key, ca.write(tmp_path), mutual=True))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert server_context(TlsFiles(cert, key)).verify_mode is ssl.CERT_NONE
