"""``--workers 2``: two frontend processes on shared ports, one engine, real clients.

What must hold whichever frontend a connection lands on: answers, streams, errors, health, one
set of statistics and metrics, repository control; and when processes stop or die: SIGTERM
answers every accepted request, a killed frontend is restarted while the other serves (the
engine withdraws its requests), a killed engine takes the frontends down without leaving a
client hanging. The kernel spreads connections over the frontends by a hash, so tests that need both
frontends use enough connections that all landing on one is a 2^-31 event.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtest import perf_analyzer
from loadtest.access_matrix import principal_entry, token
from loadtest.certificates import make_pki
from scripts import onnx_models
from scripts.harness import Metrics, ServerProcess, free_port, http_status, wait_until
from tests.integration.slow_work import EXECUTING, MAX_ROWS, ONE_INSTANCE, PENDING, echo_input, rows_lasting, until_premise_holds
from tests.repository_builder import SIMPLE_CONFIG, write_model

WORKERS = ["--workers", "2"]
CONNECTIONS = 32
SLOW_CONFIG = f"max_batch_size: {MAX_ROWS}\n{ONE_INSTANCE}"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers-repo")
    write_model(root, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    write_model(root, "mlp", onnx_models.mlp())
    write_model(root, "slow", onnx_models.slow_echo(), SLOW_CONFIG)
    return root


def start(repository: Path, log: Path, *extra: str) -> ServerProcess:
    server = ServerProcess([repository], [*WORKERS, *extra], log_path=log).start(wait_for="live")
    server.wait_until(f"http://{server.http_url}/v2/health/ready", 120)
    return server


@pytest.fixture(scope="module")
def workers_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start(repository, tmp_path_factory.mktemp("logs") / "workers.log") as server:
        yield server


@pytest.fixture
def own_server(repository: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that stop or kill its processes."""
    server = start(repository, tmp_path / "server.log")
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def frontend_pids(server: ServerProcess) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def simple_inputs(module: object, base: int) -> list[object]:
    a = np.arange(base, base + 16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]  # type: ignore[attr-defined]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def check_simple(result: object, base: int) -> None:
    a = np.arange(base, base + 16, dtype=np.int32).reshape(1, 16)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + 1)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)  # type: ignore[attr-defined]


def own_connection(url: str) -> grpcclient.InferenceServerClient:
    """A client on a TCP connection of its own: grpc otherwise shares one among the channels of a
    process that have the same target, and every call would reach the same frontend."""
    return grpcclient.InferenceServerClient(url, channel_args=[("grpc.use_local_subchannel_pool", 1)])


def successes(server: ServerProcess, model: str = "simple") -> float:
    return server.metrics().model(model, "nv_inference_request_success")


# ---- serving ------------------------------------------------------------------------------------


def test_connections_spread_over_both_frontends_and_every_count_is_one_truth(workers_server: ServerProcess) -> None:
    before = successes(workers_server)
    for index in range(CONNECTIONS):
        with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
            check_simple(client.infer("simple", simple_inputs(grpcclient, index)), index)
        client_http = httpclient.InferenceServerClient(workers_server.http_url)
        check_simple(client_http.infer("simple", simple_inputs(httpclient, index)), index)
        client_http.close()
    metrics = workers_server.metrics()
    per_frontend = [metrics.value("ortserve_frontend_requests", frontend=str(index)) for index in (0, 1)]
    assert all(count > 0 for count in per_frontend), per_frontend
    assert metrics.value("ortserve_frontends_connected") == 2
    assert metrics.model("simple", "nv_inference_request_success") - before == 2 * CONNECTIONS
    with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
        stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) == metrics.model("simple", "nv_inference_request_success")


def test_a_stream_is_answered_in_full(workers_server: ServerProcess) -> None:
    results: list[tuple[object, object]] = []
    done = threading.Event()

    def on_response(result: object, error: object) -> None:
        results.append((result, error))
        if len(results) == 20:
            done.set()

    with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
        client.start_stream(callback=on_response)
        for index in range(20):
            client.async_stream_infer("simple", simple_inputs(grpcclient, index), request_id=str(index))
        assert done.wait(60), f"{len(results)} of 20 streamed responses"
        client.stop_stream()
    for result, error in results:
        assert error is None
        check_simple(result, int(result.get_response().id))  # type: ignore[attr-defined]


def test_errors_keep_their_status_and_words(workers_server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("nope", simple_inputs(grpcclient, 0))
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        bad = grpcclient.InferInput("INPUT9", [1, 16], "INT32")
        bad.set_data_from_numpy(np.zeros((1, 16), np.int32))
        with pytest.raises(InferenceServerException) as invalid:
            client.infer("simple", [*simple_inputs(grpcclient, 0), bad])
        assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "unexpected inference input 'INPUT9' for model 'simple'" in invalid.value.message()
        assert client.get_model_config("simple").config.max_batch_size == 8
        assert [t.name for t in client.get_model_metadata("mlp").inputs] == ["input"]


def test_health_over_both_protocols(workers_server: ServerProcess) -> None:
    assert http_status(f"http://{workers_server.http_url}/v2/health/live") == 200
    assert http_status(f"http://{workers_server.http_url}/v2/health/ready") == 200
    assert http_status(f"http://{workers_server.http_url}/v2/models/simple/ready") == 200
    with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
    with grpc.insecure_channel(workers_server.grpc_url) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("extra", [["--concurrency-range", "4"], ["--streaming", "--concurrency-range", "4"]], ids=["unary", "streaming"])
def test_perf_analyzer_runs_against_the_frontends(
    workers_server: ServerProcess, perf_analyzer_env: dict[str, str], extra: list[str]
) -> None:
    args = ["--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000", *extra]
    run = perf_analyzer.run("mlp", workers_server.grpc_url, args, 120.0, perf_analyzer_env)
    assert run.returncode == 0 and run.has_server_stats, run.describe()
    assert run.points and run.points[0].throughput > 0, run.describe()


def test_explicit_load_and_unload_land_in_the_one_engine(repository: Path, tmp_path: Path) -> None:
    with start(repository, tmp_path / "explicit.log", "--model-control-mode=explicit") as server:
        http = httpclient.InferenceServerClient(server.http_url)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            assert not client.is_model_ready("simple")
            http.load_model("simple")
            check_simple(client.infer("simple", simple_inputs(grpcclient, 3)), 3)
            assert {(m["name"], m.get("state")) for m in http.get_model_repository_index()} >= {("simple", "READY")}
            client.unload_model("simple")
            assert not http.is_model_ready("simple")
            with pytest.raises(InferenceServerException, match="not available"):
                client.get_inference_statistics("simple")
        http.close()


# ---- stopping and dying ----------------------------------------------------------------------------


def queued_slow_requests(server: ServerProcess, count: int, rows: int, waiting: int = 0) -> tuple[list[threading.Thread], list[object]]:
    """``count`` slow requests, each on its own connection and thread, sent and seen in the
    engine (until ``waiting`` requests, default ``count``, are queued or executing); their
    outcomes by index ("ok", or the client's exception)."""
    outcomes: list[object] = [None] * count

    def send(index: int) -> None:
        values = np.full((rows, 1), index, np.float32)
        try:
            with own_connection(server.grpc_url) as client:
                result = client.infer("slow", echo_input(values), client_timeout=300)
                outcomes[index] = "ok" if np.allclose(result.as_numpy("y"), values) else "wrong"
        except InferenceServerException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: server.metrics().model("slow", PENDING) + server.metrics().model("slow", EXECUTING) >= count, 60, "requests in the engine"
    )
    return threads, outcomes


def test_sigterm_answers_every_accepted_request(repository: Path, tmp_path: Path) -> None:
    def attempt(rows: int) -> bool:
        with start(repository, tmp_path / f"sigterm-{rows}.log") as server:
            threads, outcomes = queued_slow_requests(server, 8, rows)
            metrics = server.metrics()
            if metrics.model("slow", PENDING) + metrics.model("slow", EXECUTING) < 8:
                return False  # some finished before the signal: not a drain
            assert server.terminate() == 0, server.log()[-3000:]
            for thread in threads:
                thread.join(60)
            assert outcomes == ["ok"] * 8, outcomes
            assert "ortserve stopped" in server.log()
            return True

    until_premise_holds(attempt, rows_lasting(0.5), "8 requests still in the engine when SIGTERM arrived")


def test_a_killed_frontend_is_restarted_and_its_requests_withdrawn(repository: Path, tmp_path: Path) -> None:
    def attempt(rows: int) -> bool:
        with start(repository, tmp_path / f"kill-frontend-{rows}.log") as server:
            old = frontend_pids(server)
            executions = server.metrics().model("slow", "nv_inference_exec_count")
            blocker, _ = queued_slow_requests(server, 1, rows)
            threads, outcomes = queued_slow_requests(server, CONNECTIONS, 1, waiting=CONNECTIONS + 1)
            os.kill(old[0], signal.SIGKILL)
            if server.metrics().model("slow", "nv_inference_exec_count") != executions:
                return False  # the blocker finished first: the queue may have drained before the kill
            wait_until(lambda: server.metrics().value("ortserve_frontend_restarts") == 1, 60, "the frontend restarted")
            wait_until(lambda: server.metrics().value("ortserve_frontends_connected") == 2, 60, "both frontends connected")
            canceled = lambda: server.metrics().model("slow", "nv_inference_request_failure", reason="CANCELED")  # noqa: E731
            wait_until(lambda: canceled() >= 1, 60, "the dead frontend's requests withdrawn")
            for thread in [*blocker, *threads]:
                thread.join(120)
            # Its clients' calls failed or were retried by gRPC on a new connection (the other
            # frontend), never left hanging; the other frontend's were answered.
            assert all(outcome == "ok" or isinstance(outcome, InferenceServerException) for outcome in outcomes), outcomes
            new = frontend_pids(server)
            assert len(new) == 2 and old[1] in new and old[0] not in new
            with own_connection(server.grpc_url) as client:
                check_simple(client.infer("simple", simple_inputs(grpcclient, 5)), 5)
                assert client.is_server_ready()
            assert "exited with status -9" in server.log()
            return True

    until_premise_holds(attempt, rows_lasting(1.0), "the slow request still ran when the frontend was killed")


def test_a_killed_engine_takes_the_frontends_down_and_no_client_hangs(own_server: ServerProcess) -> None:
    pids = frontend_pids(own_server)
    threads, outcomes = queued_slow_requests(own_server, 4, rows_lasting(2.0))
    started = time.monotonic()
    assert own_server.process is not None
    own_server.process.kill()
    own_server.process.wait()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    # Four requests of two seconds each on one instance: the last ones were still in the engine.
    failed = [outcome for outcome in outcomes if isinstance(outcome, InferenceServerException)]
    assert failed and all(outcome == "ok" for outcome in outcomes if outcome not in failed), outcomes
    wait_until(lambda: not any(alive(pid) for pid in pids), 60, "the frontends exited")
    assert time.monotonic() - started < 60
    assert http_status(f"http://{own_server.http_url}/v2/health/live", timeout=2) is None


# ---- security in every frontend -------------------------------------------------------------------


def test_tls_and_tokens_hold_in_every_frontend(repository: Path, tmp_path: Path) -> None:
    """Each frontend process enforces mTLS and bearer tokens itself: over many connections (so
    both frontends answer), a client with a certificate and a token is served, one without the
    token is refused with UNAUTHENTICATED / 401 (Triton's wording), one without a certificate at
    the handshake."""
    pki = make_pki(tmp_path / "pki")
    auth_path = tmp_path / "auth.json"
    auth_path.write_text(json.dumps({"principals": [principal_entry("client", {"*": "*"})]}))
    health_port = free_port()
    flags = [*pki.tls_flags("grpc"), *pki.tls_flags("http"), f"--auth-config={auth_path}", f"--http-health-port={health_port}"]
    server = ServerProcess([repository], [*WORKERS, *flags], log_path=tmp_path / "server.log").start(wait_for="")
    with server:
        server.wait_until(f"http://127.0.0.1:{health_port}/v2/health/ready", 120)
        credentials = {"root_certificates": str(pki.ca), "private_key": str(pki.client_key), "certificate_chain": str(pki.client_cert)}
        url = f"localhost:{server.grpc_port}"
        authorised = {"authorization": f"Bearer {token('client')}"}  # copied per call: tritonclient's HTTP infer adds to the dict
        for index in range(CONNECTIONS // 2):
            channel_args = [("grpc.use_local_subchannel_pool", 1)]
            with grpcclient.InferenceServerClient(url, ssl=True, channel_args=channel_args, **credentials) as client:
                check_simple(client.infer("simple", simple_inputs(grpcclient, index), headers=dict(authorised)), index)
                with pytest.raises(InferenceServerException) as refused:
                    client.infer("simple", simple_inputs(grpcclient, index))
                assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
            options = {"ca_certs": str(pki.ca), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}
            http = httpclient.InferenceServerClient(f"localhost:{server.http_port}", ssl=True, ssl_options=options)
            try:
                check_simple(http.infer("simple", simple_inputs(httpclient, index), headers=dict(authorised)), index)
                with pytest.raises(InferenceServerException) as refused_http:
                    http.infer("simple", simple_inputs(httpclient, index))
                assert refused_http.value.status() == "401"
            finally:
                http.close()
        with grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(pki.ca)) as anonymous:
            with pytest.raises(InferenceServerException) as handshake:
                anonymous.is_server_live()
            assert handshake.value.status() == "StatusCode.UNAVAILABLE"

        def scrape() -> Metrics:
            request = urllib.request.Request(server.metrics_url, headers=authorised)
            return Metrics(urllib.request.urlopen(request, timeout=10).read().decode())

        assert all(scrape().value("ortserve_frontend_requests", frontend=str(index)) > 0 for index in (0, 1))

        def refusals() -> float:
            return sum(value for (name, _), value in scrape().samples.items() if name == "ortserve_auth_failures")

        # Each frontend counts the refusals it made and reports them; the engine's /metrics adds them up.
        wait_until(lambda: refusals() == CONNECTIONS, 30, f"{CONNECTIONS} refusals counted on /metrics")


# ---- shared memory and the response cache across frontends ------------------------------------


def test_shared_memory_and_cache_are_the_engine_s(repository: Path, tmp_path: Path) -> None:
    """A region registered through one connection serves requests on every other (the engine
    holds the registry and maps the regions), outputs land in a region, and the response cache
    answers a repeat from any frontend: one registry and one cache, whichever frontend a call
    lands on."""
    cached = tmp_path / "cached-repo"
    config = SIMPLE_CONFIG.replace('name: "simple"', 'name: "simple_cached"') + "\nresponse_cache { enable: true }\n"
    write_model(cached, "simple_cached", onnx_models.simple(), config)
    server = start(cached, tmp_path / "server.log", "--allow-client-shm", "--cache-config", "local,size=1048576")
    key = f"/ortserve-workers-{os.getpid()}"
    handle = shm.create_shared_memory_region("io", key, 4 * 16 * 4)
    try:
        with server:
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            b = np.full((1, 16), 3, dtype=np.int32)
            shm.set_shared_memory_region(handle, [a, b])
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                client.register_system_shared_memory("io", key, 4 * 16 * 4)
            for _ in range(CONNECTIONS):
                with own_connection(server.grpc_url) as client:
                    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
                    inputs[0].set_shared_memory("io", 64)
                    inputs[1].set_shared_memory("io", 64, offset=64)
                    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
                    outputs[0].set_shared_memory("io", 64, offset=128)
                    outputs[1].set_shared_memory("io", 64, offset=192)
                    client.infer("simple_cached", inputs, outputs=outputs)
                    out0 = shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=128)
                    out1 = shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=192)
                    np.testing.assert_array_equal(out0, a + b)
                    np.testing.assert_array_equal(out1, a - b)
                    shm.set_shared_memory_region(handle, [np.zeros((1, 32), np.int32)], offset=128)  # the next answer must be written again
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                stats = client.get_inference_statistics("simple_cached", as_json=True)["model_stats"][0]
                assert len(client.get_system_shared_memory_status(as_json=True)["regions"]) == 1
                client.unregister_system_shared_memory("io")
            # The first request computed; every other, on whichever frontend, was a hit.
            assert int(stats["inference_stats"]["cache_miss"]["count"]) == 1
            assert int(stats["inference_stats"]["cache_hit"]["count"]) == CONNECTIONS - 1
            assert int(stats["execution_count"]) == 1
            metrics = server.metrics()
            assert all(metrics.value("ortserve_frontend_requests", frontend=str(index)) > 0 for index in (0, 1))
    finally:
        shm.destroy_shared_memory_region(handle)


# ---- sequences across frontends ----------------------------------------------------------------


def test_a_sequence_keeps_its_state_whichever_frontend_each_step_reaches(repository: Path, tmp_path: Path) -> None:
    """The engine holds a sequence's slot and implicit state: each step sent on a connection of
    its own (gRPC and HTTP in turn, so steps land on both frontends) continues the same state."""
    from tests.integration.test_sequences import accumulator_config, flags, reference, sequence_inputs, step_input

    stateful = tmp_path / "stateful-repo"
    write_model(stateful, "acc", onnx_models.accumulator(), accumulator_config("oldest { max_candidate_sequences: 8 }"))
    server = start(stateful, tmp_path / "server.log")
    with server:
        inputs = sequence_inputs(11, CONNECTIONS)
        for step, (value, expected) in enumerate(zip(inputs, reference(inputs))):
            if step % 2 == 0:
                with own_connection(server.grpc_url) as client:
                    result = client.infer("acc", [step_input(grpcclient, value)], sequence_id=4242, **flags(step, len(inputs)))
            else:
                with httpclient.InferenceServerClient(server.http_url) as http:
                    result = http.infer("acc", [step_input(httpclient, value)], sequence_id=4242, **flags(step, len(inputs)))
            np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], expected, rtol=1e-5)
        metrics = server.metrics()
        assert all(metrics.value("ortserve_frontend_requests", frontend=str(index)) > 0 for index in (0, 1))
