"""``ortserve optimize``: quantize, convert and prune a served model into a new repository version.

Runs in its own process (the CLI), never inside the serving event loop. One run reads a version,
produces a candidate model with one method, measures accuracy against the source on the same
samples and speed in one interleaved run, applies the accuracy gate and, when it passes, writes the
next version directory (``model.onnx`` + ``optimization.json``) with one atomic rename.
"""
