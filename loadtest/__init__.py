"""Load generators, the raw-ONNX-Runtime ceiling, the bare-gRPC floor and benchmark reports."""
