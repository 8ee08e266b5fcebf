"""ortserve: an ONNX Runtime inference server that speaks Triton's protocol."""

__version__ = "0.1.0"
