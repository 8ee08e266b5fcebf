"""Ensembles (``platform: "ensemble"``) through tritonclient against a real server in explicit mode.

The main pipeline is a real one: an onnx.helper preprocessing graph (UINT8 HWC image to rapidocr's
normalised CHW tensor) feeding rapidocr's pre-trained text-direction classifier; the ensemble's
answer must equal calling the two members one after the other. Other ensembles check that
independent branches run at the same time, that sequence flags reach a stateful member, Triton's
refusals at load, a member failing at run time, and what unloading a member does.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, wait_until
from tests.integration.slow_work import EXECUTING, ONE_INSTANCE, rows_lasting, until_premise_holds
from tests.integration.test_pretrained import CLS_MODEL, CLS_OUTPUT, render_text
from tests.integration.test_sequences import reference, sequence_inputs
from tests.repository_builder import write_model

HEIGHT, WIDTH = 48, 192
OCR_PIPELINE = f"""
platform: "ensemble"
max_batch_size: 4
input [ {{ name: "IMAGE", data_type: TYPE_UINT8, dims: [ {HEIGHT}, {WIDTH}, 3 ] }} ]
output [ {{ name: "PROBS", data_type: TYPE_FP32, dims: [ 2 ] }} ]
ensemble_scheduling {{
  step [
    {{ model_name: "ocr_pre", model_version: -1, input_map {{ key: "image" value: "IMAGE" }},
       output_map {{ key: "x" value: "normalised" }} }},
    {{ model_name: "ocr_cls", model_version: -1, input_map {{ key: "x" value: "normalised" }},
       output_map {{ key: "{CLS_OUTPUT}" value: "PROBS" }} }}
  ]
}}
"""
SLOW = f"max_batch_size: 4096\ndynamic_batching {{ }}\n{ONE_INSTANCE}\n"
FANOUT = """
platform: "ensemble"
max_batch_size: 4096
input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "A", data_type: TYPE_FP32, dims: [ 1 ] }, { name: "B", data_type: TYPE_FP32, dims: [ 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "slow_a", model_version: -1, input_map { key: "x" value: "X" }, output_map { key: "y" value: "A" } },
    { model_name: "slow_b", model_version: -1, input_map { key: "x" value: "X" }, output_map { key: "y" value: "B" } }
  ]
}
"""
GATHER_PIPELINE = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "INDEX", data_type: TYPE_INT64, dims: [ 1 ] } ]
output [ { name: "ROW", data_type: TYPE_FP32, dims: [ 1, 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "gather_rows", model_version: -1, input_map { key: "index" value: "INDEX" }, output_map { key: "row" value: "ROW" } }
  ]
}
"""
ACC_PIPELINE = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "VALUE", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "TOTAL", data_type: TYPE_FP32, dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "shift", model_version: -1, input_map { key: "INPUT0" value: "VALUE" }, output_map { key: "OUTPUT0" value: "shifted" } },
    { model_name: "acc", model_version: -1, input_map { key: "INPUT" value: "shifted" }, output_map { key: "OUTPUT" value: "TOTAL" } }
  ]
}
"""
# The stateful member (test_sequences' accumulator, without a CORRID control).
ACC = """
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 600000000
  oldest { }
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, fp32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 4 ] } ]
}
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""
UNKNOWN_MEMBER = OCR_PIPELINE.replace('model_name: "ocr_cls"', 'model_name: "no_such_model"')
UNKNOWN_TENSOR = OCR_PIPELINE.replace('key: "image" value: "IMAGE"', 'key: "picture" value: "IMAGE"')
CYCLE_A = OCR_PIPELINE.replace('model_name: "ocr_cls"', 'model_name: "cycle_b"')
CYCLE_B = OCR_PIPELINE.replace('model_name: "ocr_pre"', 'model_name: "cycle_a"')
LOADED = ["ocr_pipeline", "fanout", "gather_pipeline", "acc_pipeline"]


@pytest.fixture(scope="module")
def ensemble_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("ensemble_repo")
    write_model(repository, "ocr_pre", onnx_models.text_line_preprocess(HEIGHT, WIDTH), "max_batch_size: 4\n")
    (repository / "ocr_cls" / "1").mkdir(parents=True)
    shutil.copy(CLS_MODEL, repository / "ocr_cls" / "1" / "model.onnx")
    for name in ("slow_a", "slow_b"):
        write_model(repository, name, onnx_models.slow_echo(), SLOW)
    write_model(repository, "gather_rows", onnx_models.gather_rows(), "max_batch_size: 8\n")
    write_model(repository, "shift", onnx_models.add_constant("FP32", ["batch", 4], 1.0), "max_batch_size: 8\n")
    write_model(repository, "acc", onnx_models.accumulator(4, corrid=None), ACC)
    configs = {
        "ocr_pipeline": OCR_PIPELINE,
        "fanout": FANOUT,
        "gather_pipeline": GATHER_PIPELINE,
        "acc_pipeline": ACC_PIPELINE,
        "bad_unknown_member": UNKNOWN_MEMBER,
        "bad_unknown_tensor": UNKNOWN_TENSOR,
        "cycle_a": CYCLE_A,
        "cycle_b": CYCLE_B,
    }
    for name, config in configs.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(config)
    args = ["--model-control-mode=explicit", "--strict-readiness=false", *(f"--load-model={name}" for name in LOADED)]
    log = tmp_path_factory.mktemp("logs") / "ensembles.log"
    with ServerProcess([repository], args, log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 120)
        yield process


@pytest.fixture
def client(ensemble_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(ensemble_server.grpc_url) as triton:
        yield triton


def text_images() -> np.ndarray:
    """Four BGR text lines, two upright and two turned 180 degrees, resized to 48 rows and padded
    (grey) to 192 columns, as UINT8 [4, 48, 192, 3]."""
    upright = [render_text("Hello World 2024"), render_text("ortserve")]
    lines = [upright[0], cv2.rotate(upright[0], cv2.ROTATE_180), upright[1], cv2.rotate(upright[1], cv2.ROTATE_180)]
    batch = np.full((len(lines), HEIGHT, WIDTH, 3), 128, np.uint8)
    for index, line in enumerate(lines):
        width = min(WIDTH, math.ceil(HEIGHT * line.shape[1] / line.shape[0]))
        batch[index, :, :width] = cv2.resize(line, (width, HEIGHT))
    return batch


def infer_one(client: grpcclient.InferenceServerClient, model: str, name: str, array: np.ndarray, datatype: str, output: str) -> np.ndarray:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return client.infer(model, [item], client_timeout=60).as_numpy(output)


def test_members_loaded_before_the_ensemble_though_only_the_ensemble_was_asked_for(client: grpcclient.InferenceServerClient) -> None:
    states = {(entry.name, entry.state) for entry in client.get_model_repository_index().models}
    for name in ("ocr_pre", "ocr_cls", "ocr_pipeline", "slow_a", "slow_b", "gather_rows", "shift", "acc"):
        assert (name, "READY") in states


def test_the_ocr_pipeline_equals_its_members_called_one_by_one(client: grpcclient.InferenceServerClient) -> None:
    images = text_images()
    served = infer_one(client, "ocr_pipeline", "IMAGE", images, "UINT8", "PROBS")
    normalised = infer_one(client, "ocr_pre", "image", images, "UINT8", "x")
    by_hand = infer_one(client, "ocr_cls", "x", normalised, "FP32", CLS_OUTPUT)
    np.testing.assert_allclose(served, by_hand, rtol=1e-6, atol=1e-7)
    assert served.argmax(axis=1).tolist() == [0, 1, 0, 1]  # upright, turned, upright, turned
    # The preprocessing graph is rapidocr's normalisation: (pixel / 255 - 0.5) / 0.5, channels first.
    expected = (images.astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(normalised, expected.transpose(0, 3, 1, 2), atol=1e-6)


def test_the_ocr_pipeline_over_http(ensemble_server: ServerProcess) -> None:
    images = text_images()[:2]
    with httpclient.InferenceServerClient(ensemble_server.http_url) as http:
        item = httpclient.InferInput("IMAGE", list(images.shape), "UINT8")
        item.set_data_from_numpy(images)
        probabilities = http.infer("ocr_pipeline", [item]).as_numpy("PROBS")
    assert probabilities.shape == (2, 2) and probabilities.argmax(axis=1).tolist() == [0, 1]


def test_steps_and_members_report_statistics(client: grpcclient.InferenceServerClient, ensemble_server: ServerProcess) -> None:
    before = ensemble_server.metrics()
    infer_one(client, "ocr_pipeline", "IMAGE", text_images()[:1], "UINT8", "PROBS")
    after = ensemble_server.metrics()
    for step, member in ((0, "ocr_pre"), (1, "ocr_cls")):
        labels = {"step": str(step), "step_model": member}
        moved = after.model("ocr_pipeline", "ortserve_ensemble_step_success", **labels) - before.model(
            "ocr_pipeline", "ortserve_ensemble_step_success", **labels
        )
        assert moved == 1
        assert after.model(member, "nv_inference_request_success") - before.model(member, "nv_inference_request_success") == 1
    assert after.model("ocr_pipeline", "nv_inference_request_success") - before.model("ocr_pipeline", "nv_inference_request_success") == 1
    stats = client.get_inference_statistics("ocr_pipeline").model_stats[0]
    assert stats.inference_stats.success.count >= 1 and stats.inference_stats.compute_infer.ns > 0


def test_independent_branches_run_at_the_same_time(ensemble_server: ServerProcess) -> None:
    """fanout feeds X to slow_a and slow_b, each with one instance: one request must have both
    members executing at once (seen in one scrape of their executing gauges)."""

    def attempt(rows: int) -> bool:
        values = np.arange(rows, dtype=np.float32).reshape(rows, 1) % 7
        outcome: dict[str, object] = {}

        def send() -> None:
            try:
                with grpcclient.InferenceServerClient(ensemble_server.grpc_url) as triton:
                    item = grpcclient.InferInput("X", [rows, 1], "FP32")
                    item.set_data_from_numpy(values)
                    outcome["result"] = triton.infer("fanout", [item], client_timeout=300)
            except InferenceServerException as error:  # raised on the test's thread below
                outcome["result"] = error

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        both = False

        def observed() -> bool:
            nonlocal both
            metrics = ensemble_server.metrics()
            both = both or (metrics.model("slow_a", EXECUTING) >= 1 and metrics.model("slow_b", EXECUTING) >= 1)
            return both or "result" in outcome

        wait_until(observed, 300, "fanout answered or both branches executing")
        thread.join(300)
        result = outcome["result"]
        if isinstance(result, InferenceServerException):
            raise result
        np.testing.assert_allclose(result.as_numpy("A"), values, rtol=1e-5)  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.as_numpy("B"), values, rtol=1e-5)  # type: ignore[attr-defined]
        return both

    until_premise_holds(attempt, rows_lasting(0.5), "both branches seen executing at once")


def test_sequence_flags_reach_a_stateful_member(client: grpcclient.InferenceServerClient) -> None:
    inputs = sequence_inputs(21, 5)
    expected = reference([value + 1.0 for value in inputs])  # the shift step adds 1 first
    for step, (value, total) in enumerate(zip(inputs, expected)):
        result = client.infer("acc_pipeline", [value_input(value)], sequence_id=3001, sequence_start=step == 0, sequence_end=step == 4)
        np.testing.assert_allclose(result.as_numpy("TOTAL")[0], total, rtol=1e-6)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_pipeline", [value_input(inputs[0])], sequence_id=3001)
    assert caught.value.message() == (
        "in ensemble 'acc_pipeline', inference request for sequence 3001 to model 'acc' must specify the START flag "
        "on the first request of the sequence"
    )


def value_input(value: np.ndarray) -> grpcclient.InferInput:
    item = grpcclient.InferInput("VALUE", [1, 4], "FP32")
    item.set_data_from_numpy(value.reshape(1, 4).astype(np.float32))
    return item


def test_a_member_failing_at_run_time_names_ensemble_step_and_model(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        infer_one(client, "gather_pipeline", "INDEX", np.array([[1000]], np.int64), "INT64", "ROW")
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert caught.value.message().startswith("in ensemble 'gather_pipeline', step 0 (model 'gather_rows') failed: ")
    # The pipeline and its member keep serving.
    assert infer_one(client, "gather_pipeline", "INDEX", np.array([[3]], np.int64), "INT64", "ROW").tolist() == [[[3.0] * 4]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad_unknown_member", "ensemble bad_unknown_member contains models that are not available or ambiguous: no_such_model"),
        (
            "bad_unknown_tensor",
            "in ensemble bad_unknown_tensor, ensemble tensor IMAGE is mapping to non-existing input picture in model ocr_pre",
        ),
        ("cycle_a", "circular dependency between ensembles: cycle_a -> ... -> cycle_b -> cycle_a"),
    ],
    ids=["unknown-model", "unknown-tensor", "cycle"],
)
def test_bad_ensembles_are_refused_in_tritons_words(client: grpcclient.InferenceServerClient, name: str, expected: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model(name)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert expected in caught.value.message()
    assert infer_one(client, "gather_pipeline", "INDEX", np.array([[2]], np.int64), "INT64", "ROW").tolist() == [[[2.0] * 4]]


def test_unloading_a_member_makes_its_ensemble_unavailable_until_it_is_back(client: grpcclient.InferenceServerClient) -> None:
    client.unload_model("gather_rows")
    entries = {entry.name: entry for entry in client.get_model_repository_index().models}
    assert entries["gather_pipeline"].state == "UNAVAILABLE"
    assert entries["gather_pipeline"].reason == "ensemble 'gather_pipeline' depends on 'gather_rows' which has no loaded version."
    assert not client.is_model_ready("gather_pipeline")
    client.load_model("gather_rows")
    wait_until(lambda: client.is_model_ready("gather_pipeline"), 60, "gather_pipeline ready again")
    assert infer_one(client, "gather_pipeline", "INDEX", np.array([[5]], np.int64), "INT64", "ROW").tolist() == [[[5.0] * 4]]


def test_unload_dependents_unloads_the_ensemble_too(client: grpcclient.InferenceServerClient) -> None:
    client.unload_model("shift", unload_dependents=True)
    entries = {entry.name: entry for entry in client.get_model_repository_index().models}
    assert (entries["acc_pipeline"].state, entries["acc_pipeline"].reason) == ("UNAVAILABLE", "unloaded")
    client.load_model("shift")
    assert not client.is_model_ready("acc_pipeline")  # it was unloaded, not left waiting for its member
    client.load_model("acc_pipeline")
    assert client.is_model_ready("acc_pipeline")
