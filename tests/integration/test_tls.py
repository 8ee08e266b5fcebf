"""TLS and mTLS on every port, with real clients: tritonclient (gRPC and HTTP), grpc.health.v1,
perf_analyzer, curl and Python's ssl; plaintext, expired, wrongly-signed and TLS 1.1 clients are
refused; probes get a plaintext health port only when asked for one.

Certificates are made for this module at run time (tests/tls_certs.py).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtest import perf_analyzer
from loadtest.certificates import Pki, make_pki
from scripts.harness import REPO_ROOT, ServerProcess, free_port, http_status


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class TlsServer:
    def __init__(self, process: ServerProcess, health_port: int) -> None:
        self.process, self.health_port = process, health_port

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """mTLS on gRPC and HTTP, TLS (server side only) on metrics, health in plaintext on its own port."""
    health_port = free_port()
    args = [*pki.tls_flags("grpc"), *pki.tls_flags("http"), *pki.tls_flags("metrics", mutual=False), f"--http-health-port={health_port}"]
    process = ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path_factory.mktemp("logs") / "tls.log")
    with process.start(wait_for=""):
        process.wait_until(f"http://127.0.0.1:{health_port}/v2/health/ready", 60)
        yield TlsServer(process, health_port)


def grpc_client(server: TlsServer, pki: Pki, cert: Path | None = None, key: Path | None = None) -> grpcclient.InferenceServerClient:
    cert, key = cert or pki.client_cert, key or pki.client_key
    return grpcclient.InferenceServerClient(
        f"localhost:{server.process.grpc_port}", ssl=True, root_certificates=str(pki.ca), private_key=str(key), certificate_chain=str(cert)
    )


def http_client(server: TlsServer, pki: Pki, cert: Path | None = None, key: Path | None = None) -> httpclient.InferenceServerClient:
    options = {"ca_certs": str(pki.ca), "certfile": str(cert or pki.client_cert), "keyfile": str(key or pki.client_key)}
    return httpclient.InferenceServerClient(f"localhost:{server.process.http_port}", ssl=True, ssl_options=options)


def simple_inputs(module: object) -> tuple[list[object], np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]  # type: ignore[attr-defined]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones_like(a))
    return inputs, a


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None, alpn: str = "http/1.1") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols([alpn])
    return context


def https_get(url: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# ---- real clients over TLS -----------------------------------------------------------------------


def test_tritonclient_grpc_over_mtls(tls_server: TlsServer, pki: Pki) -> None:
    client = grpc_client(tls_server, pki)
    assert client.is_server_ready()
    inputs, a = simple_inputs(grpcclient)
    result = client.infer("simple", inputs)
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + 1)
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - 1)


def test_tritonclient_http_over_mtls(tls_server: TlsServer, pki: Pki) -> None:
    client = http_client(tls_server, pki)
    assert client.is_server_ready()
    inputs, a = simple_inputs(httpclient)
    result = client.infer("simple", inputs)
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + 1)


def test_grpc_health_v1_over_mtls(tls_server: TlsServer, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.process.grpc_port}", credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_server_certificate_and_negotiated_version(tls_server: TlsServer, pki: Pki) -> None:
    for port, alpn in ((tls_server.process.grpc_port, "h2"), (tls_server.process.http_port, "http/1.1")):
        context = client_context(pki, pki.client_cert, pki.client_key, alpn)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.getpeercert()["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))


def test_metrics_over_tls(tls_server: TlsServer, pki: Pki) -> None:
    status, body = https_get(f"https://localhost:{tls_server.process.metrics_port}/metrics", client_context(pki))
    assert status == 200
    assert b"nv_inference_count{" in body
    assert http_status(f"http://127.0.0.1:{tls_server.process.metrics_port}/metrics") is None  # plaintext: no HTTP answer


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (the README's test command installs it)")
def test_curl_with_cacert_cert_and_key(tls_server: TlsServer, pki: Pki) -> None:
    url = f"https://localhost:{tls_server.process.http_port}/v2/models/simple/infer"
    body = '{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [' + ",".join(["2"] * 16) + "]}, "
    body += '{"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [' + ",".join(["1"] * 16) + "]}]}"
    base = ["curl", "-sS", "--max-time", "20", "--cacert", str(pki.ca)]
    done = subprocess.run(
        [*base, "--cert", str(pki.client_cert), "--key", str(pki.client_key), url, "-d", body], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert b'"name":"OUTPUT0"' in done.stdout and b"[3,3,3,3" in done.stdout
    refused = subprocess.run([*base, url, "-d", body], capture_output=True, timeout=60)  # no client certificate
    assert refused.returncode != 0 and refused.stdout == b""


def test_perf_analyzer_over_grpc_tls(tls_server: TlsServer, pki: Pki, perf_analyzer_env: dict[str, str]) -> None:
    ssl_args = ["--ssl-grpc-use-ssl", "true", f"--ssl-grpc-root-certifications-file={pki.ca}"]
    ssl_args += [f"--ssl-grpc-private-key-file={pki.client_key}", f"--ssl-grpc-certificate-chain-file={pki.client_cert}"]
    contract = ["--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000"]
    run = perf_analyzer.run("mlp", f"localhost:{tls_server.process.grpc_port}", [*contract, *ssl_args], 120, perf_analyzer_env)
    assert run.returncode == 0 and run.has_server_stats, run.describe()
    assert run.points and run.points[0].throughput > 0, run.describe()


def test_perf_analyzer_over_https(tls_server: TlsServer, pki: Pki, perf_analyzer_env: dict[str, str]) -> None:
    ssl_args = ["-i", "http", f"--ssl-https-ca-certificates-file={pki.ca}"]
    ssl_args += [f"--ssl-https-client-certificate-file={pki.client_cert}", f"--ssl-https-private-key-file={pki.client_key}"]
    contract = ["--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000"]
    url = f"https://localhost:{tls_server.process.http_port}"
    run = perf_analyzer.run("mlp", url, [*contract, *ssl_args], 120, perf_analyzer_env)
    assert run.returncode == 0 and run.has_server_stats, run.describe()
    assert run.points and run.points[0].throughput > 0, run.describe()


# ---- refused -------------------------------------------------------------------------------------


def test_plaintext_clients_are_refused(tls_server: TlsServer) -> None:
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        grpcclient.InferenceServerClient(tls_server.process.grpc_url).is_server_live(client_timeout=10)
    assert http_status(f"http://{tls_server.process.http_url}/v2/health/live") is None


@pytest.mark.parametrize("which", ["expired", "foreign", "none"])
def test_bad_client_certificates_are_refused_over_grpc(tls_server: TlsServer, pki: Pki, which: str) -> None:
    cert, key = {"expired": (pki.expired_cert, pki.expired_key), "foreign": (pki.foreign_cert, pki.foreign_key)}.get(which, (None, None))
    if cert is None:
        client = grpcclient.InferenceServerClient(f"localhost:{tls_server.process.grpc_port}", ssl=True, root_certificates=str(pki.ca))
    else:
        client = grpc_client(tls_server, pki, cert, key)
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        client.is_server_live(client_timeout=10)
    assert grpc_client(tls_server, pki).is_server_live()  # the server itself is fine


@pytest.mark.parametrize("which", ["expired", "foreign", "none"])
def test_bad_client_certificates_are_refused_over_https(tls_server: TlsServer, pki: Pki, which: str) -> None:
    cert, key = {"expired": (pki.expired_cert, pki.expired_key), "foreign": (pki.foreign_cert, pki.foreign_key)}.get(which, (None, None))
    context = client_context(pki, cert, key)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        https_get(f"https://localhost:{tls_server.process.http_port}/v2/health/live", context)
    assert (
        https_get(f"https://localhost:{tls_server.process.http_port}/v2/health/live", client_context(pki, pki.client_cert, pki.client_key))[
            0
        ]
        == 200
    )


def _tls11_context(pki: Pki, alpn: str) -> ssl.SSLContext:
    """A client that offers TLS 1.1 only (OpenSSL's security level 0 allows it)."""
    context = client_context(pki, pki.client_cert, pki.client_key, alpn)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version() or ""


# Python deprecates TLS 1.0/1.1 settings; the point here is a client that offers only those.
OLD_TLS_WARNINGS = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


@OLD_TLS_WARNINGS
def test_the_old_tls_client_works_against_a_server_that_allows_it(pki: Pki) -> None:
    """The premise of the next test: this client can speak TLS 1.1, so its refusal is the server's."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_context.minimum_version = ssl.TLSVersion.TLSv1_1
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        assert _handshake(listener.getsockname()[1], _tls11_context(pki, "http/1.1")) == "TLSv1.1"
        thread.join(10)


@OLD_TLS_WARNINGS
def test_tls_below_1_2_is_refused(tls_server: TlsServer, pki: Pki) -> None:
    for port, alpn in ((tls_server.process.grpc_port, "h2"), (tls_server.process.http_port, "http/1.1")):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(port, _tls11_context(pki, alpn))


# ---- the plaintext health port -------------------------------------------------------------------


def test_health_port_serves_only_server_health(tls_server: TlsServer) -> None:
    assert http_status(f"{tls_server.health_url}/v2/health/live") == 200
    assert http_status(f"{tls_server.health_url}/v2/health/ready") == 200
    for path in ("/v2/models/simple/ready", "/v2", "/v2/models/simple", "/metrics"):
        assert http_status(f"{tls_server.health_url}{path}") == 404, path
