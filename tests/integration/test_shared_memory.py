"""System shared memory on a real server with tritonclient.utils.shared_memory, gRPC and HTTP:
inputs read from registered regions and outputs written into them for every datatype, the bad
requests of the issue answered with Triton's codes and messages, a region unregistered while
its request waits, and perf_analyzer --shared-memory system."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor, triton_to_np_dtype

from loadtest import perf_analyzer
from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.integration.slow_work import MAX_ROWS, ONE_INSTANCE, Blocker, rows_lasting, until_premise_holds
from tests.integration.test_perf_analyzer import CONTRACT_ARGS
from tests.repository_builder import IDENTITY_DATATYPES, write_model

Client = grpcclient.InferenceServerClient | httpclient.InferenceServerClient
PROTOCOLS = ("grpc", "http")
# HTTP statuses of the gRPC codes these tests expect (Triton's mapping, server/frontends/http/status.py).
HTTP_STATUS = {"INVALID_ARGUMENT": "400", "NOT_FOUND": "404", "INTERNAL": "500", "ALREADY_EXISTS": "400", "UNIMPLEMENTED": "501"}


@pytest.fixture(scope="module")
def shm_server(test_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = tmp_path_factory.mktemp("shm-repo")
    write_model(extra, "slow", onnx_models.slow_echo(), f"max_batch_size: {MAX_ROWS}\n{ONE_INSTANCE}")
    log = tmp_path_factory.mktemp("logs") / "shm.log"
    process = ServerProcess([test_repository, extra], ["--strict-readiness=false", "--allow-client-shm"], log_path=log)
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/live", 60)
        for model in ("simple", "slow", *(f"identity_{d.lower()}" for d in IDENTITY_DATATYPES)):
            process.wait_until(f"http://{process.http_url}/v2/models/{model}/ready", 60)
        yield process


@contextlib.contextmanager
def client_for(server: ServerProcess, protocol: str) -> Iterator[Any]:
    if protocol == "grpc":
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            yield client
    else:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            yield client
        finally:
            client.close()


def module_for(protocol: str) -> Any:
    return grpcclient if protocol == "grpc" else httpclient


@contextlib.contextmanager
def region(client: Client, size: int, offset: int = 0, register_size: int | None = None) -> Iterator[tuple[str, Any]]:
    """A fresh POSIX shared-memory object of ``size`` bytes, registered as a region; removed after."""
    name = f"r-{uuid.uuid4().hex[:10]}"
    handle = shm.create_shared_memory_region(name, f"/ortserve-{name}", size)
    try:
        client.register_system_shared_memory(name, f"/ortserve-{name}", register_size or size - offset, offset=offset)
        try:
            yield name, handle
        finally:
            client.unregister_system_shared_memory(name)
    finally:
        shm.destroy_shared_memory_region(handle)


def failure(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode."), str(error.message())
    raise AssertionError("the call succeeded but should have failed")


def expect(protocol: str, code: str) -> str:
    return code if protocol == "grpc" else HTTP_STATUS[code]


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"one", b"", "f\u00fcnf".encode()], [b"x" * 40, b"\x01\x02", b"abc"]], dtype=np.object_)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = np.dtype(triton_to_np_dtype(datatype))
    return (np.arange(6).reshape(2, 3) * 7 + 3).astype(dtype) if dtype.kind != "f" else (np.arange(6).reshape(2, 3) / 4 - 1).astype(dtype)


def wire(values: np.ndarray) -> bytes:
    return serialize_byte_tensor(values).item() if values.dtype == np.object_ else values.tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("datatype", IDENTITY_DATATYPES)
def test_every_datatype_goes_in_and_out_through_shared_memory(shm_server: ServerProcess, protocol: str, datatype: str) -> None:
    values = sample(datatype)
    data = wire(values)
    api = module_for(protocol)
    with (
        client_for(shm_server, protocol) as client,
        region(client, len(data)) as (inbound, in_handle),
        region(client, len(data) + 64) as (outbound, out_handle),
    ):
        shm.set_shared_memory_region(in_handle, [np.array([data], dtype=np.object_)] if values.dtype == np.object_ else [values])
        item = api.InferInput("INPUT0", list(values.shape), datatype)
        item.set_shared_memory(inbound, len(data))
        output = api.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory(outbound, len(data) + 64)
        result = client.infer(f"identity_{datatype.lower()}", [item], outputs=[output])
        answered = result.get_output("OUTPUT0")
        dtype = np.object_ if datatype == "BYTES" else triton_to_np_dtype(datatype)
        # A copy: the client's mapping goes with its region.
        written = np.array(shm.get_contents_as_numpy(out_handle, dtype, list(values.shape)))
    if protocol == "grpc":
        assert (answered.datatype, list(answered.shape)) == (datatype, list(values.shape))
        assert result.get_response().raw_output_contents == [b""]  # no data on the wire
    else:
        assert answered == {"name": "OUTPUT0", "datatype": datatype, "shape": list(values.shape)}
    assert written.tolist() == values.tolist()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_and_request_data_mix_in_one_request(shm_server: ServerProcess, protocol: str) -> None:
    first, second = np.arange(16, dtype=np.int32).reshape(1, 16), np.full((1, 16), 5, np.int32)
    api = module_for(protocol)
    with client_for(shm_server, protocol) as client, region(client, 4096 + 128, offset=4096) as (name, handle):
        shm.set_shared_memory_region(handle, [first], offset=4096 + 32)
        inputs = [api.InferInput("INPUT0", [1, 16], "INT32"), api.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(name, 64, offset=32)  # relative to the region, which starts at 4096 in the object
        inputs[1].set_data_from_numpy(second)
        outputs = [api.InferRequestedOutput("OUTPUT0"), api.InferRequestedOutput("OUTPUT1")]
        outputs[1].set_shared_memory(name, 64)
        result = client.infer("simple", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)
        np.testing.assert_array_equal(np.array(shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=4096)), first - second)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_lists_registered_regions(shm_server: ServerProcess, protocol: str) -> None:
    with client_for(shm_server, protocol) as client, region(client, 256, offset=64) as (name, _):
        status = client.get_system_shared_memory_status(name)
        regions = list(status.regions.values()) if protocol == "grpc" else status
        fields = [(r.name, r.key, r.offset, r.byte_size) for r in regions] if protocol == "grpc" else [tuple(r.values()) for r in regions]
        assert fields == [(name, f"/ortserve-{name}", 64, 192)]
    with client_for(shm_server, protocol) as client:
        code, message = failure(lambda: client.get_system_shared_memory_status(name))
    assert (code, message) == (expect(protocol, "NOT_FOUND"), f"Unable to find system shared memory region: '{name}'")


def test_server_metadata_advertises_system_shared_memory_only_when_enabled(shm_server: ServerProcess, server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(shm_server.grpc_url) as enabled, grpcclient.InferenceServerClient(server.grpc_url) as default:
        assert "system_shared_memory" in enabled.get_server_metadata().extensions
        assert "system_shared_memory" not in default.get_server_metadata().extensions


# ---- bad requests: Triton's codes and messages; nothing crashes, nothing is read out of bounds -----


def simple_from(api: Any, name: str, byte_size: int, offset: int = 0) -> list[Any]:
    inputs = [api.InferInput("INPUT0", [1, 16], "INT32"), api.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(name, byte_size, offset=offset)
    inputs[1].set_data_from_numpy(np.zeros((1, 16), np.int32))
    return inputs


INPUT_MISTAKES = [
    # (id, input byte size, input offset, expected gRPC code, message after any request id prefix)
    ("offset-beyond-region", 64, 128, "INVALID_ARGUMENT", "Invalid offset for shared memory region: '{name}'"),
    ("size-beyond-region", 128, 64, "INVALID_ARGUMENT", "Invalid offset + byte size for shared memory region: '{name}'"),
    (
        "size-mismatch-with-tensor",
        60,
        0,
        "INVALID_ARGUMENT",
        "input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60",
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("byte_size", "offset", "code", "message"), [case[1:] for case in INPUT_MISTAKES], ids=[c[0] for c in INPUT_MISTAKES]
)
def test_an_input_outside_its_region_or_its_tensor_is_refused(
    shm_server: ServerProcess, protocol: str, byte_size: int, offset: int, code: str, message: str
) -> None:
    api = module_for(protocol)
    with client_for(shm_server, protocol) as client, region(client, 128) as (name, _):
        got = failure(lambda: client.infer("simple", simple_from(api, name, byte_size, offset)))
    assert got[0] == expect(protocol, code)
    assert got[1].removeprefix("[request id: <id_unknown>] ") == message.format(name=name)
    assert_still_serving(shm_server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_region_is_not_found(shm_server: ServerProcess, protocol: str) -> None:
    with client_for(shm_server, protocol) as client:
        got = failure(lambda: client.infer("simple", simple_from(module_for(protocol), "no-such-region", 64)))
    assert got == (expect(protocol, "NOT_FOUND"), "Unable to find shared memory region: 'no-such-region'")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_output_region_too_small_for_its_output_fails(shm_server: ServerProcess, protocol: str) -> None:
    api = module_for(protocol)
    with client_for(shm_server, protocol) as client, region(client, 32) as (name, _):
        output = api.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory(name, 32)
        inputs = [api.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for item in inputs:
            item.set_data_from_numpy(np.ones((1, 16), np.int32))
        got = failure(lambda: client.infer("simple", inputs, outputs=[output]))
    expected = (
        "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 bytes to hold the results"
    )
    assert got == (expect(protocol, "INTERNAL"), expected)
    assert_still_serving(shm_server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_region_name_registered_twice_is_refused(shm_server: ServerProcess, protocol: str) -> None:
    with client_for(shm_server, protocol) as client, region(client, 64) as (name, _):
        got = failure(lambda: client.register_system_shared_memory(name, f"/ortserve-{name}", 64))
    assert got == (expect(protocol, "ALREADY_EXISTS"), f"shared memory region '{name}' already in manager")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", ["/etc/passwd", "/../../etc/passwd", "../proc/self/mem", "/dev/shm/../../etc/passwd"])
def test_a_key_outside_dev_shm_is_refused(shm_server: ServerProcess, protocol: str, key: str) -> None:
    with client_for(shm_server, protocol) as client:
        code, message = failure(lambda: client.register_system_shared_memory("outside", key, 64))
    assert code == expect(protocol, "INTERNAL")
    assert message.startswith(f"Unable to open shared memory region: '{key}'"), message


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_region_larger_than_its_object_is_refused(shm_server: ServerProcess, protocol: str) -> None:
    handle = shm.create_shared_memory_region("small", "/ortserve-small-object", 64)
    try:
        with client_for(shm_server, protocol) as client:
            got = failure(lambda: client.register_system_shared_memory("small", "/ortserve-small-object", 65))
    finally:
        shm.destroy_shared_memory_region(handle)
    assert got == (expect(protocol, "INVALID_ARGUMENT"), "failed to register shared memory region 'small': invalid args")


def assert_still_serving(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for item in inputs:
            item.set_data_from_numpy(np.ones((1, 16), np.int32))
        np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), np.full((1, 16), 2, np.int32))


# ---- a region unregistered while its request waits in the queue ---------------------------------


def test_unregistering_a_region_a_queued_request_uses_is_safe(shm_server: ServerProcess) -> None:
    rows = 4
    values = np.arange(rows, dtype=np.float32).reshape(rows, 1) + 0.5

    def attempt(blocker_rows: int) -> bool:
        with grpcclient.InferenceServerClient(shm_server.grpc_url) as client:
            name = f"r-{uuid.uuid4().hex[:10]}"
            handle = shm.create_shared_memory_region(name, f"/ortserve-{name}", 2 * values.nbytes)
            try:
                shm.set_shared_memory_region(handle, [values])
                client.register_system_shared_memory(name, f"/ortserve-{name}", 2 * values.nbytes)
                item = grpcclient.InferInput("x", [rows, 1], "FP32")
                item.set_shared_memory(name, values.nbytes)
                output = grpcclient.InferRequestedOutput("y")
                output.set_shared_memory(name, values.nbytes, offset=values.nbytes)
                outcome: list[object] = []
                with Blocker(shm_server, "slow", blocker_rows) as blocker:
                    sender = threading.Thread(target=lambda: outcome.append(_infer_or_error(client, item, output)))
                    sender.start()
                    queued = blocker.wait_queued(1)
                    client.unregister_system_shared_memory(name)  # while its request waits
                    assert list(client.get_system_shared_memory_status().regions) == []
                    still_queued = blocker.running()
                sender.join(300)
                if not (queued and still_queued):
                    return False
                assert outcome and not isinstance(outcome[0], BaseException), outcome
                written = np.array(shm.get_contents_as_numpy(handle, np.float32, [rows, 1], offset=values.nbytes))
                np.testing.assert_allclose(written, values, rtol=1e-5)
                client.register_system_shared_memory(name, f"/ortserve-{name}", 2 * values.nbytes)  # the name is free
                client.unregister_system_shared_memory(name)
            finally:
                shm.destroy_shared_memory_region(handle)
        return True

    until_premise_holds(attempt, rows_lasting(0.5), "the request was queued behind the blocker when its region was unregistered")
    assert_still_serving(shm_server)


def _infer_or_error(client: grpcclient.InferenceServerClient, item: Any, output: Any) -> object:
    try:
        return client.infer("slow", [item], outputs=[output], client_timeout=300)
    except BaseException as exc:
        return exc


# ---- perf_analyzer ----------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "protocol"), [("simple", "grpc"), ("mlp", "grpc"), ("simple", "http")])
def test_perf_analyzer_with_system_shared_memory(
    shm_server: ServerProcess, perf_analyzer_env: dict[str, str], model: str, protocol: str
) -> None:
    url = shm_server.grpc_url if protocol == "grpc" else shm_server.http_url
    args = [*CONTRACT_ARGS, "--shared-memory", "system", "--concurrency-range", "2", "-i", protocol]
    run = perf_analyzer.run(model, url, args, 120.0, perf_analyzer_env)
    failure_text = f"{run.describe()}\n--- server log ---\n{shm_server.log()[-4000:]}"
    assert run.returncode == 0, failure_text
    assert run.has_server_stats, failure_text
    assert all(point.throughput > 0 for point in run.points), failure_text
    with grpcclient.InferenceServerClient(shm_server.grpc_url) as client:
        assert list(client.get_system_shared_memory_status().regions) == []  # perf_analyzer unregistered its own
