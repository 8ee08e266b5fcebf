"""Structured pruning on real ONNX graphs: the chains found, the layers really shrunk, and units
that carry nothing removed without changing a single output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from scripts import onnx_models
from server.optimize.failure import OptimizeError
from server.optimize.methods.prune_chains import find_chains
from server.optimize.methods.pruning import prune


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor).copy() for tensor in model.graph.initializer}


def with_weights(model: onnx.ModelProto, changed: dict[str, np.ndarray]) -> onnx.ModelProto:
    for position, tensor in enumerate(model.graph.initializer):
        if tensor.name in changed:
            model.graph.initializer[position].CopyFrom(numpy_helper.from_array(changed[tensor.name], tensor.name))
    return model


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_mlp_units_that_pass_nothing_on_are_removed_without_changing_outputs(tmp_path: Path) -> None:
    model = onnx_models.mlp(widths=(32, 64, 64, 5))
    w = weights(model)
    rng = np.random.default_rng(0)
    silent = {layer: rng.choice(64, 16, replace=False) for layer in (1, 2)}
    # A hidden unit whose outgoing weights are all zero contributes nothing downstream.
    w["w1"][silent[1], :] = 0.0
    w["w2"][silent[2], :] = 0.0
    source = tmp_path / "mlp.onnx"
    onnx.save(with_weights(model, {"w1": w["w1"], "w2": w["w2"]}), str(source))

    candidate = prune(source, "mlp", tmp_path, 0.25)

    pruned = weights(onnx.load(str(candidate.path)))
    assert {name: pruned[name].shape for name in ("w0", "b0", "w1", "b1", "w2", "b2")} == {
        "w0": (32, 48),
        "b0": (48,),
        "w1": (48, 48),
        "b1": (48,),
        "w2": (48, 5),
        "b2": (5,),
    }
    kept = np.setdiff1d(np.arange(64), silent[1])
    assert np.array_equal(pruned["w0"], w["w0"][:, kept])  # the surviving units, in their order
    feeds = {"input": rng.standard_normal((8, 32)).astype(np.float32)}
    np.testing.assert_allclose(run(candidate.path, feeds)[0], run(source, feeds)[0], rtol=1e-5, atol=1e-5)
    assert [(c["before"], c["after"]) for c in candidate.settings["chains"]] == [(64, 48), (64, 48)]


def test_conv_channels_are_removed_from_both_convolutions(tmp_path: Path) -> None:
    model = onnx_models.conv_net(channels=(8, 16))
    w = weights(model)
    w["conv2.w"][:, [1, 5], :, :] = 0.0  # conv2 reads nothing from channels 1 and 5 of conv1
    source = tmp_path / "cnn.onnx"
    onnx.save(with_weights(model, {"conv2.w": w["conv2.w"]}), str(source))

    candidate = prune(source, "cnn", tmp_path, 0.25)

    pruned = weights(onnx.load(str(candidate.path)))
    assert pruned["conv1.w"].shape == (6, 3, 3, 3) and pruned["conv1.b"].shape == (6,)
    assert pruned["conv2.w"].shape == (16, 6, 3, 3)  # its own output channels feed a pool: not a chain
    feeds = {"image": np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(candidate.path, feeds)[0], run(source, feeds)[0], rtol=1e-5, atol=1e-6)


def test_transformer_feed_forward_blocks_are_chains_and_attention_is_not() -> None:
    model = onnx_models.encoder(vocab=100, seq=8, width=32, heads=4, layers=2, ffn=128)

    chains = find_chains(model.graph)

    # Through the unfused GELU (Div, Erf, Add, Mul, Mul: element-wise, scalar constants only);
    # the attention projections end in Reshape or a residual Add and are left alone.
    assert [(c.producer_weight.name, c.consumer_weight.name, c.width) for c in chains] == [
        ("layer0.ffn1.w", "layer0.ffn2.w", 128),
        ("layer1.ffn1.w", "layer1.ffn2.w", 128),
    ]
    assert [v.name for v in chains[0].channel_vectors] == ["layer0.ffn1.b"]


def test_a_hidden_layer_used_twice_is_not_pruned(tmp_path: Path) -> None:
    source = tmp_path / "branched.onnx"
    onnx.save(onnx_models.branched_mlp(), str(source))

    with pytest.raises(OptimizeError, match="model 'branched' has no layers to prune"):
        prune(source, "branched", tmp_path, 0.3)
