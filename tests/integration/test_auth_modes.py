"""The other ways in: Triton's header restrictions, switching the repository API off, mTLS client
certificates as principals, and the default posture (open, with one warning)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from loadtest.certificates import make_pki
from scripts.harness import REPO_ROOT, ServerProcess, free_port

OPEN_WARNING = "the model repository API is open"


def mlp_inputs(module: object) -> list[object]:
    inputs = [module.InferInput("input", [1, 256], "FP32")]  # type: ignore[attr-defined]
    inputs[0].set_data_from_numpy(np.ones((1, 256), np.float32))
    return inputs


def test_default_posture_is_open_with_one_warning(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.get_model_repository_index()  # nothing configured: as before
    assert server.log().count(OPEN_WARNING) == 1
    assert "ortserve_auth_failures" in server.metrics().text


def test_triton_restrictions(tmp_path: Path) -> None:
    args = [
        "--grpc-restricted-protocol=model-repository,statistics:admin-key=s3cret",
        "--http-restricted-api=model-repository:admin-key=s3cret",
        "--http-restricted-api=inference:infer-key=other",
        "--model-control-mode=explicit",
        "--load-model=*",
    ]
    with ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        client = grpcclient.InferenceServerClient(process.grpc_url)
        assert client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": "s3cret"})
        assert client.get_inference_statistics("mlp", headers={"triton-grpc-protocol-admin-key": "s3cret"})
        for headers in ({}, {"triton-grpc-protocol-admin-key": "wrong"}, {"admin-key": "s3cret"}):
            with pytest.raises(
                InferenceServerException,
                match=r"UNAUTHENTICATED.*This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'",
            ):
                client.get_model_repository_index(headers=headers)
        assert client.infer("mlp", mlp_inputs(grpcclient)).as_numpy("output").shape == (1, 10)  # not restricted over gRPC

        http = httpclient.InferenceServerClient(process.http_url)
        assert http.get_model_repository_index(headers={"admin-key": "s3cret"}) is not None
        with pytest.raises(InferenceServerException, match="This API is restricted, expecting header 'admin-key'") as caught:
            http.get_model_repository_index()
        assert caught.value.status() == "401"
        assert http.infer("mlp", mlp_inputs(httpclient), headers={"infer-key": "other"}).as_numpy("output").shape == (1, 10)
        with pytest.raises(InferenceServerException, match="expecting header 'infer-key'"):
            http.infer("mlp", mlp_inputs(httpclient))
        assert http.get_inference_statistics("mlp")  # statistics is restricted over gRPC only
        assert OPEN_WARNING not in process.log()


def test_repository_api_switched_off(tmp_path: Path) -> None:
    args = ["--disable-repository-api", "--model-control-mode=explicit", "--load-model=*"]
    with ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        client = grpcclient.InferenceServerClient(process.grpc_url)
        for call in (lambda: client.load_model("mlp"), lambda: client.unload_model("mlp"), client.get_model_repository_index):
            with pytest.raises(InferenceServerException, match=r"PERMISSION_DENIED.*disabled on this server \(--disable-repository-api\)"):
                call()
        http = httpclient.InferenceServerClient(process.http_url)
        with pytest.raises(InferenceServerException) as caught:
            http.load_model("mlp")
        assert caught.value.status() == "403"
        assert client.is_model_ready("mlp")  # still loaded and serving
        assert client.infer("mlp", mlp_inputs(grpcclient)).as_numpy("output").shape == (1, 10)
        assert OPEN_WARNING not in process.log()


def test_client_certificate_identity_is_a_principal(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    auth = tmp_path / "auth.yaml"
    # Matched by the certificate's SAN (the CN, "ortserve-test-client", would match as well).
    auth.write_text(
        json.dumps({"principals": [{"name": "cert-app", "certificates": ["client.test"], "grants": {"inference": "*", "health": "*"}}]})
    )
    health_port = free_port()
    args = [*pki.tls_flags("grpc"), *pki.tls_flags("http"), f"--auth-config={auth}", f"--http-health-port={health_port}"]
    with ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path / "server.log").start(wait_for="") as process:
        process.wait_until(f"http://127.0.0.1:{health_port}/v2/health/ready", 60)
        client = grpcclient.InferenceServerClient(
            f"localhost:{process.grpc_port}",
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.client_key),
            certificate_chain=str(pki.client_cert),
        )
        assert client.infer("mlp", mlp_inputs(grpcclient)).as_numpy("output").shape == (1, 10)
        with pytest.raises(
            InferenceServerException, match=r"PERMISSION_DENIED.*principal 'cert-app' is not granted the 'model-repository' API"
        ):
            client.get_model_repository_index()
        options = {"ca_certs": str(pki.ca), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}
        http = httpclient.InferenceServerClient(f"localhost:{process.http_port}", ssl=True, ssl_options=options)
        assert http.infer("mlp", mlp_inputs(httpclient)).as_numpy("output").shape == (1, 10)
        with pytest.raises(InferenceServerException) as caught:
            http.get_model_config("mlp")
        assert caught.value.status() == "403"
