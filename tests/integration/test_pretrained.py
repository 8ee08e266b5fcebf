"""Real pre-trained models, shipped inside the rapidocr-onnxruntime wheel, served with no config.pbtxt.

The repository holds only `<model>/1/model.onnx`, so everything in the config comes from
auto-complete. Inputs are rendered text lines preprocessed by rapidocr's own classes, and the
served outputs must match rapidocr's own ONNX Runtime session on the same batch.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rapidocr_onnxruntime
import tritonclient.grpc as grpcclient
from rapidocr_onnxruntime.ch_ppocr_cls import TextClassifier
from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
from rapidocr_onnxruntime.utils import read_yaml
from tritonclient.grpc import model_config_pb2 as mc

from scripts.harness import ServerProcess

RAPIDOCR_ROOT = Path(rapidocr_onnxruntime.__file__).resolve().parent
# The text-direction classifier: x FP32 [N,3,?,?] -> [N,2] (upright / rotated 180 degrees).
CLS_MODEL = RAPIDOCR_ROOT / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
CLS_OUTPUT = "save_infer_model/scale_0.tmp_1"
# The PP-OCRv4 recognizer: x FP32 [N,3,?,W] -> [N,T,6625] (CTC over its character list).
REC_MODEL = RAPIDOCR_ROOT / "models" / "ch_PP-OCRv4_rec_infer.onnx"
REC_OUTPUT = "softmax_11.tmp_0"
# ortserve's default max_batch_size for auto-completed models whose first dims are all dynamic.
DEFAULT_MAX_BATCH_SIZE = 4
# The served session (one intra-op thread) and rapidocr's (all cores) may sum in other orders.
RTOL, ATOL = 1e-4, 1e-5


def rapidocr_config(section: str) -> dict[str, Any]:
    """rapidocr's own settings for one stage, with the model path made absolute."""
    config = dict(read_yaml(RAPIDOCR_ROOT / "config.yaml")[section])
    config["model_path"] = str(RAPIDOCR_ROOT / config["model_path"])
    return config


def render_text(text: str) -> np.ndarray:
    """A black-on-white BGR text line, like a crop rapidocr's detector hands to the classifier."""
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    image = np.full((height + baseline + 16, width + 16, 3), 255, np.uint8)
    cv2.putText(image, text, (8, height + 8), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    return image


@pytest.fixture(scope="module")
def ocr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("ocr_repo")
    for name, source in (("ocr_cls", CLS_MODEL), ("ocr_rec", REC_MODEL)):
        (repository / name / "1").mkdir(parents=True)
        shutil.copy(source, repository / name / "1" / "model.onnx")
    log = tmp_path_factory.mktemp("logs") / "ocr.log"
    with ServerProcess([repository], log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture
def client(ocr_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(ocr_server.grpc_url) as triton:
        yield triton


def infer(client: grpcclient.InferenceServerClient, model: str, batch: np.ndarray, output: str) -> np.ndarray:
    tensor = grpcclient.InferInput("x", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(output)], client_timeout=30)
    return result.as_numpy(output)


def signature(tensors: Any) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


def test_classifier_config_is_auto_completed(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("ocr_cls").config

    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.platform == "onnxruntime_onnx"
    # Symbolic height and width ("?") become -1; the batch dim is implicit.
    assert signature(config.input) == [("x", mc.TYPE_FP32, [3, -1, -1])]
    assert signature(config.output) == [(CLS_OUTPUT, mc.TYPE_FP32, [2])]
    metadata = client.get_model_metadata("ocr_cls")
    assert [list(t.shape) for t in metadata.inputs] == [[-1, 3, -1, -1]]
    assert [(t.name, list(t.shape)) for t in metadata.outputs] == [(CLS_OUTPUT, [-1, 2])]


def test_classifier_matches_rapidocr(client: grpcclient.InferenceServerClient) -> None:
    classifier = TextClassifier(rapidocr_config("Cls"))
    upright = [render_text("Hello World 2024"), render_text("ortserve")]
    lines = [upright[0], cv2.rotate(upright[0], cv2.ROTATE_180), upright[1], cv2.rotate(upright[1], cv2.ROTATE_180)]
    batch = np.stack([classifier.resize_norm_img(line) for line in lines]).astype(np.float32)

    expected = classifier.infer(batch)[0]  # rapidocr's own OrtInferSession.__call__
    served = infer(client, "ocr_cls", batch, CLS_OUTPUT)

    assert served.shape == expected.shape == (4, 2)
    assert np.allclose(served, expected, rtol=RTOL, atol=ATOL), f"max |diff| {np.abs(served - expected).max()}"
    assert [label for label, _ in classifier.postprocess_op(served)] == ["0", "180", "0", "180"]


def test_recognizer_reads_the_same_text_as_rapidocr(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("ocr_rec").config
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert signature(config.input) == [("x", mc.TYPE_FP32, [3, -1, -1])]
    assert signature(config.output) == [(REC_OUTPUT, mc.TYPE_FP32, [-1, 6625])]

    recognizer = TextRecognizer(rapidocr_config("Rec"))
    line = render_text("Hello World 2024")
    _, height, width = recognizer.rec_image_shape
    # rapidocr pads every line of a batch to the widest aspect ratio, at least its default 320/48.
    max_wh_ratio = max(width / height, line.shape[1] / line.shape[0])
    batch = recognizer.resize_norm_img(line, max_wh_ratio)[np.newaxis].astype(np.float32)

    expected = recognizer.session(batch)[0]
    served = infer(client, "ocr_rec", batch, REC_OUTPUT)

    assert served.shape == expected.shape
    assert np.allclose(served, expected, rtol=RTOL, atol=ATOL), f"max |diff| {np.abs(served - expected).max()}"
    (text, _score), *_ = recognizer.postprocess_op(served)
    (expected_text, _), *_ = recognizer.postprocess_op(expected)
    assert text == expected_text == "Hello World 2024"
