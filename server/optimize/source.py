"""The version to optimize: where it is, its completed config and its inputs and outputs.

Reads the repository the way the server does (Triton's layout, config.pbtxt auto-completed from
the graph), so the batch sizes measured and the file written are the ones the server will use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.datatypes import numpy_dtype, wire_from_ort_type
from server.errors import ServerError
from server.model_config.autocomplete import complete_core_fields, complete_from_graph
from server.model_config.config_file import read_config_file
from server.optimize.failure import OptimizeError
from server.proto import model_config_pb2 as mc
from server.repository.layout import CONFIG_FILENAME, list_versions
from server.runtime.instance import graph_signature
from server.runtime.loader import model_file


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One graph input or output: dims are None where the graph leaves them symbolic."""

    name: str
    wire: str  # "FP32", "INT64", ... (the ORT type string when it has no wire datatype)
    dims: tuple[int | None, ...]

    @property
    def dtype(self) -> np.dtype | None:
        try:
            return numpy_dtype(self.wire)
        except (KeyError, ServerError):
            return None


@dataclass(frozen=True, slots=True)
class SourceVersion:
    name: str
    model_dir: Path
    version: int
    model_path: Path
    config: mc.ModelConfig  # completed, as the server would serve it
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def batching(self) -> bool:
        return self.config.max_batch_size > 0

    @property
    def filename(self) -> str:
        return self.config.default_model_filename

    def labelled_outputs(self) -> set[str]:
        """Outputs with a label file: classes by the config's own word."""
        return {output.name for output in self.config.output if output.label_filename}


def locate(model_dir: Path, version: int | None, default_max_batch_size: int) -> SourceVersion:
    """Raises OptimizeError for a missing model, version or file, or a config that cannot load."""
    if not model_dir.is_dir():
        raise OptimizeError(f"model directory '{model_dir}' does not exist (expected REPOSITORY/MODEL)")
    versions = list_versions(model_dir)
    if not versions:
        raise OptimizeError(f"model '{model_dir.name}' has no version directories (expected {model_dir}/1/model.onnx)")
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise OptimizeError(f"model '{model_dir.name}' has no version {chosen} (versions: {', '.join(map(str, versions))})")
    try:
        config = complete_core_fields(_file_config(model_dir), model_dir.name)
        path = model_file(versions[chosen], config)
    except ServerError as error:
        raise OptimizeError(error.message) from None
    session = open_session(path)
    return SourceVersion(
        name=model_dir.name,
        model_dir=model_dir,
        version=chosen,
        model_path=path,
        config=complete_from_graph(config, graph_signature(session), default_max_batch_size),
        inputs=tuple(_tensor_info(arg) for arg in session.get_inputs()),
        outputs=tuple(_tensor_info(arg) for arg in session.get_outputs()),
    )


def next_version(model_dir: Path, requested: int | None) -> int:
    """The version to write: ``requested`` (which must be free), else one past the highest."""
    versions = list_versions(model_dir)
    if requested is None:
        return max(versions, default=0) + 1
    if requested < 1:
        raise OptimizeError(f"--to {requested}: a version is a positive integer")
    if requested in versions or (model_dir / str(requested)).exists():
        raise OptimizeError(f"--to {requested}: version {requested} of model '{model_dir.name}' already exists; it is never overwritten")
    return requested


def open_session(path: Path) -> ort.InferenceSession:
    """A plain CPU session, for the signature only. Raises OptimizeError with ORT's reason."""
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own pybind exception types
        raise OptimizeError(f"ONNX Runtime cannot load '{path}': {error}") from None


def _file_config(model_dir: Path) -> mc.ModelConfig:
    config_path = model_dir / CONFIG_FILENAME
    return read_config_file(config_path) if config_path.is_file() else mc.ModelConfig()


def _tensor_info(arg: ort.NodeArg) -> TensorInfo:
    dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or []))
    return TensorInfo(arg.name, wire_from_ort_type(arg.type) or arg.type, dims)
