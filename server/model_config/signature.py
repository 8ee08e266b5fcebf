"""The tensors an ONNX graph declares, as auto-complete and validation need them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GraphTensor:
    name: str
    # Wire datatype ("FP32", "BYTES", ...), or the ORT type string when it has no wire equivalent.
    datatype: str
    # -1 for a symbolic or unknown dim.
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GraphSignature:
    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]

    def input(self, name: str) -> GraphTensor | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> GraphTensor | None:
        return next((t for t in self.outputs if t.name == name), None)

    def supports_batching(self) -> bool:
        """Triton's rule: batching needs every input and output to have a dynamic first dim."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


def format_dims(dims: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"
