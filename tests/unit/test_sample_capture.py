"""The capture's bounds: count, bytes, the per-model parameter, files from earlier runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.proto import model_config_pb2 as mc
from server.service.sample_capture import SampleCapture


def config(count: str | None = None) -> mc.ModelConfig:
    result = mc.ModelConfig()
    if count is not None:
        result.parameters["sample_capture_count"].string_value = count
    return result


def kept(directory: Path) -> list[np.ndarray]:
    return [np.load(path)["x"] for path in sorted(directory.glob("*.npz"))]


def test_count_bytes_and_parameter_bounds(tmp_path: Path) -> None:
    capture = SampleCapture(tmp_path, max_count=3, max_bytes=10_000)
    for value in range(5):
        capture.offer("counted", config(), {"x": np.full((2, 4), value, np.float32)})  # 32 bytes each
        capture.offer("sized", config("100"), {"x": np.full((1, 1000), value, np.float32)})  # 4000 bytes each
        capture.offer("off", config("0"), {"x": np.zeros((1, 4), np.float32)})
    capture.offer("strings", config(), {"x": np.array(["a", "b"], dtype=object)})
    capture.close()

    assert [a[0, 0] for a in kept(tmp_path / "counted")] == [0, 1, 2]  # the first three, as sent
    assert [a[0, 0] for a in kept(tmp_path / "sized")] == [0, 1]  # a third would pass 10,000 bytes
    assert not (tmp_path / "off").exists() and not (tmp_path / "strings").exists()


def test_files_kept_by_an_earlier_run_count(tmp_path: Path) -> None:
    first = SampleCapture(tmp_path, max_count=2, max_bytes=10_000)
    for value in range(2):
        first.offer("m", config(), {"x": np.full((1, 4), value, np.float32)})
    first.close()

    second = SampleCapture(tmp_path, max_count=2, max_bytes=10_000)
    second.offer("m", config(), {"x": np.full((1, 4), 9, np.float32)})
    second.close()

    assert [a[0, 0] for a in kept(tmp_path / "m")] == [0, 1]
    assert not list((tmp_path / "m").glob(".*"))  # no partial file left
