"""Build the example models in model_repo/ (run from the repository root).

    python scripts/build_model_repo.py [--out model_repo]

simple: Triton's classic first example, with a config.pbtxt to copy from (batching up to 8, no
        dynamic batcher).
mlp: FP32 [-1,256] → 1024 → 1024 → 10 with no config.pbtxt, so auto-complete fills it in
     (max_batch_size 4, dynamic batching), exactly as Triton would.
string_identity: BYTES in, BYTES out, with dynamic batching and a version policy spelled out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import onnx_models

SIMPLE_CONFIG = """\
# Triton's classic first model: two INT32 vectors in, their sum and difference out.
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest: { num_versions: 1 } }
input [
  { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

STRING_IDENTITY_CONFIG = """\
# Strings in, the same strings out. BYTES tensors travel as 4-byte length-prefixed elements.
name: "string_identity"
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "INPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
dynamic_batching {
  max_queue_delay_microseconds: 100
}
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""


def write(out: Path, name: str, model: object, config: str | None) -> None:
    version_dir = out / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx_models.save(model, str(version_dir / "model.onnx"))  # type: ignore[arg-type]
    if config is not None:
        (out / name / "config.pbtxt").write_text(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("model_repo"))
    out = parser.parse_args().out
    write(out, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    write(out, "mlp", onnx_models.mlp(), None)
    write(out, "string_identity", onnx_models.identity("BYTES", ["batch", "n"]), STRING_IDENTITY_CONFIG)
    print(f"built {out}/simple, {out}/mlp, {out}/string_identity")


if __name__ == "__main__":
    main()
