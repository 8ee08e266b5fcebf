"""An MLP with trained weights, for figures where random weights would mislead (pruning).

The task is synthetic but real learning: 10 classes, each a Gaussian cloud around its own random
centre in 256 dims, overlapping enough that the classes are not trivially apart. The network
(256 → 1024 → 1024 → 10, ReLU, as model_repo's MLP) is trained with plain numpy: minibatch SGD with
momentum and weight decay on softmax cross-entropy, seeded, a few seconds per epoch on one core.
"""

from __future__ import annotations

import numpy as np
import onnx

from scripts import onnx_models

WIDTHS = (256, 1024, 1024, 10)
CLASSES = 10
NOISE = 3.0


def task(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [count, 256] FP32, labels [count]) from the fixed class centres."""
    centres = np.random.default_rng(1234).standard_normal((CLASSES, WIDTHS[0]))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    inputs = centres[labels] + NOISE * rng.standard_normal((count, WIDTHS[0]))
    return inputs.astype(np.float32), labels


def train(epochs: int = 3, samples: int = 20_000, batch: int = 128, seed: int = 0) -> tuple[onnx.ModelProto, float]:
    """(the trained model, its accuracy on 2,000 held-out samples)."""
    layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in onnx_models.mlp_weights(WIDTHS, seed)]
    velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
    inputs, labels = task(samples, seed + 1)
    rng = np.random.default_rng(seed + 2)
    for epoch in range(epochs):
        rate = 0.05 / (1 + epoch)
        order = rng.permutation(samples)
        for start in range(0, samples, batch):
            index = order[start : start + batch]
            gradients = _gradients(layers, inputs[index], labels[index])
            for i, ((w, b), (dw, db)) in enumerate(zip(layers, gradients)):
                vw, vb = velocity[i]
                vw[:] = 0.9 * vw - rate * (dw + 5e-4 * w)
                vb[:] = 0.9 * vb - rate * db
                layers[i] = (w + vw, b + vb)
    held_out, truth = task(2000, seed + 3)
    accuracy = float(np.mean(_forward(layers, held_out)[-1].argmax(-1) == truth))
    return onnx_models.mlp_from(layers), accuracy


def _forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    activations = [x]
    for i, (w, b) in enumerate(layers):
        z = activations[-1] @ w + b
        activations.append(np.maximum(z, 0) if i < len(layers) - 1 else z)
    return activations


def _gradients(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    activations = _forward(layers, x)
    logits = activations[-1] - activations[-1].max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    delta = probabilities
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    gradients = []
    for i in reversed(range(len(layers))):
        gradients.append((activations[i].T @ delta, delta.sum(axis=0)))
        if i:
            delta = (delta @ layers[i][0].T) * (activations[i] > 0)
    return gradients[::-1]
