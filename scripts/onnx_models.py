"""Builders for the real ONNX models that ortserve ships and tests with (onnx.helper graphs).

Imported by scripts/build_model_repo.py (the bundled model_repo/) and by the tests, which build
their own repositories at run time. Weights come from a seeded generator, so builds repeat.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9

# numpy dtype name → ONNX element type, for every wire datatype ORT can carry.
ONNX_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}

Dims = list[int | str]


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, initializers: list | None = None, name: str = "g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ortserve")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def tensor(name: str, datatype: str, dims: Dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_TYPES[datatype], dims)


def simple() -> onnx.ModelProto:
    """Triton's first example: INT32 INPUT0, INPUT1 [batch, 16] → OUTPUT0 = sum, OUTPUT1 = difference."""
    return _model(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]), helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        [tensor("INPUT0", "INT32", ["batch", 16]), tensor("INPUT1", "INT32", ["batch", 16])],
        [tensor("OUTPUT0", "INT32", ["batch", 16]), tensor("OUTPUT1", "INT32", ["batch", 16])],
        name="simple",
    )


def mlp(widths: tuple[int, ...] = (256, 1024, 1024, 10), seed: int = 0) -> onnx.ModelProto:
    """A ReLU multilayer perceptron: FP32 input [batch, 256] → output [batch, 10]."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "input"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        last = layer == len(widths) - 2
        nodes.append(helper.make_node("MatMul", [current, f"w{layer}"], [f"mm{layer}"]))
        nodes.append(helper.make_node("Add", [f"mm{layer}", f"b{layer}"], ["output" if last else f"pre{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{layer}"], [f"act{layer}"]))
            current = f"act{layer}"
    return _model(
        nodes, [tensor("input", "FP32", ["batch", widths[0]])], [tensor("output", "FP32", ["batch", widths[-1]])], initializers, "mlp"
    )


def identity(datatype: str, dims: Dims, input_name: str = "INPUT0", output_name: str = "OUTPUT0") -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 for any datatype (string identity for BYTES)."""
    return _model(
        [helper.make_node("Identity", [input_name], [output_name])],
        [tensor(input_name, datatype, dims)],
        [tensor(output_name, datatype, dims)],
        name=f"identity_{datatype.lower()}",
    )


def add_constant(datatype: str, dims: Dims, constant: float) -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 + constant: a model whose answers change with its weights."""
    value = np.array(constant, dtype=helper.tensor_dtype_to_np_dtype(ONNX_TYPES[datatype]))
    return _model(
        [helper.make_node("Add", ["INPUT0", "c"], ["OUTPUT0"])],
        [tensor("INPUT0", datatype, dims)],
        [tensor("OUTPUT0", datatype, dims)],
        [numpy_helper.from_array(value, "c")],
        name="add_constant",
    )


def state_update() -> onnx.ModelProto:
    """A recurrent-style model whose first dim is not a batch dim: state [2, seq, 128] + x [seq, 128]."""
    return _model(
        [helper.make_node("Add", ["state", "x"], ["new_state"])],
        [tensor("state", "FP32", [2, "seq", 128]), tensor("x", "FP32", ["seq", 128])],
        [tensor("new_state", "FP32", [2, "seq", 128])],
        name="state_update",
    )


def scalar_scale() -> onnx.ModelProto:
    """A scalar input: y[n] = x[n] * scale, with scale of shape []."""
    return _model(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        [tensor("x", "FP32", ["n"]), tensor("scale", "FP32", [])],
        [tensor("y", "FP32", ["n"])],
        name="scalar_scale",
    )


def save(model: onnx.ModelProto, path: str) -> None:
    onnx.save_model(model, path)


def slow_echo(depth: int = 400, width: int = 1024) -> onnx.ModelProto:
    """FP32 x [batch, 1] → y = x, after ``depth`` real [width, width] MatMuls per row.

    Tiny on the wire, slow to compute: it holds requests in the queue for scheduler tests without
    shipping large tensors. How slow depends on the CPU, so tests measure it rather than assume it
    (tests/integration/slow_work.py).
    """
    spread = np.ones((1, width), np.float32)
    gather = np.full((width, 1), 1.0 / width, np.float32)
    nodes = [helper.make_node("MatMul", ["x", "spread"], ["h0"])]
    for layer in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", "eye"], [f"h{layer + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "gather"], ["y"]))
    initializers = [
        numpy_helper.from_array(spread, "spread"),
        numpy_helper.from_array(np.eye(width, dtype=np.float32), "eye"),
        numpy_helper.from_array(gather, "gather"),
    ]
    return _model(nodes, [tensor("x", "FP32", ["batch", 1])], [tensor("y", "FP32", ["batch", 1])], initializers, "slow_echo")


def gather_rows(table_rows: int = 10, width: int = 4) -> onnx.ModelProto:
    """INT64 index [batch, 1] → row [batch, 1, width] of a fixed table (row i holds the value i).

    An index outside the table makes ONNX Runtime itself fail at run time, which is how the
    tests cause a failure inside one batch.
    """
    table = np.repeat(np.arange(table_rows, dtype=np.float32)[:, None], width, axis=1)
    return _model(
        [helper.make_node("Gather", ["table", "index"], ["row"], axis=0)],
        [tensor("index", "INT64", ["batch", 1])],
        [tensor("row", "FP32", ["batch", 1, width])],
        [numpy_helper.from_array(table, "table")],
        name="gather_rows",
    )


def classifier(features: int = 4, classes: int = 5, seed: int = 1) -> onnx.ModelProto:
    """FP32 features [batch, features] → softmax probabilities "probs" [batch, classes].

    A real (if small) classifier for Triton's classification extension: class scores that differ
    per input, so the top-k order is checkable against numpy.
    """
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    return _model(
        [helper.make_node("MatMul", ["features", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        [tensor("features", "FP32", ["batch", features])],
        [tensor("probs", "FP32", ["batch", classes])],
        [numpy_helper.from_array(weights, "w")],
        name="classifier",
    )


def ragged_sum() -> onnx.ModelProto:
    """A ragged-batch model: every request's FP32 elements arrive flattened into one "x" [-1];
    Triton's batch inputs "offsets" (accumulated element counts, with a leading zero) and
    "counts" (element counts) say where each request's run starts. Outputs, one per request:
    "sum" of its elements and "count" of them.
    """
    large = numpy_helper.from_array(np.array([2**31 - 1], np.int64), "large")
    nodes = [
        helper.make_node("Concat", ["zero", "x"], ["padded"], axis=0),
        helper.make_node("CumSum", ["padded", "axis"], ["running"]),
        helper.make_node("Slice", ["offsets", "one", "large"], ["ends"]),
        helper.make_node("Slice", ["offsets", "start", "minus_one"], ["starts"]),
        helper.make_node("Gather", ["running", "ends"], ["upper"], axis=0),
        helper.make_node("Gather", ["running", "starts"], ["lower"], axis=0),
        helper.make_node("Sub", ["upper", "lower"], ["sum"]),
        helper.make_node("Cast", ["counts"], ["count"], to=TensorProto.FLOAT),
    ]
    initializers = [
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(np.array(0, np.int64), "axis"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        large,
    ]
    return _model(
        nodes,
        [tensor("x", "FP32", ["elements"]), tensor("offsets", "INT32", ["requests_plus_one"]), tensor("counts", "INT32", ["requests"])],
        [tensor("sum", "FP32", ["requests"]), tensor("count", "FP32", ["requests"])],
        initializers,
        name="ragged_sum",
    )


def row_sum(datatype: str = "FP32") -> onnx.ModelProto:
    """x [batch, n] → sum [batch, 1]: a large input and a tiny output, so a benchmark of moving
    the input (loadtest/bench_cache_shm.py) is not a benchmark of sending the output back."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["sum"], keepdims=1)],
        [tensor("x", datatype, ["batch", "n"])],
        [tensor("sum", datatype, ["batch", 1])],
        [axes],
        name="row_sum",
    )
