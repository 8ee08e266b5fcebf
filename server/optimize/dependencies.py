"""The optional packages ``ortserve optimize`` needs, checked before any work starts."""

from __future__ import annotations

import importlib

from server.optimize.failure import OptimizeError

INSTALL_HINT = "pip install 'ortserve[optimize]'"
# module → the distribution that provides it
PACKAGES = {"onnx": "onnx", "onnxruntime.quantization": "onnxruntime", "onnxconverter_common": "onnxconverter-common"}


def require(*modules: str) -> None:
    """Raises OptimizeError naming the missing package and the extra that brings it."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(PACKAGES.get(module, module))
    if missing:
        raise OptimizeError(f"ortserve optimize needs {', '.join(missing)}: install the 'optimize' extra ({INSTALL_HINT})")
