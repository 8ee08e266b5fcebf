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
    return mlp_from(mlp_weights(widths, seed))


def mlp_weights(widths: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (weight [fan_in, fan_out], bias [fan_out]) per layer, scaled by 1/sqrt(fan_in)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        layers.append((weight, (rng.standard_normal(fan_out) * 0.01).astype(np.float32)))
    return layers


def mlp_from(layers: list[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """The ReLU MLP with these weights: MatMul + Add per layer, ReLU between layers."""
    nodes, initializers = [], []
    current = "input"
    for layer, (weight, bias) in enumerate(layers):
        initializers += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        last = layer == len(layers) - 1
        nodes.append(helper.make_node("MatMul", [current, f"w{layer}"], [f"mm{layer}"]))
        nodes.append(helper.make_node("Add", [f"mm{layer}", f"b{layer}"], ["output" if last else f"pre{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{layer}"], [f"act{layer}"]))
            current = f"act{layer}"
    inputs, outputs = layers[0][0].shape[0], layers[-1][0].shape[1]
    return _model(nodes, [tensor("input", "FP32", ["batch", inputs])], [tensor("output", "FP32", ["batch", outputs])], initializers, "mlp")


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


def accumulator(width: int = 4, decay: float = 0.5, corrid: str | None = "UINT64", implicit: bool = True) -> onnx.ModelProto:
    """A stateful model whose output depends on every earlier input of its sequence, in order:
    state' = INPUT at the sequence's START, else decay * state + INPUT; OUTPUT = state'.

    ``implicit``: the state is the sequence batcher's (inputs INPUT [batch, width], START and
    READY FP32 [batch, 1], INPUT_STATE; output OUTPUT_STATE), and with ``corrid`` ("UINT64" or
    "BYTES") a CORRID [batch, 1] control input is echoed as CORRID_OUT. Otherwise the client
    ships the state itself: inputs INPUT, STATE_IN, START; outputs OUTPUT, STATE_OUT.
    """
    state_in, state_out = ("INPUT_STATE", "OUTPUT_STATE") if implicit else ("STATE_IN", "STATE_OUT")
    nodes = [
        helper.make_node("Mul", [state_in, "decay"], ["decayed"]),
        helper.make_node("Add", ["decayed", "INPUT"], ["continued"]),
        helper.make_node("Cast", ["START"], ["starting"], to=TensorProto.BOOL),
        helper.make_node("Where", ["starting", "INPUT", "continued"], ["next"]),
        helper.make_node("Identity", ["next"], ["OUTPUT"]),
        helper.make_node("Identity", ["next"], [state_out]),
    ]
    inputs = [tensor("INPUT", "FP32", ["batch", width]), tensor("START", "FP32", ["batch", 1]), tensor(state_in, "FP32", ["batch", width])]
    outputs = [tensor("OUTPUT", "FP32", ["batch", width]), tensor(state_out, "FP32", ["batch", width])]
    if implicit:
        # READY is read (so a not-ready row is visible in the graph) but changes nothing.
        nodes.append(helper.make_node("Identity", ["READY"], ["READY_OUT"]))
        inputs.append(tensor("READY", "FP32", ["batch", 1]))
        outputs.append(tensor("READY_OUT", "FP32", ["batch", 1]))
        if corrid is not None:
            nodes.append(helper.make_node("Identity", ["CORRID"], ["CORRID_OUT"]))
            inputs.append(tensor("CORRID", corrid, ["batch", 1]))
            outputs.append(tensor("CORRID_OUT", corrid, ["batch", 1]))
    decay_value = numpy_helper.from_array(np.array(decay, np.float32), "decay")
    return _model(nodes, inputs, outputs, [decay_value], name="accumulator")


def indexed_accumulator(table_rows: int = 10) -> onnx.ModelProto:
    """A stateful model that ONNX Runtime itself fails on a bad input: state' = state + table[INPUT]
    (INPUT INT64 [batch, 1], an index; INPUT_STATE / OUTPUT_STATE FP32 [batch, 1]; START resets).
    An index outside the table fails the batch, which is how tests fail a sequence's instance."""
    table = np.arange(table_rows, dtype=np.float32).reshape(table_rows, 1)
    nodes = [
        helper.make_node("Gather", ["table", "INPUT"], ["picked3"], axis=0),
        helper.make_node("Squeeze", ["picked3", "axis1"], ["picked"]),
        helper.make_node("Add", ["INPUT_STATE", "picked"], ["continued"]),
        helper.make_node("Cast", ["START"], ["starting"], to=TensorProto.BOOL),
        helper.make_node("Where", ["starting", "picked", "continued"], ["next"]),
        helper.make_node("Identity", ["next"], ["OUTPUT"]),
        helper.make_node("Identity", ["next"], ["OUTPUT_STATE"]),
    ]
    return _model(
        nodes,
        [tensor("INPUT", "INT64", ["batch", 1]), tensor("START", "FP32", ["batch", 1]), tensor("INPUT_STATE", "FP32", ["batch", 1])],
        [tensor("OUTPUT", "FP32", ["batch", 1]), tensor("OUTPUT_STATE", "FP32", ["batch", 1])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axis1")],
        name="indexed_accumulator",
    )


def text_line_preprocess(height: int = 48, width: int = 192) -> onnx.ModelProto:
    """An OCR classifier's preprocessing as a graph: BGR UINT8 "image" [batch, height, width, 3]
    → FP32 "x" [batch, 3, height, width] scaled to [-1, 1] ((pixel / 255 - 0.5) / 0.5, rapidocr's
    normalisation) in channel-first layout."""
    constants = [
        numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pixels", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "one"], ["centred"]),
        helper.make_node("Transpose", ["centred"], ["x"], perm=[0, 3, 1, 2]),
    ]
    return _model(
        nodes,
        [tensor("image", "UINT8", ["batch", height, width, 3])],
        [tensor("x", "FP32", ["batch", 3, height, width])],
        constants,
        name="text_line_preprocess",
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


class _Layers:
    """Collects the nodes and seeded initializers of a graph built layer by layer."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.constant(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, **attributes: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def linear(self, prefix: str, x: str, fan_in: int, fan_out: int) -> str:
        """x @ W + b (MatMul then Add: the pattern quantizers and ORT's fusions recognise)."""
        w = self.weight(f"{prefix}.w", (fan_in, fan_out), 1.0 / np.sqrt(fan_in))
        b = self.weight(f"{prefix}.b", (fan_out,), 0.02)
        return self.node("Add", [self.node("MatMul", [x, w], f"{prefix}.mm"), b], f"{prefix}.out")

    def layer_norm(self, prefix: str, x: str, width: int) -> str:
        gamma = self.constant(f"{prefix}.gamma", (1.0 + 0.05 * self.rng.standard_normal(width)).astype(np.float32))
        beta = self.weight(f"{prefix}.beta", (width,), 0.02)
        return self.node("LayerNormalization", [x, gamma, beta], f"{prefix}.out", axis=-1, epsilon=1e-5)

    def gelu(self, prefix: str, x: str) -> str:
        """0.5 x (1 + erf(x / sqrt 2)): opset 17 has no Gelu op; ORT fuses this pattern into one."""
        scaled = self.node("Div", [x, self.constant(f"{prefix}.sqrt2", np.array(np.sqrt(2.0), np.float32))], f"{prefix}.scaled")
        plus_one = self.node("Add", [self.node("Erf", [scaled], f"{prefix}.erf"), "one"], f"{prefix}.plus_one")
        half = self.node("Mul", [x, self.constant(f"{prefix}.half", np.array(0.5, np.float32))], f"{prefix}.half_x")
        return self.node("Mul", [half, plus_one], f"{prefix}.out")


def _attention(g: _Layers, prefix: str, x: str, width: int, heads: int) -> str:
    """Multi-head self-attention over x [batch, seq, width] (no mask: every position attends to all)."""
    head_dim = width // heads
    split = g.constant(f"{prefix}.split_shape", np.array([0, 0, heads, head_dim], np.int64))
    projected = {}
    for part in ("q", "k", "v"):
        flat = g.linear(f"{prefix}.{part}", x, width, width)
        heads_view = g.node("Reshape", [flat, split], f"{prefix}.{part}.heads")
        perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]  # K comes transposed for Q @ K^T
        projected[part] = g.node("Transpose", [heads_view], f"{prefix}.{part}.t", perm=perm)
    scores = g.node("MatMul", [projected["q"], projected["k"]], f"{prefix}.scores")
    scale = g.constant(f"{prefix}.scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    weights = g.node("Softmax", [g.node("Mul", [scores, scale], f"{prefix}.scaled")], f"{prefix}.probs", axis=-1)
    context = g.node("MatMul", [weights, projected["v"]], f"{prefix}.context")
    merged = g.node("Transpose", [context], f"{prefix}.merged", perm=[0, 2, 1, 3])
    joined = g.node("Reshape", [merged, g.constant(f"{prefix}.join_shape", np.array([0, 0, width], np.int64))], f"{prefix}.joined")
    return g.linear(f"{prefix}.o", joined, width, width)


def encoder(
    vocab: int = 8000, seq: int = 64, width: int = 384, heads: int = 6, layers: int = 4, ffn: int = 1536, seed: int = 3
) -> onnx.ModelProto:
    """A BERT-style transformer encoder: INT64 token ids [batch, seq] → FP32 hidden states
    "last_hidden_state" [batch, seq, width] and "pooled" [batch, width] (tanh of the first token).

    Token and position embeddings, then per layer: multi-head self-attention, residual, LayerNorm,
    a GELU feed-forward block, residual, LayerNorm (post-norm, as BERT). Seeded random weights of
    BERT's scale; about 10 M parameters with the defaults.
    """
    g = _Layers(seed)
    g.constant("one", np.array(1.0, np.float32))
    tokens = g.node("Gather", [g.weight("embed.tokens", (vocab, width), 0.5), "input_ids"], "embed.gathered", axis=0)
    positions = g.weight("embed.positions", (1, seq, width), 0.1)
    hidden = g.layer_norm("embed.norm", g.node("Add", [tokens, positions], "embed.sum"), width)
    for layer in range(layers):
        prefix = f"layer{layer}"
        attended = _attention(g, f"{prefix}.attn", hidden, width, heads)
        hidden = g.layer_norm(f"{prefix}.norm1", g.node("Add", [hidden, attended], f"{prefix}.res1"), width)
        inner = g.gelu(f"{prefix}.gelu", g.linear(f"{prefix}.ffn1", hidden, width, ffn))
        hidden = g.layer_norm(
            f"{prefix}.norm2", g.node("Add", [hidden, g.linear(f"{prefix}.ffn2", inner, ffn, width)], f"{prefix}.res2"), width
        )
    g.node("Identity", [hidden], "last_hidden_state")
    first = g.node("Gather", [hidden, g.constant("first", np.array(0, np.int64))], "first_token", axis=1)
    g.node("Tanh", [g.linear("pool", first, width, width)], "pooled")
    return _model(
        g.nodes,
        [tensor("input_ids", "INT64", ["batch", seq])],
        [tensor("last_hidden_state", "FP32", ["batch", seq, width]), tensor("pooled", "FP32", ["batch", width])],
        g.initializers,
        "encoder",
    )


def conv_net(channels: tuple[int, int] = (8, 16), classes: int = 10, size: int = 16, seed: int = 4) -> onnx.ModelProto:
    """A small CNN: FP32 "image" [batch, 3, size, size] → Conv 3x3 → ReLU → Conv 3x3 → ReLU →
    global average pool → Gemm → softmax "probs" [batch, classes]."""
    g = _Layers(seed)
    first, second = channels
    hidden = g.node(
        "Conv", ["image", g.weight("conv1.w", (first, 3, 3, 3), 0.4), g.weight("conv1.b", (first,), 0.1)], "conv1", pads=[1] * 4
    )
    hidden = g.node("Relu", [hidden], "relu1")
    w2 = g.weight("conv2.w", (second, first, 3, 3), 1.0 / np.sqrt(first * 9))
    hidden = g.node("Relu", [g.node("Conv", [hidden, w2, g.weight("conv2.b", (second,), 0.1)], "conv2", pads=[1] * 4)], "relu2")
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [hidden], "pool")], "flat")
    logits = g.node("Gemm", [pooled, g.weight("fc.w", (classes, second), 1.0), g.weight("fc.b", (classes,), 0.1)], "logits", transB=1)
    g.node("Softmax", [logits], "probs", axis=-1)
    return _model(
        g.nodes,
        [tensor("image", "FP32", ["batch", 3, size, size])],
        [tensor("probs", "FP32", ["batch", classes])],
        g.initializers,
        "conv_net",
    )


def branched_mlp(width: int = 64, seed: int = 5) -> onnx.ModelProto:
    """FP32 x [batch, 32] → hidden ReLU layer → "y" [batch, 8], the hidden layer also an output
    "features": the hidden units are used twice, so no layer pair can be pruned."""
    g = _Layers(seed)
    hidden = g.node("Relu", [g.linear("l1", "x", 32, width)], "features")
    g.linear("l2", hidden, width, 8)
    g.node("Identity", ["l2.out"], "y")
    return _model(
        g.nodes,
        [tensor("x", "FP32", ["batch", 32])],
        [tensor("y", "FP32", ["batch", 8]), tensor("features", "FP32", ["batch", width])],
        g.initializers,
        "branched_mlp",
    )


def celu_head(seed: int = 6) -> onnx.ModelProto:
    """FP32 x [batch, 16] → MatMul → Celu → "y" [batch, 16]. ONNX defines Celu for FP32 only,
    so a float16 conversion that does not keep Celu in FP32 makes an invalid model."""
    g = _Layers(seed)
    g.node("Celu", [g.linear("l1", "x", 16, 16)], "y")
    return _model(g.nodes, [tensor("x", "FP32", ["batch", 16])], [tensor("y", "FP32", ["batch", 16])], g.initializers, "celu_head")


def unary(op: str, datatype: str, dims: Dims) -> onnx.ModelProto:
    """OUTPUT0 = op(INPUT0): one node, for probing which kernels ONNX Runtime has."""
    return _model(
        [helper.make_node(op, ["INPUT0"], ["OUTPUT0"])],
        [tensor("INPUT0", datatype, dims)],
        [tensor("OUTPUT0", datatype, dims)],
        name=f"{op.lower()}_{datatype.lower()}",
    )
