"""The optimization methods: each turns the source model file into a candidate model file.

A method never touches the repository: it reads the source file and writes into a private work
directory. Whether the candidate is any good is decided afterwards, by measurement.
"""

from __future__ import annotations

from pathlib import Path

from server.optimize.failure import OptimizeError
from server.optimize.methods.spec import (
    AUTO_METHODS,
    CALIBRATION_METHODS,
    METHODS,
    Candidate,
    MethodOptions,
    MethodSpec,
    parse_method,
)

__all__ = ["AUTO_METHODS", "CALIBRATION_METHODS", "METHODS", "Candidate", "MethodOptions", "MethodSpec", "parse_method", "produce"]


def produce(spec: MethodSpec, source_path: Path, model_name: str, workdir: Path, options: MethodOptions) -> Candidate:
    """Run one method (not auto). Raises OptimizeError when the model cannot take it."""
    # Imported per method: each pulls in a large optional package.
    if spec.name == "int8-dynamic":
        from server.optimize.methods.quantization import quantize_dynamic_int8

        return quantize_dynamic_int8(source_path, model_name, workdir, options)
    if spec.name == "int8-static":
        from server.optimize.methods.quantization import quantize_static_int8

        return quantize_static_int8(source_path, model_name, workdir, options)
    if spec.name == "fp16":
        from server.optimize.methods.float16 import convert_float16

        return convert_float16(source_path, model_name, workdir, options)
    if spec.name == "graph":
        from server.optimize.methods.graph import optimize_graph

        return optimize_graph(source_path, workdir)
    if spec.name == "prune":
        from server.optimize.methods.pruning import prune

        return prune(source_path, model_name, workdir, spec.ratio)
    raise OptimizeError(f"method '{spec.name}' is not a single method")
