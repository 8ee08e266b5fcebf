"""Bearer tokens against a real server: one principal per Triton API group, every gRPC method and
HTTP route called with each token, without one and with a wrong one; grants narrowed by model
globs through tritonclient; the failure metric; the audit log; the auth config reloading.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from loadtest.access_matrix import ALLOWED, DENIED, UNAUTHENTICATED, Target, call_http, group_principals, principal_entry, run_matrix, token
from scripts import onnx_models
from scripts.harness import Metrics, ServerProcess, free_port, wait_until
from server.security.groups import HTTP_ENDPOINTS
from tests.repository_builder import SIMPLE_CONFIG, write_model


def auth_document(extra: list[dict[str, object]] | None = None) -> dict[str, object]:
    principals = group_principals()
    principals.append(principal_entry("fraud", {"inference": ["fraud-*"], "metadata": ["fraud-*"], "health": "*"}))
    principals.append(principal_entry("admin", {"*": "*"}))
    return {"principals": principals + (extra or [])}


class AuthServer:
    def __init__(self, process: ServerProcess, health_port: int, auth_path: Path) -> None:
        self.process, self.health_port, self.auth_path = process, health_port, auth_path

    def metrics(self) -> Metrics:
        import urllib.request

        request = urllib.request.Request(self.process.metrics_url, headers=bearer("statistics"))
        with urllib.request.urlopen(request, timeout=10) as response:
            return Metrics(response.read().decode())


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(name)}"}


def start_auth_server(root: Path) -> tuple[ServerProcess, int, Path]:
    repository = root / "models"
    write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    write_model(repository, "fraud-mlp", onnx_models.mlp())
    auth_path = root / "auth.json"
    auth_path.write_text(json.dumps(auth_document()))
    health_port = free_port()
    args = [f"--auth-config={auth_path}", f"--http-health-port={health_port}", "--model-control-mode=explicit", "--load-model=*"]
    process = ServerProcess([repository], args, log_path=root / "server.log").start(wait_for="")
    process.wait_until(f"http://127.0.0.1:{health_port}/v2/health/ready", 60)
    return process, health_port, auth_path


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    process, health_port, auth_path = start_auth_server(tmp_path_factory.mktemp("auth"))
    with process:
        yield AuthServer(process, health_port, auth_path)


@pytest.fixture
def quiet_auth_server(tmp_path: Path) -> Iterator[AuthServer]:
    """A server of its own, so that no other test's refusals share its audit line budget."""
    process, health_port, auth_path = start_auth_server(tmp_path)
    with process:
        yield AuthServer(process, health_port, auth_path)


def test_allow_deny_matrix_over_every_rpc_and_route(auth_server: AuthServer) -> None:
    """Each principal reaches exactly its own group's endpoints; the failure metric counts each refusal."""
    before = auth_server.metrics()
    process = auth_server.process
    result = run_matrix(Target(process.grpc_url, f"http://{process.http_url}", f"http://127.0.0.1:{process.metrics_port}"))
    assert result.mismatches == []
    print(f"\nallow/deny matrix: {result.calls} calls, {dict(sorted(result.counts.items()))}")
    assert result.counts["grpc allowed"] == 23
    assert result.counts["http allowed"] == len(HTTP_ENDPOINTS) - 1  # all but GET /metrics, on its own port
    after = auth_server.metrics()
    for (protocol, group, reason), count in result.refusals.items():
        labels = {"protocol": protocol, "group": group, "reason": reason}
        assert after.value("ortserve_auth_failures", **labels) - before.value("ortserve_auth_failures", **labels) == count, labels
    assert token("admin") not in process.log() and "not-a-token" not in process.log()


# ---- narrowed grants through tritonclient --------------------------------------------------------


def mlp_inputs(module: object) -> list[object]:
    inputs = [module.InferInput("input", [1, 256], "FP32")]  # type: ignore[attr-defined]
    inputs[0].set_data_from_numpy(np.ones((1, 256), np.float32))
    return inputs


def simple_inputs(module: object) -> list[object]:
    inputs = [module.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]  # type: ignore[attr-defined]
    for item in inputs:
        item.set_data_from_numpy(np.ones((1, 16), np.int32))
    return inputs


def test_grant_narrowed_to_a_model_glob_over_grpc(auth_server: AuthServer) -> None:
    client = grpcclient.InferenceServerClient(auth_server.process.grpc_url)
    headers = {"authorization": f"Bearer {token('fraud')}"}
    assert client.infer("fraud-mlp", mlp_inputs(grpcclient), headers=headers).as_numpy("output").shape == (1, 10)
    assert client.get_model_metadata("fraud-mlp", headers=headers).name == "fraud-mlp"
    with pytest.raises(
        InferenceServerException, match=r"PERMISSION_DENIED.*principal 'fraud' is not granted the 'inference' API on model 'simple'"
    ):
        client.infer("simple", simple_inputs(grpcclient), headers=headers)
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
        client.get_model_config("fraud-mlp", headers=headers)  # model-config is not granted at all
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.infer("fraud-mlp", mlp_inputs(grpcclient))


def test_grant_narrowed_to_a_model_glob_over_http(auth_server: AuthServer) -> None:
    client = httpclient.InferenceServerClient(auth_server.process.http_url)
    headers = {"Authorization": f"Bearer {token('fraud')}"}
    assert client.infer("fraud-mlp", mlp_inputs(httpclient), headers=headers).as_numpy("output").shape == (1, 10)
    with pytest.raises(InferenceServerException, match="not granted the 'inference' API on model 'simple'") as caught:
        client.infer("simple", simple_inputs(httpclient), headers=headers)
    assert caught.value.status() == "403"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("fraud-mlp", mlp_inputs(httpclient), headers={"Authorization": "Bearer wrong"})
    assert caught.value.status() == "401"


def test_a_stream_is_checked_for_every_request(auth_server: AuthServer) -> None:
    results: queue.Queue[object] = queue.Queue()
    client = grpcclient.InferenceServerClient(auth_server.process.grpc_url)
    client.start_stream(callback=lambda result, error: results.put(error or result), headers={"authorization": f"Bearer {token('fraud')}"})
    client.async_stream_infer("fraud-mlp", mlp_inputs(grpcclient))
    first = results.get(timeout=30)
    assert not isinstance(first, Exception), first
    client.async_stream_infer("simple", simple_inputs(grpcclient))
    refused = results.get(timeout=30)
    assert isinstance(refused, InferenceServerException) and "PERMISSION_DENIED" in str(refused), refused
    client.stop_stream()


# ---- audit ---------------------------------------------------------------------------------------


def audit_entries(process: ServerProcess) -> list[dict[str, str]]:
    return [json.loads(line.split(" audit ", 1)[1]) for line in process.log().splitlines() if "ortserve.audit: audit {" in line]


def test_loads_and_unloads_are_audited_with_the_principal(quiet_auth_server: AuthServer) -> None:
    auth_server = quiet_auth_server
    client = grpcclient.InferenceServerClient(auth_server.process.grpc_url)
    admin = {"authorization": f"Bearer {token('admin')}"}
    before = auth_server.metrics()
    client.load_model("simple", headers=admin)
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
        client.unload_model("simple", headers={"authorization": f"Bearer {token('inference')}"})
    http = httpclient.InferenceServerClient(auth_server.process.http_url)
    with pytest.raises(InferenceServerException):
        http.load_model("no-such-model", headers={"Authorization": f"Bearer {token('model-repository')}"})

    def logged() -> list[dict[str, str]]:
        return [e for e in audit_entries(auth_server.process) if e.get("action") in ("load", "unload")]

    wait_until(lambda: len(logged()) >= 3, 30, "three audit lines")
    entries = logged()[-3:]
    assert {k: entries[0][k] for k in ("principal", "action", "model", "outcome", "protocol")} == {
        "principal": "admin",
        "action": "load",
        "model": "simple",
        "outcome": "ok",
        "protocol": "grpc",
    }
    assert (entries[1]["principal"], entries[1]["action"], entries[1]["outcome"], entries[1]["reason"]) == (
        "inference",
        "unload",
        "refused",
        "not_granted",
    )
    assert (entries[2]["principal"], entries[2]["action"], entries[2]["model"]) == ("model-repository", "load", "no-such-model")
    assert entries[2]["outcome"] == "error: HTTP 404"
    after = auth_server.metrics()
    assert (
        after.value("ortserve_audit_events", action="load", outcome="ok")
        - before.value("ortserve_audit_events", action="load", outcome="ok")
        == 1
    )
    assert (
        after.value("ortserve_audit_events", action="load", outcome="error")
        - before.value("ortserve_audit_events", action="load", outcome="error")
        == 1
    )


# ---- reloading -----------------------------------------------------------------------------------


def test_auth_config_reloads_on_change_and_a_broken_one_keeps_the_last(auth_server: AuthServer) -> None:
    client = grpcclient.InferenceServerClient(auth_server.process.grpc_url)
    newcomer = {"authorization": f"Bearer {token('newcomer')}"}
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.is_server_live(headers=newcomer)
    auth_server.auth_path.write_text(json.dumps(auth_document([principal_entry("newcomer", {"health": "*"})])))

    def newcomer_accepted() -> bool:
        try:
            return client.is_server_live(headers=newcomer)
        except InferenceServerException:
            return False

    wait_until(newcomer_accepted, 30, "the new token is accepted")
    errors = auth_server.metrics().value("ortserve_auth_config_reloads", outcome="error")
    auth_server.auth_path.write_text('{"principals": [{"name": "broken"')
    wait_until(
        lambda: auth_server.metrics().value("ortserve_auth_config_reloads", outcome="error") == errors + 1, 30, "the broken file is seen"
    )
    assert client.is_server_live(headers=newcomer)  # the last good config stays in force
    assert "auth config not reloaded, the previous one stays in force" in auth_server.process.log()
    auth_server.auth_path.write_text(json.dumps(auth_document()))
    wait_until(lambda: not newcomer_accepted(), 30, "the removed token is refused")


def test_metrics_port_needs_the_statistics_grant(auth_server: AuthServer) -> None:
    endpoint = HTTP_ENDPOINTS["GET /metrics"]
    base = f"http://127.0.0.1:{auth_server.process.metrics_port}"
    assert call_http(base, endpoint, {})[0] == UNAUTHENTICATED
    assert call_http(base, endpoint, bearer("inference"))[0] == DENIED
    assert call_http(base, endpoint, bearer("statistics"))[0] == ALLOWED


def test_unknown_paths_and_methods_answer_as_without_auth(auth_server: AuthServer) -> None:
    """No route matched: aiohttp's own 404 / 405, before and without any credential check."""
    import urllib.error
    import urllib.request

    for method, path, status in (("GET", "/v2/no/such/path", 404), ("DELETE", "/v2/health/live", 405)):
        request = urllib.request.Request(f"http://{auth_server.process.http_url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == status, (method, path)
