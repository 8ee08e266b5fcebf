"""The response cache on real servers, through tritonclient gRPC and HTTP and perf_analyzer.

A repeated request is a hit (ModelStatistics and /metrics say so, and it is neither an inference
nor an execution); identical requests that miss at the same time run once; the LRU evicts at
the byte budget and an answer larger than the budget is never stored; unloading or replacing a
version drops its entries. Figures are deltas of the server's own counters, so tests that share
a server do not depend on each other's order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from loadtest import perf_analyzer
from scripts import onnx_models
from scripts.harness import Metrics, ServerProcess, wait_until
from tests.integration.slow_work import EXECUTING, ONE_INSTANCE, PENDING, echo_input, rows_lasting, until_premise_holds
from tests.integration.test_perf_analyzer import CONTRACT_ARGS
from tests.repository_builder import write_model

CACHED = "response_cache { enable: true }"
SLOW_CONFIG = f"max_batch_size: 4096\n{ONE_INSTANCE}\n{CACHED}"


def start(repository: Path, args: list[str], log: Path) -> ServerProcess:
    process = ServerProcess([repository], args, log_path=log)
    process.start(wait_for="ready")
    return process


@pytest.fixture(scope="module")
def cached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("cache-repo")
    # Only the cache switch in config.pbtxt: the rest is auto-completed from the graph.
    write_model(repository, "cached", onnx_models.identity("FP32", ["batch", "n"]), CACHED)
    write_model(repository, "uncached", onnx_models.identity("FP32", ["batch", "n"]))
    write_model(repository, "cached_text", onnx_models.identity("BYTES", ["batch", "n"]), CACHED)
    write_model(repository, "cached_classifier", onnx_models.classifier(), CACHED)
    write_model(repository, "slow_cached", onnx_models.slow_echo(), SLOW_CONFIG)
    process = start(repository, ["--cache-config", "local,size=16777216"], tmp_path_factory.mktemp("logs") / "cache.log")
    with process:
        yield process


def statistics(server: ServerProcess, model: str) -> dict[str, int]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(model).model_stats[0]
    infer = stats.inference_stats
    return {
        "success": infer.success.count,
        "hits": infer.cache_hit.count,
        "misses": infer.cache_miss.count,
        "queue": infer.queue.count,
        "compute": infer.compute_infer.count,
        "inferences": stats.inference_count,
        "executions": stats.execution_count,
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def grpc_input(values: np.ndarray, name: str = "INPUT0", datatype: str = "FP32") -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput(name, list(values.shape), datatype)
    item.set_data_from_numpy(values)
    return [item]


def http_input(values: np.ndarray, binary: bool, name: str = "INPUT0") -> list[httpclient.InferInput]:
    item = httpclient.InferInput(name, list(values.shape), "FP32")
    item.set_data_from_numpy(values, binary_data=binary)
    return [item]


def unique_rows(seed: int, shape: tuple[int, ...] = (2, 6)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_a_repeated_grpc_request_is_a_hit_not_an_inference(cached_server: ServerProcess) -> None:
    values = unique_rows(1)
    before, metrics_before = statistics(cached_server, "cached"), cached_server.metrics()
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as client:
        first = client.infer("cached", grpc_input(values)).as_numpy("OUTPUT0")
        second = client.infer("cached", grpc_input(values)).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(first, values)
    np.testing.assert_array_equal(second, values)
    changed = delta(statistics(cached_server, "cached"), before)
    assert changed == {"success": 2, "hits": 1, "misses": 1, "queue": 2, "compute": 1, "inferences": 2, "executions": 1}
    metrics = cached_server.metrics()
    for name, grew in (
        ("nv_cache_num_hits_per_model", 1),
        ("nv_cache_num_misses_per_model", 1),
        ("nv_inference_request_success", 2),
        ("nv_inference_count", 2),  # the miss's two rows only
        ("nv_inference_exec_count", 1),
    ):
        assert metrics.model("cached", name) - metrics_before.model("cached", name) == grew, name
    assert metrics.model("cached", "nv_cache_hit_duration_per_model") >= metrics_before.model("cached", "nv_cache_hit_duration_per_model")


def test_a_repeated_http_request_is_a_hit_whatever_the_tensor_form_or_protocol(cached_server: ServerProcess) -> None:
    values = unique_rows(2)
    before = statistics(cached_server, "cached")
    client = httpclient.InferenceServerClient(cached_server.http_url)
    try:
        answers = [client.infer("cached", http_input(values, binary)).as_numpy("OUTPUT0") for binary in (False, True)]
    finally:
        client.close()
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as grpc_client:
        answers.append(grpc_client.infer("cached", grpc_input(values)).as_numpy("OUTPUT0"))
    for answer in answers:
        np.testing.assert_array_equal(answer, values)
    changed = delta(statistics(cached_server, "cached"), before)
    assert (changed["misses"], changed["hits"], changed["executions"]) == (1, 2, 1)


def test_http_statistics_show_the_same_cache_figures_as_grpc(cached_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(cached_server.http_url)
    try:
        over_http = client.get_inference_statistics("cached")["model_stats"][0]["inference_stats"]
    finally:
        client.close()
    over_grpc = statistics(cached_server, "cached")
    assert over_http["cache_hit"]["count"] == over_grpc["hits"] > 0
    assert over_http["cache_miss"]["count"] == over_grpc["misses"] > 0
    assert over_http["cache_hit"]["ns"] > 0


def test_a_model_without_the_config_switch_is_never_cached(cached_server: ServerProcess) -> None:
    values = unique_rows(3)
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as client:
        for _ in range(2):
            client.infer("uncached", grpc_input(values))
    stats = statistics(cached_server, "uncached")
    assert (stats["hits"], stats["misses"], stats["executions"]) == (0, 0, 2)
    assert (
        cached_server.metrics().samples.get(("nv_cache_num_hits_per_model", frozenset({("model", "uncached"), ("version", "1")}))) is None
    )


def test_differing_requests_do_not_share_an_answer(cached_server: ServerProcess) -> None:
    values = unique_rows(4)
    variants = [values, values + 1, values.reshape(3, 4), values[:1]]
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as client:
        for variant in variants:
            np.testing.assert_array_equal(client.infer("cached", grpc_input(variant)).as_numpy("OUTPUT0"), variant)
        for variant in variants:  # now every one of them is a hit, each with its own answer
            np.testing.assert_array_equal(client.infer("cached", grpc_input(variant)).as_numpy("OUTPUT0"), variant)


def test_text_outputs_and_classifications_are_answered_from_the_cache(cached_server: ServerProcess) -> None:
    text = np.array([["fünf", "a"], ["bb", ""]], dtype=np.object_)
    features = unique_rows(5, (2, 4))
    before_text, before_classes = statistics(cached_server, "cached_text"), statistics(cached_server, "cached_classifier")
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as client:
        texts = [client.infer("cached_text", grpc_input(text, datatype="BYTES")).as_numpy("OUTPUT0") for _ in range(2)]
        top2 = [grpcclient.InferRequestedOutput("probs", class_count=2)]
        classes = [client.infer("cached_classifier", grpc_input(features, "features"), outputs=top2).as_numpy("probs") for _ in range(2)]
        plain = client.infer("cached_classifier", grpc_input(features, "features")).as_numpy("probs")
    for answer in texts:
        assert [[element.decode() for element in row] for row in answer] == [["fünf", "a"], ["bb", ""]]
    assert classes[0].tolist() == classes[1].tolist() and classes[0].shape == (2, 2)
    assert plain.shape == (2, 5)  # the tensor itself is another key than its top 2
    assert delta(statistics(cached_server, "cached_text"), before_text)["hits"] == 1
    assert delta(statistics(cached_server, "cached_classifier"), before_classes)["hits"] == 1


def test_identical_requests_missing_at_the_same_time_run_once(cached_server: ServerProcess) -> None:
    """The first request runs; identical ones sent while it runs wait for it instead of running."""
    followers = 3
    attempt_number = iter(range(1000))

    def attempt(rows: int) -> bool:
        values = (np.arange(rows, dtype=np.float32).reshape(rows, 1) + 1000 * next(attempt_number)) % 997
        before = statistics(cached_server, "slow_cached")
        executions_before = cached_server.metrics().model("slow_cached", "nv_inference_exec_count")
        answers: list[np.ndarray | BaseException] = []

        def send() -> None:
            try:
                with grpcclient.InferenceServerClient(cached_server.grpc_url) as client:
                    answers.append(client.infer("slow_cached", echo_input(values), client_timeout=300).as_numpy("y"))
            except BaseException as exc:  # reported on the test's thread
                answers.append(exc)

        leader = threading.Thread(target=send)
        leader.start()
        wait_until(lambda: cached_server.metrics().model("slow_cached", EXECUTING) >= 1 or not leader.is_alive(), 60, "the leader running")
        waiting = [threading.Thread(target=send) for _ in range(followers)]
        for thread in waiting:
            thread.start()

        def all_waiting(metrics: Metrics) -> bool:
            return metrics.model("slow_cached", PENDING) >= followers

        wait_until(lambda: all_waiting(cached_server.metrics()) or not leader.is_alive(), 60, "the identical requests waiting")
        metrics = cached_server.metrics()
        # The premise: all of them arrived while the first still ran (no execution finished yet).
        held = all_waiting(metrics) and metrics.model("slow_cached", "nv_inference_exec_count") == executions_before
        for thread in (leader, *waiting):
            thread.join(300)
        if not held:
            return False
        assert len(answers) == followers + 1
        for answer in answers:
            assert isinstance(answer, np.ndarray), answer
            np.testing.assert_allclose(answer, values, rtol=1e-5)
        changed = delta(statistics(cached_server, "slow_cached"), before)
        assert (changed["executions"], changed["inferences"], changed["misses"], changed["hits"]) == (1, rows, 1, followers)
        return True

    until_premise_holds(attempt, rows_lasting(0.5), "identical requests arrived while the first ran")


def test_perf_analyzer_reports_cache_hits(cached_server: ServerProcess, perf_analyzer_env: dict[str, str]) -> None:
    args = [*CONTRACT_ARGS, "--concurrency-range", "2", "--shape", "INPUT0:16"]
    run = perf_analyzer.run("cached", cached_server.grpc_url, args, 90.0, perf_analyzer_env)
    failure = f"{run.describe()}\n--- server log ---\n{cached_server.log()[-4000:]}"
    assert run.returncode == 0, failure
    assert "Cache hit count" in run.output, failure
    assert all(point.throughput > 0 for point in run.points), failure


# ---- the byte budget ----------------------------------------------------------------------

# Entry = 512 bytes of overhead + its arrays: a [1, 1000] FP32 answer takes 4512 bytes, so two fit.
SMALL_BUDGET = 10_000


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("small-cache-repo")
    write_model(repository, "cached", onnx_models.identity("FP32", ["batch", "n"]), CACHED)
    process = start(repository, ["--cache-config", f"local,size={SMALL_BUDGET}"], tmp_path_factory.mktemp("logs") / "small.log")
    with process:
        yield process


def cache_gauges(server: ServerProcess) -> tuple[float, float, float]:
    metrics = server.metrics()
    return metrics.value("ortserve_cache_entries"), metrics.value("ortserve_cache_bytes"), metrics.value("ortserve_cache_evictions")


def test_the_least_recently_used_answer_is_evicted_at_the_byte_budget(small_server: ServerProcess) -> None:
    requests = {name: np.full((1, 1000), value, np.float32) for value, name in enumerate("ABC")}
    before = statistics(small_server, "cached")
    outcomes = []
    with grpcclient.InferenceServerClient(small_server.grpc_url) as client:
        for name in "ABCBAB":  # C evicts A; B is used again; A comes back and evicts C
            previous = statistics(small_server, "cached")["hits"]
            np.testing.assert_array_equal(client.infer("cached", grpc_input(requests[name])).as_numpy("OUTPUT0"), requests[name])
            outcomes.append("hit" if statistics(small_server, "cached")["hits"] > previous else "miss")
    assert outcomes == ["miss", "miss", "miss", "hit", "miss", "hit"]
    assert delta(statistics(small_server, "cached"), before)["executions"] == 4
    entries, used, evictions = cache_gauges(small_server)
    assert (entries, used, evictions) == (2, 2 * 4512, 2)
    assert small_server.metrics().value("ortserve_cache_capacity_bytes") == SMALL_BUDGET


def test_an_answer_larger_than_the_budget_is_never_stored(small_server: ServerProcess) -> None:
    values = np.ones((1, 3000), np.float32)  # 12,000 bytes
    gauges = cache_gauges(small_server)
    before = statistics(small_server, "cached")
    with grpcclient.InferenceServerClient(small_server.grpc_url) as client:
        for _ in range(2):
            np.testing.assert_array_equal(client.infer("cached", grpc_input(values)).as_numpy("OUTPUT0"), values)
    changed = delta(statistics(small_server, "cached"), before)
    assert (changed["misses"], changed["hits"], changed["executions"]) == (2, 0, 2)
    assert cache_gauges(small_server) == gauges  # nothing stored, nothing evicted for it


# ---- versions come and go -----------------------------------------------------------------


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("explicit-cache-repo")
    write_model(repository, "cached", onnx_models.identity("FP32", ["batch", "n"]), CACHED)
    args = ["--cache-config", "local,size=1048576", "--model-control-mode", "explicit", "--load-model", "cached"]
    process = start(repository, args, tmp_path_factory.mktemp("logs") / "explicit.log")
    with process:
        yield process


def test_unloading_a_version_drops_its_entries(explicit_server: ServerProcess) -> None:
    values = unique_rows(6)
    with grpcclient.InferenceServerClient(explicit_server.grpc_url) as client:
        client.infer("cached", grpc_input(values))
        assert cache_gauges(explicit_server)[0] >= 1
        client.unload_model("cached")
        assert cache_gauges(explicit_server)[:2] == (0, 0)
        client.load_model("cached")
        client.infer("cached", grpc_input(values))
    stats = statistics(explicit_server, "cached")
    assert (stats["misses"], stats["hits"]) == (1, 0)  # the reloaded version starts empty


def test_a_replaced_version_never_answers_for_its_successor(explicit_server: ServerProcess) -> None:
    values = unique_rows(7)
    with grpcclient.InferenceServerClient(explicit_server.grpc_url) as client:
        client.infer("cached", grpc_input(values))
        client.infer("cached", grpc_input(values))
        entries_before = cache_gauges(explicit_server)[0]
        # A changed config (a metric tag) replaces the version: same name and number, new load.
        config = {"response_cache": {"enable": True}, "metric_tags": {"generation": "2"}}
        client.load_model("cached", config=json.dumps(config))
        wait_until(lambda: cache_gauges(explicit_server)[0] < entries_before, 60, "the replaced version's entries dropped")
        np.testing.assert_array_equal(client.infer("cached", grpc_input(values)).as_numpy("OUTPUT0"), values)
    stats = statistics(explicit_server, "cached")
    assert (stats["misses"], stats["hits"]) == (1, 0)
