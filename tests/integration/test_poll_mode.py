"""Poll mode end to end: repository changes under traffic, with real files and real clients.

Models are ``add_constant`` graphs (OUTPUT0 = INPUT0 + c), so every response says which weights
answered it. The main test keeps 32 clients busy for its whole length and checks every response
against a timeline of what the test did to the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, wait_until
from scripts.load_client import LoadClient, Outcome, failures

Index = dict[tuple[str, str], tuple[str, str]]
POLL_FINISHED = re.compile(r"repository poll \d+ finished")


# ---- realistic repository edits -------------------------------------------------------------


def add_constant(constant: float) -> onnx.ModelProto:
    return onnx_models.add_constant("FP32", ["batch", 4], constant)


def replace_file(path: Path, content: bytes | str) -> None:
    """Write next to ``path`` under a temporary name, then rename over it (atomic for readers)."""
    temporary = path.with_name(f".{path.name}.incoming")
    data = content.encode() if isinstance(content, str) else content
    temporary.write_bytes(data)
    os.replace(temporary, path)


def add_version(model_dir: Path, version: int, content: onnx.ModelProto | bytes) -> None:
    """Build the version directory under a name the server ignores, then rename it into place."""
    staging = model_dir / f"incoming-{version}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    os.rename(staging, model_dir / str(version))


def add_model(repository: Path, name: str, constant: float, config: str | None = None) -> Path:
    """A whole model directory, staged as a hidden directory and renamed into the repository."""
    staging = repository / f".incoming-{name}"
    add_version(staging, 1, add_constant(constant))
    if config is not None:
        (staging / "config.pbtxt").write_text(config)
    os.rename(staging, repository / name)
    return repository / name


def remove_dir(path: Path) -> None:
    """Rename away first (one atomic step for the poller), then delete."""
    hidden = path.with_name(f".removed-{path.name}")
    os.rename(path, hidden)
    shutil.rmtree(hidden)


# ---- observing the server ---------------------------------------------------------------------


def repository_index(client: grpcclient.InferenceServerClient) -> Index:
    models = client.get_model_repository_index(as_json=True).get("models", [])
    return {(m["name"], m.get("version", "")): (m.get("state", ""), m.get("reason", "")) for m in models}


def polls_finished(server: ServerProcess) -> int:
    """Completed poll cycles, from the server's DEBUG line (the server runs with --log-verbose 1)."""
    return len(POLL_FINISHED.findall(server.log()))


def wait_for_full_polls(server: ServerProcess, cycles: int = 1) -> None:
    """Until ``cycles`` poll cycles have both started and finished from now on.

    A cycle already running now may have scanned before the test's last change, so it does
    not count: ``cycles + 1`` more must finish.
    """
    target = polls_finished(server) + cycles + 1
    wait_until(lambda: polls_finished(server) >= target, 30, f"{cycles} full repository poll(s)")


def infer_value(client: grpcclient.InferenceServerClient, model: str) -> tuple[str, float]:
    """(model_version, constant) of one request on an add_constant model."""
    data = np.full((1, 4), 3.0, np.float32)
    item = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    item.set_data_from_numpy(data)
    result = client.infer(model, [item])
    return result.get_response().model_version, float(np.mean(result.as_numpy("OUTPUT0") - data))


def infer_error(client: grpcclient.InferenceServerClient, model: str) -> str:
    try:
        infer_value(client, model)
    except InferenceServerException as exc:
        return f"{exc.status()}: {exc.message()}"
    return ""


class Timeline:
    """When each (version, constant) pair may answer an unversioned request.

    A pair may answer from the moment the test wrote its files until the test saw its successor
    answer (the swap happened before that). A request that started after that must not get it.
    """

    def __init__(self) -> None:
        self.windows: dict[tuple[str, float], list[list[float]]] = {}

    def appears(self, version: str, constant: float, at: float) -> None:
        self.windows.setdefault((version, constant), []).append([at, float("inf")])

    def gone(self, version: str, constant: float, at: float) -> None:
        self.windows[(version, constant)][-1][1] = at

    def allows(self, outcome: Outcome) -> bool:
        spans = self.windows.get((outcome.version, outcome.value), [])
        return any(start <= outcome.end and outcome.start <= end for start, end in spans)


# ---- under load ---------------------------------------------------------------------------------

LATEST_1 = "max_batch_size: 8\nversion_policy: { latest: { num_versions: 1 } }\n"
ALL_VERSIONS = "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 1000 }\nversion_policy: { all: {} }\n"


@pytest.mark.timeout(120)
def test_changes_under_load_fail_no_request_and_serve_only_ready_versions(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    timeline = Timeline()
    timeline.appears("1", 1.0, time.monotonic())
    repository.mkdir()
    model_dir = add_model(repository, "live", 1.0, LATEST_1)
    args = ["--model-control-mode", "poll", "--repository-poll-secs", "1"]
    server = ServerProcess([repository], args, log_path=tmp_path / "server.log")
    with server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 30)
        with LoadClient(server.grpc_url, "live", concurrency=32, max_secs=90) as load:
            load.wait_for(lambda o: o.ok)

            # 1. A new version: latest 1 switches to it, version 1 drains away.
            timeline.appears("2", 2.0, time.monotonic())
            add_version(model_dir, 2, add_constant(2.0))
            timeline.gone("1", 1.0, load.wait_for(lambda o: o.version == "2").end)
            wait_until(lambda: ("live", "1") not in repository_index(client), 15, "version 1 retired")

            # 2. config.pbtxt: version policy latest 1 → all, max_batch_size 8 → 4, dynamic batching.
            timeline.appears("1", 1.0, time.monotonic())
            replace_file(model_dir / "config.pbtxt", ALL_VERSIONS)
            wait_until(lambda: client.get_model_config("live").config.max_batch_size == 4, 15, "new config served")
            wait_until(lambda: repository_index(client).get(("live", "1"), ("",))[0] == "READY", 15, "version 1 back")
            config = client.get_model_config("live").config
            assert config.dynamic_batching.max_queue_delay_microseconds == 1000
            assert config.version_policy.WhichOneof("policy_choice") == "all"

            # 3. New weights for version 2, same file name: answers change from 2 to 20.
            timeline.appears("2", 20.0, time.monotonic())
            replace_file(model_dir / "2" / "model.onnx", add_constant(20.0).SerializeToString())
            timeline.gone("2", 2.0, load.wait_for(lambda o: o.value == 20.0).end)

            # 4. Remove version 2: version 1 (still loaded under policy "all") answers again.
            started = time.monotonic()
            remove_dir(model_dir / "2")
            timeline.gone("2", 20.0, load.wait_for(lambda o: o.version == "1", since=started).end)
            wait_until(lambda: ("live", "2") not in repository_index(client), 15, "version 2 gone from the index")

            # 5. A broken version 3: version 1 keeps serving, the index says why 3 is not.
            add_version(model_dir, 3, b"not an onnx model")
            broken = wait_until(lambda: repository_index(client).get(("live", "3"), ("",))[0] == "UNAVAILABLE", 15, "3 failed")
            assert "onnx runtime error" in repository_index(client)[("live", "3")][1]
            assert load.wait_for(lambda o: o.version == "1", since=broken).value == 1.0
            assert client.is_server_ready()

            # 6. Fix it: version 3 loads on the next poll and takes over.
            timeline.appears("3", 3.0, time.monotonic())
            replace_file(model_dir / "3" / "model.onnx", add_constant(3.0).SerializeToString())
            timeline.gone("1", 1.0, load.wait_for(lambda o: o.version == "3").end)
            load.wait_for(lambda o: o.ok, since=time.monotonic())
            outcomes = load.stop()

        assert failures(outcomes) == []
        unexplained = [o for o in outcomes if not timeline.allows(o)]
        assert unexplained == [], f"{len(unexplained)} of {len(outcomes)} responses from versions not READY then: {unexplained[:5]}"
        assert {(o.version, o.value) for o in outcomes} == {("1", 1.0), ("2", 2.0), ("2", 20.0), ("3", 3.0)}
        assert {k: v[0] for k, v in repository_index(client).items()} == {("live", "1"): "READY", ("live", "3"): "READY"}


# ---- single changes on one shared server -----------------------------------------------------------

POLL_SECS = 0.3


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("poll_repo")
    for name, constant in (("touched", 6.0), ("rewritten", 1.0), ("removed", 9.0), ("configured", 2.0)):
        add_model(repository, name, constant, "max_batch_size: 8\n")
    (repository / "failed_at_start" / "1").mkdir(parents=True)
    (repository / "failed_at_start" / "1" / "model.onnx").write_bytes(b"garbage")
    return repository


@pytest.fixture(scope="module")
def poll_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model-control-mode", "poll", "--repository-poll-secs", str(POLL_SECS), "--strict-readiness=false", "--log-verbose=1"]
    with ServerProcess([repository], args, log_path=tmp_path_factory.mktemp("logs") / "poll.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 30)
        yield server


@pytest.fixture
def client(poll_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(poll_server.grpc_url) as triton:
        yield triton


def load_duration(server: ServerProcess, model: str) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return next(line for line in lines if line.startswith("nv_model_load_duration_secs") and f'model="{model}"' in line)


def test_failed_model_is_retried_when_its_files_change(
    poll_server: ServerProcess, repository: Path, client: grpcclient.InferenceServerClient
) -> None:
    state, reason = repository_index(client)[("failed_at_start", "1")]
    assert state == "UNAVAILABLE" and "onnx runtime error" in reason
    wait_for_full_polls(poll_server, 3)  # unchanged files: no retry
    assert poll_server.log().count("model 'failed_at_start' version 1:") == 1
    replace_file(repository / "failed_at_start" / "1" / "model.onnx", add_constant(4.0).SerializeToString())
    wait_until(lambda: repository_index(client)[("failed_at_start", "1")][0] == "READY", 15, "retried load")
    assert infer_value(client, "failed_at_start") == ("1", 4.0)


def test_touched_but_unchanged_files_do_not_reload(
    poll_server: ServerProcess, repository: Path, client: grpcclient.InferenceServerClient
) -> None:
    for _ in range(3):
        assert infer_value(client, "touched") == ("1", 6.0)
    before = load_duration(poll_server, "touched")
    model_dir = repository / "touched"
    later = time.time() + 60
    for path in (model_dir / "config.pbtxt", model_dir / "1" / "model.onnx"):
        os.utime(path, (later, later))
    replace_file(model_dir / "config.pbtxt", (model_dir / "config.pbtxt").read_text())  # same bytes, new inode
    wait_for_full_polls(poll_server, 3)
    stats = client.get_inference_statistics("touched", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == 3  # a reload would start new statistics
    assert load_duration(poll_server, "touched") == before
    assert poll_server.log().count("model 'touched': versions") == 1


def test_in_place_rewrite_converges(poll_server: ServerProcess, repository: Path, client: grpcclient.InferenceServerClient) -> None:
    """Half a file for a few polls (a failed reload; the old weights keep serving), then all of it."""
    content = add_constant(5.0).SerializeToString()
    with (repository / "rewritten" / "1" / "model.onnx").open("wb") as handle:
        handle.write(content[: len(content) // 2])
        handle.flush()
        wait_until(lambda: "reload failed" in repository_index(client)[("rewritten", "1")][1], 15, "partial file seen")
        assert repository_index(client)[("rewritten", "1")][0] == "READY"
        assert infer_value(client, "rewritten") == ("1", 1.0)
        handle.write(content[len(content) // 2 :])
    wait_until(lambda: infer_value(client, "rewritten") == ("1", 5.0), 15, "new weights served")
    assert repository_index(client)[("rewritten", "1")] == ("READY", "")


def test_removed_model_directory_unloads(repository: Path, client: grpcclient.InferenceServerClient) -> None:
    assert infer_value(client, "removed") == ("1", 9.0)
    remove_dir(repository / "removed")
    wait_until(lambda: all(name != "removed" for name, _ in repository_index(client)), 15, "model gone from the index")
    assert infer_error(client, "removed") == "StatusCode.NOT_FOUND: Request for unknown model: 'removed' is not found"


def test_added_model_directory_loads(repository: Path, client: grpcclient.InferenceServerClient) -> None:
    assert infer_error(client, "added").startswith("StatusCode.NOT_FOUND")
    add_model(repository, "added", 8.0)
    wait_until(lambda: repository_index(client).get(("added", "1"), ("",))[0] == "READY", 15, "new model loaded")
    assert infer_value(client, "added") == ("1", 8.0)


def test_broken_config_keeps_the_old_load_serving_until_fixed(repository: Path, client: grpcclient.InferenceServerClient) -> None:
    config = repository / "configured" / "config.pbtxt"
    replace_file(config, "max_batch_size: [ 8")
    wait_until(lambda: repository_index(client).get(("configured", ""), ("",))[0] == "UNAVAILABLE", 15, "bad config noticed")
    assert "config.pbtxt" in repository_index(client)[("configured", "")][1]
    assert repository_index(client)[("configured", "1")] == ("READY", "")
    assert infer_value(client, "configured") == ("1", 2.0)
    replace_file(config, "max_batch_size: 2\n")
    wait_until(lambda: client.get_model_config("configured").config.max_batch_size == 2, 15, "fixed config served")
    assert ("configured", "") not in repository_index(client)
    assert infer_value(client, "configured") == ("1", 2.0)
