"""Explicit model control: --load-model at startup, then RepositoryModelLoad/Unload over both
protocols, with ``config`` overrides, ``file:`` contents, draining, validation and serialization.

Control calls go through tritonclient.grpc or tritonclient.http (parametrized); inference goes
through gRPC. Models are ``add_constant`` graphs, so each answer names the weights that served it.
"""

from __future__ import annotations

import gc
import json
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess
from scripts.load_client import LoadClient, failures
from tests.integration.slow_work import ONE_INSTANCE, Blocker, echo_input, rows_lasting, until_premise_holds
from tests.repository_builder import write_model

PROTOCOLS = ("grpc", "http")
# Both clients' error statuses, as one neutral name.
STATUS_NAMES = {"400": "INVALID_ARGUMENT", "404": "NOT_FOUND", "503": "UNAVAILABLE", "500": "INTERNAL"}
# The slow model answers one request at a time (any number of rows each): a queue forms behind a Blocker.
QUEUED_CONFIG = f"""
max_batch_size: 0
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ -1, 1 ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ -1, 1 ] }} ]
{ONE_INSTANCE}
"""
CONSTANTS = {"alpha": 1.0, "gamma": 3.0, "delta": 4.0}


def add_constant_bytes(constant: float) -> bytes:
    return onnx_models.add_constant("FP32", ["batch", 4], constant).SerializeToString()


def build_repository(repository: Path) -> Path:
    for name, constant in CONSTANTS.items():
        write_model(repository, name, onnx_models.add_constant("FP32", ["batch", 4], constant), "max_batch_size: 8\n")
    for version, constant in ((1, 2.0), (2, 22.0)):
        write_model(repository, "beta", onnx_models.add_constant("FP32", ["batch", 4], constant), "max_batch_size: 8\n", version)
    write_model(repository, "queued", onnx_models.slow_echo(), QUEUED_CONFIG)
    return repository


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def start_server(repository: Path, args: list[str], log: Path, temporary: Path | None = None) -> ServerProcess:
    """Started with TMPDIR=``temporary`` when given, so the private file area is observable."""
    server = ServerProcess([repository], args, log_path=log)
    with pytest.MonkeyPatch.context() as patch:
        if temporary is not None:
            temporary.mkdir(exist_ok=True)
            patch.setenv("TMPDIR", str(temporary))
        server.start("live")
    return server


# ---- clients -------------------------------------------------------------------------------------


def status_name(exc: InferenceServerException) -> str:
    status = str(exc.status())
    return STATUS_NAMES.get(status, status.removeprefix("StatusCode."))


class Control:
    """Repository control over one protocol with one interface."""

    def __init__(self, protocol: str, server: ServerProcess) -> None:
        self.protocol = protocol
        if protocol == "grpc":
            self.client: grpcclient.InferenceServerClient | httpclient.InferenceServerClient = grpcclient.InferenceServerClient(
                server.grpc_url
            )
        else:
            self.client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)

    def load(self, name: str, config: str | None = None, files: dict[str, bytes] | None = None) -> None:
        self.client.load_model(name, config=config, files=files)

    def unload(self, name: str) -> None:
        self.client.unload_model(name)

    def error(self, operation: str, name: str, **kwargs: object) -> tuple[str, str]:
        """(status name, message) of a call that must fail."""
        try:
            getattr(self, operation)(name, **kwargs)
        except InferenceServerException as exc:
            return status_name(exc), exc.message()
        raise AssertionError(f"{operation} '{name}' over {self.protocol} succeeded")

    def max_batch_size(self, name: str) -> int:
        if self.protocol == "grpc":
            return self.client.get_model_config(name).config.max_batch_size
        return int(self.client.get_model_config(name).get("max_batch_size", 0))

    def index(self) -> dict[tuple[str, str], tuple[str, str]]:
        if self.protocol == "grpc":
            models = self.client.get_model_repository_index(as_json=True).get("models", [])
        else:
            models = self.client.get_model_repository_index()
        return {(m["name"], m.get("version", "")): (m.get("state", ""), m.get("reason", "")) for m in models}

    def close(self) -> None:
        # Dropped here, on the test thread: tritonclient.http's __del__ fails on any other thread.
        client, self.client = self.client, None  # type: ignore[assignment]
        client.close()
        del client
        gc.collect()


def model_ready(client: grpcclient.InferenceServerClient, name: str, version: str = "") -> bool:
    try:
        return client.is_model_ready(name, version)
    except InferenceServerException:
        return False


def infer_value(client: grpcclient.InferenceServerClient, model: str, version: str = "") -> tuple[str, float]:
    data = np.full((1, 4), 5.0, np.float32)
    item = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    item.set_data_from_numpy(data)
    result = client.infer(model, [item], model_version=version)
    return result.get_response().model_version, float(np.mean(result.as_numpy("OUTPUT0") - data))


def infer_error(client: grpcclient.InferenceServerClient, model: str) -> str:
    try:
        infer_value(client, model)
    except InferenceServerException as exc:
        return f"{status_name(exc)}: {exc.message()}"
    return ""


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("explicit_repo"))


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server_tmp")


@pytest.fixture(scope="module")
def explicit_server(repository: Path, server_tmp: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "explicit.log"
    server = start_server(repository, ["--model-control-mode", "explicit", "--load-model", "alpha"], log, server_tmp)
    try:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 30)
        yield server
    finally:
        server.terminate()


@pytest.fixture
def client(explicit_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(explicit_server.grpc_url) as triton:
        yield triton


@pytest.fixture(params=PROTOCOLS)
def control(request: pytest.FixtureRequest, explicit_server: ServerProcess) -> Iterator[Control]:
    control = Control(request.param, explicit_server)
    yield control
    control.close()


# ---- startup ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load_models", "expected_ready"),
    [(["alpha"], {"alpha"}), (["alpha", "gamma"], {"alpha", "gamma"}), (["*"], {"alpha", "beta", "gamma", "delta", "queued"})],
    ids=["one", "two", "all"],
)
def test_load_model_flag_loads_only_the_named_models(
    repository: Path, tmp_path: Path, load_models: list[str], expected_ready: set[str]
) -> None:
    args = ["--model-control-mode", "explicit"] + [f"--load-model={name}" for name in load_models]
    with ServerProcess([repository], args, log_path=tmp_path / "server.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 30)
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            ready = {name for name in ("alpha", "beta", "gamma", "delta", "queued") if model_ready(triton, name)}
            index = triton.get_model_repository_index(as_json=True)["models"]
    assert ready == expected_ready
    assert {m["name"] for m in index if m.get("reason") == "not loaded"} == {"alpha", "beta", "gamma", "delta", "queued"} - expected_ready


# ---- load / reload / unload -----------------------------------------------------------------------------


def test_load_reload_with_config_and_unload(control: Control, client: grpcclient.InferenceServerClient) -> None:
    control.load("beta")
    assert infer_value(client, "beta") == ("2", 22.0)  # latest 1 of versions 1 and 2
    assert control.max_batch_size("beta") == 8
    assert ("beta", "1") not in control.index()

    control.load("beta", config=json.dumps({"max_batch_size": 2, "version_policy": {"all": {}}}))
    assert control.max_batch_size("beta") == 2
    assert {k: v[0] for k, v in control.index().items() if k[0] == "beta"} == {("beta", "1"): "READY", ("beta", "2"): "READY"}
    assert infer_value(client, "beta", "1") == ("1", 2.0)

    control.load("beta")  # config.pbtxt again
    assert control.max_batch_size("beta") == 8
    assert ("beta", "1") not in control.index()

    control.unload("beta")
    assert not model_ready(client, "beta")
    assert control.index()[("beta", "2")] == ("UNAVAILABLE", "unloaded")
    assert infer_error(client, "beta") == "NOT_FOUND: Request for unknown model: 'beta' has no available versions"
    assert infer_value(client, "alpha") == ("1", 1.0)


def test_load_from_request_files_writes_nothing_into_the_repository(
    control: Control, client: grpcclient.InferenceServerClient, repository: Path, server_tmp: Path
) -> None:
    name = f"uploaded_{control.protocol}"
    before = tree(repository)
    config = json.dumps({"max_batch_size": 8})
    control.load(name, config=config, files={"file:1/model.onnx": add_constant_bytes(7.0)})
    assert infer_value(client, name) == ("1", 7.0)
    control.load(name, config=config, files={"file:1/model.onnx": add_constant_bytes(70.0)})
    assert infer_value(client, name) == ("1", 70.0)
    assert tree(repository) == before
    assert not (repository / name).exists()
    [private] = [p for p in server_tmp.rglob("model.onnx") if name in str(p)]  # in the server's private area
    assert private.read_bytes() == add_constant_bytes(70.0)

    control.unload(name)
    assert infer_error(client, name).startswith("NOT_FOUND")
    assert [p for p in server_tmp.rglob("model.onnx") if name in str(p)] == []  # and gone after the unload


def test_unload_drains_queued_requests(explicit_server: ServerProcess, client: grpcclient.InferenceServerClient) -> None:
    draining = "model 'queued' version 1: draining 9 queued and 1 executing request(s)"

    def attempt(rows: int) -> bool:
        client.load_model("queued")
        drains_before = explicit_server.log().count(draining)
        done: queue.Queue[tuple[int, object]] = queue.Queue()
        with Blocker(explicit_server, "queued", rows) as blocker:
            for row in range(9):
                client.async_infer(
                    "queued", echo_input(np.array([[float(row)]])), lambda result, error, row=row: done.put((row, error or result))
                )
            blocker.wait_queued(9)
            client.unload_model("queued")  # returns once drained
        outcomes = dict(done.get(timeout=5) for _ in range(9))
        assert {row: float(outcome.as_numpy("y")[0, 0]) for row, outcome in outcomes.items()} == {row: float(row) for row in range(9)}
        assert infer_error(client, "queued") == "NOT_FOUND: Request for unknown model: 'queued' has no available versions"
        assert not model_ready(client, "queued")
        # The server's own account of what the unload found: only then was there something to drain.
        return explicit_server.log().count(draining) > drains_before

    until_premise_holds(attempt, rows_lasting(1.0), "nine requests queued behind the blocker when the unload began")


# ---- errors ------------------------------------------------------------------------------------------------

GARBAGE = {"file:1/model.onnx": b"\x08\x07 definitely not a protobuf of an ONNX graph"}
ERROR_CASES = [
    # (id, operation, name, kwargs, status, message fragment, over HTTP too)
    ("missing", "load", "no_such_model", {}, "NOT_FOUND", "failed to load 'no_such_model', failed to poll from model repository", True),
    ("unload_missing", "unload", "no_such_model", {}, "NOT_FOUND", "failed to unload 'no_such_model': model not found", True),
    (
        "corrupt_file",
        "load",
        "corrupt",
        {"config": "{}", "files": GARBAGE},
        "INVALID_ARGUMENT",
        "load failed for model 'corrupt': version 1",
        True,
    ),
    ("files_without_config", "load", "alpha", {"files": GARBAGE}, "INVALID_ARGUMENT", "Load parameter 'config' must be specified", True),
    ("config_not_json", "load", "alpha", {"config": "{max_batch_size: 8"}, "INVALID_ARGUMENT", "Invalid config override: ", True),
    ("config_bad_type", "load", "alpha", {"config": '{"max_batch_size": "many"}'}, "INVALID_ARGUMENT", "Invalid config override: ", True),
    ("config_unknown_field", "load", "alpha", {"config": '{"batch": 8}'}, "INVALID_ARGUMENT", "Invalid config override: ", True),
    ("name_parent", "load", "../alpha", {}, "INVALID_ARGUMENT", "invalid model name '../alpha'", False),
    ("name_dotdot", "load", "..", {}, "INVALID_ARGUMENT", "invalid model name '..'", False),
    ("name_nested", "load", "a/b", {}, "INVALID_ARGUMENT", "invalid model name 'a/b'", False),
    ("name_backslash", "load", "a\\..\\b", {}, "INVALID_ARGUMENT", "invalid model name", False),
    ("name_nul", "load", "alpha\x00x", {}, "INVALID_ARGUMENT", "invalid model name", False),
    ("unload_name_parent", "unload", "../alpha", {}, "INVALID_ARGUMENT", "invalid model name '../alpha'", False),
    ("name_newline", "load", "alpha\nmodel 'beta': READY", {}, "INVALID_ARGUMENT", "control or formatting characters", False),
    ("name_rtl_override", "load", "abc\u202egpj", {}, "INVALID_ARGUMENT", "control or formatting characters", False),
    ("name_blank", "load", "   ", {}, "INVALID_ARGUMENT", "must not be empty or blank", False),
    ("name_too_long", "load", "m" * 300, {"config": "{}", "files": GARBAGE}, "INVALID_ARGUMENT", "at most 255 bytes", False),
    ("name_traversal_files", "load", "../evil", {"config": "{}", "files": GARBAGE}, "INVALID_ARGUMENT", "invalid model name", False),
]
# Each key next to a valid model file: only the key can be what fails.
TRAVERSAL_KEYS = {
    "key_parent": "file:1/../../evil",
    "key_no_version_parent": "file:../evil",
    "key_absolute": "file:/tmp/evil",
    "key_dot": "file:1/./evil",
    "key_empty_part": "file:1//evil",
    "key_no_version": "file:evil",
    "key_version_zero": "file:0/evil",
    "key_backslash": "file:1/a\\..\\..\\evil",
}
ERROR_CASES += [
    (
        case,
        "load",
        "traversal",
        {"config": "{}", "files": {"file:1/model.onnx": add_constant_bytes(1.0), key: b"evil"}},
        "INVALID_ARGUMENT",
        f"'{key}'",
        True,
    )
    for case, key in TRAVERSAL_KEYS.items()
]
ERROR_CASES.append(
    (
        "key_file_and_directory",
        "load",
        "conflict",
        {"config": "{}", "files": {"file:1/model.onnx": add_constant_bytes(1.0), "file:1/model.onnx/evil": b"evil"}},
        "INVALID_ARGUMENT",
        "cannot write the files of load request for 'conflict'",
        True,
    )
)


@pytest.mark.parametrize(
    ("protocol", "operation", "name", "kwargs", "status", "message"),
    [
        pytest.param(protocol, op, name, kwargs, status, message, id=f"{protocol}-{case}")
        for case, op, name, kwargs, status, message, over_http in ERROR_CASES
        for protocol in PROTOCOLS
        if protocol == "grpc" or over_http
    ],
)
def test_bad_requests_fail_clearly_and_affect_nothing_else(
    explicit_server: ServerProcess,
    client: grpcclient.InferenceServerClient,
    repository: Path,
    server_tmp: Path,
    protocol: str,
    operation: str,
    name: str,
    kwargs: dict[str, object],
    status: str,
    message: str,
) -> None:
    before, index_before = tree(repository), control_index(client)
    control = Control(protocol, explicit_server)
    try:
        got_status, got_message = control.error(operation, name, **kwargs)
    finally:
        control.close()
    assert got_status == status
    assert message in got_message
    assert infer_value(client, "alpha") == ("1", 1.0)
    assert model_ready(client, "alpha")
    assert tree(repository) == before
    for root in (repository.parent, server_tmp):
        assert list(root.rglob("*evil*")) == []
    assert not Path("/tmp/evil").exists()
    index = control_index(client)
    if name == "corrupt":  # the failed model is listed with its reason
        state, reason = index.pop(("corrupt", "1"))
        assert state == "UNAVAILABLE" and "onnx runtime error" in reason
        client.unload_model("corrupt")  # a failed model keeps a strict server unready: clean up
        index_before.pop(("corrupt", "1"), None)
    assert index == index_before
    assert client.is_server_ready()


def control_index(client: grpcclient.InferenceServerClient) -> dict[tuple[str, str], tuple[str, str]]:
    models = client.get_model_repository_index(as_json=True).get("models", [])
    return {(m["name"], m.get("version", "")): (m.get("state", ""), m.get("reason", "")) for m in models}


@pytest.mark.parametrize("operation", ["load", "unload"])
@pytest.mark.parametrize(
    ("encoded", "name"),
    [("..%2Falpha", "../alpha"), ("%2E%2E%2Falpha", "../alpha"), ("a%2Fb", "a/b"), ("%2E%2E", ".."), ("..%5Calpha", "..\\alpha")],
    ids=["parent", "parent_dots_encoded", "nested", "dotdot", "backslash"],
)
def test_http_rejects_encoded_traversal_names(
    explicit_server: ServerProcess, repository: Path, operation: str, encoded: str, name: str
) -> None:
    """What tritonclient cannot send (it leaves '/' unencoded) a raw HTTP client can."""
    before = tree(repository)
    url = f"http://{explicit_server.http_url}/v2/repository/models/{encoded}/{operation}"
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"].startswith(f"invalid model name '{name}'")
    assert tree(repository) == before


# ---- control refused outside explicit mode -------------------------------------------------------------------

REFUSALS = {
    "poll": "explicit model load / unload is not allowed if polling is enabled",
    "none": "explicit model load / unload is not allowed if polling is enabled (model control mode is 'none'",
}


@pytest.fixture(scope="module", params=sorted(REFUSALS))
def other_mode_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp(f"{request.param}_repo")
    write_model(repository, "alpha", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    args = ["--model-control-mode", request.param, "--repository-poll-secs", "5"]
    log = tmp_path_factory.mktemp("logs") / f"{request.param}.log"
    with ServerProcess([repository], args, log_path=log) as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 30)
        yield server


@pytest.mark.parametrize("operation", ["load", "unload"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_and_unload_are_unavailable_outside_explicit_mode(other_mode_server: ServerProcess, protocol: str, operation: str) -> None:
    mode = other_mode_server.extra_args[1]
    control = Control(protocol, other_mode_server)
    try:
        status, message = control.error(operation, "alpha")
    finally:
        control.close()
    assert status == "UNAVAILABLE"
    assert message.startswith(REFUSALS[mode])
    with grpcclient.InferenceServerClient(other_mode_server.grpc_url) as triton:
        assert infer_value(triton, "alpha") == ("1", 1.0)


# ---- under load and concurrency ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_reload_under_load_loses_no_request(explicit_server: ServerProcess, client: grpcclient.InferenceServerClient) -> None:
    """Plain reloads, a config override, new weights from request files, then the repository's again."""
    client.load_model("gamma")
    steps: list[tuple[dict[str, object], float]] = [
        ({}, 3.0),
        ({}, 3.0),
        ({"config": json.dumps({"max_batch_size": 4})}, 3.0),
        ({"config": json.dumps({"max_batch_size": 8}), "files": {"file:1/model.onnx": add_constant_bytes(30.0)}}, 30.0),
        ({}, 3.0),
    ]
    with LoadClient(explicit_server.grpc_url, "gamma", concurrency=32, max_secs=60) as load:
        load.wait_for(lambda o: o.ok)
        marks: list[tuple[float, float, float]] = []  # (load called, load returned, constant)
        for kwargs, constant in steps:
            called = time.monotonic()
            client.load_model("gamma", **kwargs)
            marks.append((called, time.monotonic(), constant))
            load.wait_for(lambda o: o.ok, since=marks[-1][1])
        outcomes = load.stop()
    assert failures(outcomes) == []
    next_calls = [called for called, _, _ in marks[1:]] + [float("inf")]
    for (_, returned, constant), next_called in zip(marks, next_calls):  # sent after a load returned: its weights
        assert {o.value for o in outcomes if returned < o.start and o.end < next_called} == {constant}
    assert {o.value for o in outcomes} == {3.0, 30.0}
    client.unload_model("gamma")


def test_concurrent_load_and_unload_of_one_model_are_serialized(
    explicit_server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    operations = ["load"] * 8 + ["unload"] * 8
    random.Random(4).shuffle(operations)
    errors: list[str] = []

    def call(operation: str) -> None:
        with grpcclient.InferenceServerClient(explicit_server.grpc_url) as own:
            try:
                own.load_model("delta") if operation == "load" else own.unload_model("delta")
            except InferenceServerException as exc:
                errors.append(f"{operation}: {exc}")

    threads = [threading.Thread(target=call, args=(operation,)) for operation in operations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    state = control_index(client)[("delta", "1")]
    if state[0] == "READY":
        assert model_ready(client, "delta") and infer_value(client, "delta") == ("1", 4.0)
    else:
        assert state == ("UNAVAILABLE", "unloaded")
        assert infer_error(client, "delta") == "NOT_FOUND: Request for unknown model: 'delta' has no available versions"
    client.load_model("delta")
    assert infer_value(client, "delta") == ("1", 4.0)
    client.unload_model("delta")
    assert control_index(client)[("delta", "1")] == ("UNAVAILABLE", "unloaded")
    assert "Traceback" not in explicit_server.log()
