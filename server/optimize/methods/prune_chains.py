"""Find the layer pairs that structured pruning may shrink.

A chain is a producer with weights (MatMul or Gemm; Conv with group 1) whose output channels flow
through element-wise nodes only (an activation, possibly several nodes such as an unfused GELU, a
bias, per-channel scales, BatchNormalization after a Conv) into exactly one consumer of the same
kind that reads them as its input channels. No tensor in between may be used anywhere else or
be a graph output: then removing a channel from both layers changes nothing but that channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

UNARY = frozenset(
    {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Erf"}
    | {"Gelu", "FastGelu", "Exp", "Neg", "Abs", "Identity", "Mish", "ThresholdedRelu", "Clip"}
)
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"})


@dataclass(frozen=True, slots=True)
class Axis:
    """An initializer and the axis of it that runs over the chain's channels."""

    name: str
    axis: int


@dataclass
class Chain:
    kind: str  # "dense" or "conv"
    producer: str  # node name, or its first output when it has none
    consumer: str
    width: int
    producer_weight: Axis
    consumer_weight: Axis
    # Biases, per-channel scales and BatchNormalization parameters: pruned along with the channels.
    channel_vectors: list[Axis] = field(default_factory=list)


class GraphIndex:
    """Who produces and who consumes each tensor, and the initializers, of one graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.outputs = {output.name for output in graph.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.constants: dict[str, onnx.TensorProto] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t

    def shape(self, name: str) -> tuple[int, ...] | None:
        tensor = self.initializers.get(name) or self.constants.get(name)
        return tuple(tensor.dims) if tensor is not None else None

    def only_user(self, name: str, node: onnx.NodeProto) -> bool:
        return [id(n) for n in self.consumers.get(name, [])] == [id(node)]


def find_chains(graph: onnx.GraphProto) -> list[Chain]:
    index = GraphIndex(graph)
    chains = []
    for node in graph.node:
        start = _producer(index, node)
        if start is not None:
            chain = _follow(index, node, *start)
            if chain is not None:
                chains.append(chain)
    return chains


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _weight(index: GraphIndex, node: onnx.NodeProto, position: int, rank: int | None) -> tuple[int, ...] | None:
    """The shape of the node's weight input when it is an initializer used by this node alone."""
    if len(node.input) <= position or node.input[position] not in index.initializers:
        return None
    shape = index.shape(node.input[position])
    if shape is None or (rank is not None and len(shape) != rank) or not index.only_user(node.input[position], node):
        return None
    return shape


def _producer(index: GraphIndex, node: onnx.NodeProto) -> tuple[str, int, Axis, list[Axis]] | None:
    """(kind, width, weight axis, biases) when ``node`` can start a chain."""
    if node.op_type == "MatMul" and (shape := _weight(index, node, 1, 2)):
        return "dense", shape[1], Axis(node.input[1], 1), []
    if node.op_type == "Gemm" and _attribute(node, "transA", 0) == 0 and (shape := _weight(index, node, 1, 2)):
        trans_b = _attribute(node, "transB", 0)
        width = shape[0] if trans_b else shape[1]
        biases = []
        if len(node.input) > 2 and node.input[2]:
            if _weight(index, node, 2, None) not in ((width,), (1, width)):
                return None
            biases.append(Axis(node.input[2], -1))
        return "dense", width, Axis(node.input[1], 0 if trans_b else 1), biases
    if node.op_type == "Conv" and _attribute(node, "group", 1) == 1 and (shape := _weight(index, node, 1, None)):
        biases = []
        if len(node.input) > 2 and node.input[2]:
            if _weight(index, node, 2, 1) != (shape[0],):
                return None
            biases.append(Axis(node.input[2], 0))
        return "conv", shape[0], Axis(node.input[1], 0), biases
    return None


def _consumer_weight(index: GraphIndex, node: onnx.NodeProto, kind: str, width: int) -> Axis | None:
    """The weight axis a consumer reads the chain's channels through, if it can end the chain."""
    if kind == "dense" and node.op_type == "MatMul" and (shape := _weight(index, node, 1, 2)) and shape[0] == width:
        return Axis(node.input[1], 0)
    if kind == "dense" and node.op_type == "Gemm" and _attribute(node, "transA", 0) == 0 and (shape := _weight(index, node, 1, 2)):
        trans_b = _attribute(node, "transB", 0)
        if (shape[1] if trans_b else shape[0]) == width:
            return Axis(node.input[1], 1 if trans_b else 0)
    if kind == "conv" and node.op_type == "Conv" and _attribute(node, "group", 1) == 1:
        shape = _weight(index, node, 1, None)
        if shape and len(shape) > 2 and shape[1] == width:
            return Axis(node.input[1], 1)
    return None


def _follow(index: GraphIndex, producer: onnx.NodeProto, kind: str, width: int, weight: Axis, vectors: list[Axis]) -> Chain | None:
    """Walk from the producer's output through element-wise nodes to the single consumer."""
    pending, seen = [producer.output[0]], set()
    needed: set[str] = set()  # tensors element-wise nodes also read: they must come from the chain
    consumer: onnx.NodeProto | None = None
    consumer_weight: Axis | None = None
    while pending:
        tensor = pending.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        users = index.consumers.get(tensor, [])
        if tensor in index.outputs or not users:
            return None
        for node in users:
            end = _consumer_weight(index, node, kind, width) if node.input[0] == tensor else None
            if end is not None:
                if (consumer is not None and consumer is not node) or len(users) != 1:
                    return None
                consumer, consumer_weight = node, end
                continue
            found = _elementwise_inputs(index, node, tensor, kind, width)
            if found is None or len(node.output) != 1:
                return None
            vectors += found[0]
            needed |= found[1]
            pending.append(node.output[0])
    if consumer is None or consumer_weight is None or not needed <= seen:
        return None
    return Chain(kind, _label(producer), _label(consumer), width, weight, consumer_weight, list(dict.fromkeys(vectors)))


def _elementwise_inputs(index: GraphIndex, node: onnx.NodeProto, tensor: str, kind: str, width: int) -> tuple[list[Axis], set[str]] | None:
    """(per-channel constants, computed tensors) a node in the chain also reads, or None when the
    node is not element-wise over the channels."""
    if node.op_type == "BatchNormalization" and kind == "conv" and node.input[0] == tensor:
        shapes = [_weight(index, node, position, 1) for position in range(1, 5)]
        return ([Axis(name, 0) for name in node.input[1:5]], set()) if all(s == (width,) for s in shapes) else None
    if node.op_type not in UNARY | BINARY:
        return None
    vectors, computed = [], set()
    for name in node.input:
        if not name or name == tensor:
            continue
        shape = index.shape(name)
        if shape is None:
            computed.add(name)
        elif not all(d == 1 for d in shape):  # a scalar is the same for every channel
            axis = _channel_axis(shape, kind, width)
            if axis is None or name not in index.initializers or not index.only_user(name, node):
                return None
            vectors.append(Axis(name, axis))
    return vectors, computed


def _channel_axis(shape: tuple[int, ...], kind: str, width: int) -> int | None:
    """The axis of a broadcast constant that runs over the channels ([C] or [1,..,C] for dense
    layers, [C,1,1] or [1,C,1,1] for convolutions)."""
    if kind == "dense":
        return len(shape) - 1 if shape[-1] == width and all(d == 1 for d in shape[:-1]) else None
    for axis, size in enumerate(shape):
        if size == width and all(d == 1 for i, d in enumerate(shape) if i != axis) and len(shape) - axis >= 3:
            return axis
    return None


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} -> {node.output[0]}"
