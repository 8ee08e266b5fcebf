"""A rotated certificate is picked up without a restart and without dropping connections: new
handshakes on the gRPC and HTTP ports present the new certificate, while a gRPC stream and an
HTTP keep-alive connection opened before the rotation keep working on the old one."""

from __future__ import annotations

import http.client
import os
import queue
import socket
import ssl
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from loadtest.certificates import CertificateAuthority, Issued
from scripts.harness import REPO_ROOT, ServerProcess, free_port, wait_until

DEADLINE_S = 30.0


def presented_common_name(port: int, ca: Path, alpn: str) -> str:
    """The CN of the certificate a new handshake on ``port`` presents."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
        return dict(item[0] for item in tls.getpeercert()["subject"])["commonName"]


def rotate(issued: Issued, cert: Path, key: Path) -> None:
    """Each file replaced by a rename, the certificate first: a server that looks in between sees
    a certificate whose key has not arrived yet, and must keep the old pair."""
    for data, path in ((issued.cert_pem, cert), (issued.key_pem, key)):
        temporary = path.with_name(path.name + ".new")
        temporary.write_bytes(data)
        os.replace(temporary, path)


def test_rotated_certificate_is_picked_up_without_restart(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    ca_path = ca.write(tmp_path)
    cert, key = ca.server_cert(common_name="first").write(tmp_path, "server")
    health_port = free_port()
    tls = []
    for port in ("grpc", "http"):
        tls += [f"--{port}-use-ssl", f"--{port}-server-cert={cert}", f"--{port}-server-key={key}"]
    process = ServerProcess([REPO_ROOT / "model_repo"], [*tls, f"--http-health-port={health_port}"], log_path=tmp_path / "server.log")
    with process.start(wait_for=""):
        process.wait_until(f"http://127.0.0.1:{health_port}/v2/health/ready", 60)
        ports = ((process.grpc_port, "h2"), (process.http_port, "http/1.1"))
        assert [presented_common_name(port, ca_path, alpn) for port, alpn in ports] == ["first", "first"]

        # Connections opened before the rotation: a gRPC stream and an HTTP keep-alive connection.
        results: queue.Queue[object] = queue.Queue()
        client = grpcclient.InferenceServerClient(f"localhost:{process.grpc_port}", ssl=True, root_certificates=str(ca_path))
        client.start_stream(callback=lambda result, error: results.put(error or result))
        inputs = [grpcclient.InferInput("input", [1, 256], "FP32")]
        inputs[0].set_data_from_numpy(np.ones((1, 256), np.float32))
        client.async_stream_infer("mlp", inputs)
        assert not isinstance(results.get(timeout=DEADLINE_S), Exception)
        keep_alive = http.client.HTTPSConnection("localhost", process.http_port, context=ssl.create_default_context(cafile=str(ca_path)))
        keep_alive.request("GET", "/v2/health/live")
        assert keep_alive.getresponse().read() == b"" and keep_alive.sock is not None
        old_socket = keep_alive.sock

        rotate(ca.server_cert(common_name="second"), cert, key)
        for port, alpn in ports:
            wait_until(
                lambda p=port, a=alpn: presented_common_name(p, ca_path, a) == "second",
                DEADLINE_S,
                f"port {port} presents the new certificate",
            )

        client.async_stream_infer("mlp", inputs)  # the stream opened before the rotation still answers
        response = results.get(timeout=DEADLINE_S)
        assert not isinstance(response, Exception), response
        client.stop_stream()
        keep_alive.request("GET", "/v2/health/ready")
        assert keep_alive.getresponse().status == 200
        assert keep_alive.sock is old_socket  # the same connection, not a new one
        assert dict(item[0] for item in old_socket.getpeercert()["subject"])["commonName"] == "first"
        keep_alive.close()
    assert "TLS: loaded the changed certificate files (generation 2)" in process.log()


@pytest.mark.parametrize("port", ["grpc", "http"])
def test_unusable_certificate_files_stop_startup(tmp_path: Path, port: str) -> None:
    ca = CertificateAuthority()
    cert, _ = ca.server_cert().write(tmp_path, "a")
    _, other_key = ca.server_cert().write(tmp_path, "b")
    args = [f"--{port}-use-ssl", f"--{port}-server-cert={cert}", f"--{port}-server-key={other_key}"]
    process = ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path / "server.log").start(wait_for="")
    assert process.process is not None
    assert process.process.wait(60) == 1
    assert f"ortserve: error: {'gRPC' if port == 'grpc' else 'HTTP'} TLS: cannot use {cert}, {other_key}:" in process.log()
