"""Hostile input against a real server: compression bombs, huge claimed sizes, names built to break
logs or paths, warmups built to exhaust a load thread. Each gets a precise refusal, costs bounded
memory (the server's own RSS high-water mark, reset before each case) and leaves the server
serving everything else."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, http_status, wait_until
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.repository_builder import write_model

MIB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("hostile_repo")
    write_model(repository, "mlp", onnx_models.mlp())
    write_model(repository, "simple_add", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    write_model(repository, "identity_fp32", onnx_models.identity("FP32", ["batch", "n"]))
    process = ServerProcess([Path(repository)], ["--model-control-mode=explicit", "--load-model=*"], log_path=repository / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


class Memory:
    """The server process's peak RSS since the last reset (Linux: clear_refs 5 resets VmHWM)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def reset(self) -> None:
        Path(f"/proc/{self._pid}/clear_refs").write_text("5")

    def _field(self, name: str) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{name} not in /proc/{self._pid}/status")

    def peak_growth(self, baseline: int) -> int:
        return self._field("VmHWM") - baseline

    def now(self) -> int:
        return self._field("VmRSS")


@pytest.fixture
def memory(server: ServerProcess) -> Memory:
    assert server.process is not None
    return Memory(server.process.pid)


def post(server: ServerProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def still_serving(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        item = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        item.set_data_from_numpy(np.zeros((1, 4), np.float32))
        np.testing.assert_array_equal(client.infer("simple_add", [item]).as_numpy("OUTPUT0"), np.ones((1, 4), np.float32))


# ---- HTTP compression -------------------------------------------------------------------------

HTTP_LIMIT = 128 * MIB  # the documented default of --http-max-input-bytes


def test_a_gzip_bomb_is_refused_at_the_limit_with_bounded_memory(server: ServerProcess, memory: Memory) -> None:
    bomb = gzip.compress(bytes(1024 * MIB), 9)  # about 1 MB on the wire
    baseline = memory.now()
    memory.reset()
    status, body = post(server, "/v2/models/mlp/infer", bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 413
    assert body == {"error": f"decoded request body exceeds the server's limit of {HTTP_LIMIT} bytes (--http-max-input-bytes)"}
    assert memory.peak_growth(baseline) < HTTP_LIMIT + 64 * MIB
    still_serving(server)


def test_many_tiny_gzip_members_are_refused(server: ServerProcess) -> None:
    status, body = post(server, "/v2/models/mlp/infer", gzip.compress(b"") * 209_715, {"Content-Encoding": "gzip"})
    assert (status, body) == (400, {"error": "the request body has more than 64 gzip members"})
    still_serving(server)


# ---- names and ids ----------------------------------------------------------------------------


def test_a_megabyte_request_id_is_refused_without_being_echoed(server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="simple_add", id="r" * MIB)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(bytes(16))
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    details = caught.value.details()  # type: ignore[attr-defined]
    assert "request id" in details and "longer than 256 characters" in details and len(details) < 300


def test_an_unknown_model_with_a_huge_name_is_refused_briefly(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client, pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("m" * 100_000)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and len(caught.value.message()) < 300


# ---- warmup from the network ------------------------------------------------------------------

BIG_WARMUP = {
    "max_batch_size": 4,
    "model_warmup": [
        {"name": "huge", "batch_size": 1, "inputs": {"INPUT0": {"data_type": "TYPE_FP32", "dims": [100_000_000], "random_data": True}}}
    ],
}
MANY_WARMUPS = {
    "max_batch_size": 4,
    "model_warmup": [
        {"name": "many", "count": 6_000_000, "inputs": {"INPUT0": {"data_type": "TYPE_FP32", "dims": [4], "zero_data": True}}}
    ],
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (BIG_WARMUP, "warmup sample 'huge': its inputs take 400000000 bytes, above 67108864"),
        (MANY_WARMUPS, "warmup sample 'many': count 6000000 is above 16"),
    ],
    ids=["huge-sample", "huge-count"],
)
def test_a_warmup_sent_over_the_network_is_bounded(server: ServerProcess, memory: Memory, config: dict, expected: str) -> None:
    baseline = memory.now()
    memory.reset()
    with grpcclient.InferenceServerClient(server.grpc_url) as client, pytest.raises(InferenceServerException) as caught:
        client.load_model("simple_add", config=json.dumps(config))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert expected in caught.value.message()
    assert memory.peak_growth(baseline) < 64 * MIB
    still_serving(server)  # the failed reload left the loaded version serving


# ---- aiohttp's own refusals are JSON like every other 4xx -------------------------------------


def raw_http(server: ServerProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
    ],
    ids=["bad-content-length", "over-long-header", "too-many-headers"],
)
def test_parser_refusals_answer_json(server: ServerProcess, request_bytes: bytes) -> None:
    reply = raw_http(server, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1].startswith(b"4"), head
    assert b"Content-Type: application/json" in head
    assert set(json.loads(body)) == {"error"}
    still_serving(server)


# ---- slow and many clients (a server with small limits) ----------------------------------------


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("tight_repo")
    write_model(repository, "simple_add", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    limits = ["--http-max-connections=4", "--http-idle-timeout-secs=1", "--grpc-max-connections=4", "--grpc-handshake-timeout-secs=1"]
    process = ServerProcess([Path(repository)], limits, log_path=repository / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def closed_by_server(sock: socket.socket, within_secs: float = 60.0) -> bool:
    """Whether the server closes ``sock`` (reads reach EOF) within the time, reading what it sends."""
    sock.settimeout(within_secs)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_a_half_sent_http_header_is_closed_after_the_idle_timeout(tight_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", tight_server.http_port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert closed_by_server(sock)
    assert http_status(f"http://{tight_server.http_url}/v2/health/ready") == 200


def test_http_connections_past_the_cap_are_closed(tight_server: ServerProcess) -> None:
    held = [socket.create_connection(("127.0.0.1", tight_server.http_port)) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", tight_server.http_port)) as extra:
            assert closed_by_server(extra, within_secs=0.9)  # before the idle timeout could have
    finally:
        for sock in held:
            sock.close()


def test_a_half_sent_http2_preface_is_closed_after_the_handshake_timeout(tight_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", tight_server.grpc_port)) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n")
        assert closed_by_server(sock)
    with grpcclient.InferenceServerClient(tight_server.grpc_url) as client:
        assert client.is_server_ready()


def test_grpc_connections_past_the_cap_are_closed(tight_server: ServerProcess) -> None:
    held = [socket.create_connection(("127.0.0.1", tight_server.grpc_port)) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", tight_server.grpc_port)) as extra:
            assert closed_by_server(extra, within_secs=0.9)
    finally:
        for sock in held:
            sock.close()


# ---- nothing a config names may reach outside the model's directory ---------------------------


@pytest.mark.parametrize(
    "filename",
    ["/etc/passwd", "/nonexistent/model.onnx", "../../mlp/1/model.onnx", "../../../../../../nonexistent"],
    ids=["absolute-existing", "absolute-missing", "sibling-model", "missing-far-away"],
)
def test_default_model_filename_cannot_leave_the_model_directory(server: ServerProcess, filename: str) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client, pytest.raises(InferenceServerException) as caught:
        client.load_model("simple_add", config=json.dumps({"default_model_filename": filename}))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = caught.value.message()
    # The same words whether or not the target exists: nothing to learn about the host.
    assert f"default_model_filename '{filename}' must name a file inside the model directory" in message
    assert "PROTOBUF" not in message and "No such file" not in message
    still_serving(server)


def test_external_data_outside_the_model_directory_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    weights = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    set_external_data(weights, location="../../../../../../etc/hostname", offset=0, length=16)
    weights.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "w"], ["OUTPUT0"])],
        "escape",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with grpcclient.InferenceServerClient(server.grpc_url) as client, pytest.raises(InferenceServerException) as caught:
        client.load_model("escaping", config="{}", files={"file:1/model.onnx": model.SerializeToString()})
    message = caught.value.message()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "escapes model directory" in message
    assert "/tmp" not in message and "ortserve-loaded-models" not in message  # no host paths
    still_serving(server)


# ---- a stream whose client never reads its responses ------------------------------------------


def test_a_stream_that_is_never_read_applies_back_pressure(server: ServerProcess, memory: Memory) -> None:
    import threading
    import time

    sent = 0
    stop = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        nonlocal sent
        for index in range(3000):
            if stop.is_set():
                return
            request = pb.ModelInferRequest(model_name="identity_fp32", id=str(index))
            request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 25600])  # 100 KB each
            request.raw_input_contents.append(bytes(25600 * 4))
            sent += 1
            yield request

    def executions() -> int:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            stats = client.get_inference_statistics("identity_fp32", as_json=True)["model_stats"][0]
        return int(stats.get("execution_count", 0))

    executed_before = executions()
    baseline = memory.now()
    memory.reset()
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=120)
        # The server has started on the stream (so a pass below is not a stream it never read)...
        wait_until(lambda: executions() > executed_before, 60, "the server executing the stream's first request")
        # ...then wait until nothing moves: neither the client's sending nor the server's executions
        # (back-pressure holds both), or everything was sent. Proving that the server stops
        # needs some window; a slow machine only makes fewer requests go, never more.
        last, still = (-1, -1), 0
        while still < 6 and sent < 3000:
            time.sleep(0.5)
            now = (sent, executions())
            still = still + 1 if now == last else 0
            last = now
        growth = memory.peak_growth(baseline)
        answered = executions() - executed_before
        stop.set()
        call.cancel()
    assert answered < 1000, "the server kept serving a stream whose responses nobody read"
    assert growth < 96 * MIB, growth
    still_serving(server)


# ---- shutdown while a model loads ---------------------------------------------------------------

SLOW_WARMUP = """
max_batch_size: 1
input [ { name: "x", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 1 ] } ]
model_warmup [ { name: "forever", batch_size: 1, count: 1000000,
                 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } } ]
"""


def slow_loading_repository(root: Path) -> Path:
    repository = root / "slow_repo"
    write_model(repository, "slow", onnx_models.slow_echo(), SLOW_WARMUP)
    write_model(repository, "quick", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    return repository


def test_sigterm_during_start_up_loads_exits_within_the_exit_timeout(tmp_path: Path) -> None:
    server = ServerProcess([slow_loading_repository(tmp_path)], ["--exit-timeout-secs=2"], log_path=tmp_path / "server.log")
    server.start(wait_for="live")  # live while the models load, not ready
    assert server.terminate(timeout=30) == 0  # the warmup alone would run for many minutes
    assert "abandoning model loads" in server.log()


def test_an_http_load_in_progress_at_shutdown_does_not_answer_success(tmp_path: Path) -> None:
    import threading

    repository = slow_loading_repository(tmp_path)
    server = ServerProcess(
        [repository], ["--model-control-mode=explicit", "--load-model=quick", "--exit-timeout-secs=2"], log_path=tmp_path / "s.log"
    )
    with server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        outcome: list[tuple[int, dict]] = []
        loader = threading.Thread(target=lambda: outcome.append(post(server, "/v2/repository/models/slow/load", b"{}", {})))
        loader.start()
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            wait_for = time.monotonic() + 60
            while time.monotonic() < wait_for:  # until the server shows the load under way
                index = {m.name: m.state for m in client.get_model_repository_index().models}
                if index.get("slow") == "LOADING":
                    break
                time.sleep(0.05)
            assert index.get("slow") == "LOADING", index
        assert server.terminate(timeout=30) == 0
        loader.join(60)
    assert outcome and outcome[0][0] != 200, outcome
