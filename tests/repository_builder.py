"""Build the test model repository: real ONNX files from scripts/onnx_models.py plus configs."""

from __future__ import annotations

from pathlib import Path

from scripts import build_model_repo, onnx_models

# Datatypes the identity models cover (BF16 is refused by ortserve, see test_datatypes).
IDENTITY_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES")

# Triton's classic first model, as bundled in model_repo/.
SIMPLE_CONFIG = build_model_repo.SIMPLE_CONFIG

# Contradicts its graph (which is simple's: INT32 [-1,16]).
CONTRADICTING_CONFIG = """
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
"""

VERSIONED_CONFIG = """
max_batch_size: 8
version_policy: { latest: { num_versions: 2 } }
"""


def write_model(repository: Path, name: str, model: object, config: str | None = None, version: int = 1) -> Path:
    version_dir = repository / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx_models.save(model, str(version_dir / "model.onnx"))  # type: ignore[arg-type]
    if config is not None:
        (repository / name / "config.pbtxt").write_text(config)
    return version_dir


def build_test_repository(repository: Path) -> Path:
    """Every model the integration tests use, including two that must fail to load."""
    repository.mkdir(parents=True, exist_ok=True)
    for datatype in IDENTITY_DATATYPES:
        write_model(repository, f"identity_{datatype.lower()}", onnx_models.identity(datatype, ["batch", "n"]))
    write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    write_model(repository, "mlp", onnx_models.mlp())
    write_model(repository, "state_update", onnx_models.state_update())
    write_model(repository, "scalar_scale", onnx_models.scalar_scale())
    # One string per request: what Triton's raw HTTP body form accepts for BYTES.
    write_model(repository, "identity_text", onnx_models.identity("BYTES", ["batch", 1]))
    for version, constant in ((1, 100.0), (2, 200.0), (3, 300.0)):
        write_model(repository, "versioned", onnx_models.add_constant("FP32", ["batch", 4], constant), VERSIONED_CONFIG, version)
    corrupt = repository / "corrupt" / "1"
    corrupt.mkdir(parents=True, exist_ok=True)
    (corrupt / "model.onnx").write_bytes(b"this is not an ONNX model")
    write_model(repository, "contradicting", onnx_models.simple(), CONTRADICTING_CONFIG)
    return repository
