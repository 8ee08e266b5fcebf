"""What serves: the state table of models and versions, the swap policy, the Servable seam and
its ONNX kind, and the manager that loads, swaps, drains and unloads (TF Serving's Manager)."""
