"""A multi-layer perceptron in NumPy: fully connected layers with ReLU between them, softmax
cross-entropy on top. All its parameters live in one flat buffer (pyoptim.flat.FlatBuffer), its
gradients in another with the same layout, so that an optimizer step is one kernel call."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..flat import FlatBuffer


class MLP:
    """MLP(sizes, rng, dtype=float32): layer widths from input to output, e.g. (64, 128, 64, 10).

    Layer l computes ``z = h @ W + b`` with W of shape (fan_in, fan_out); every layer but the
    last is followed by a ReLU. Initialization: W from N(0, 2 / fan_in) before a ReLU (He et
    al. 2015), N(0, 1 / fan_in) for the output layer (LeCun), biases zero.

    ``params`` and ``grads`` are FlatBuffers: views W0, b0, W1, b1, ...
    ``loss_and_grad(x, y)`` runs forward and backward on a batch and writes the gradient of the
    mean loss into ``grads``.
    """

    def __init__(self, sizes: Sequence[int], rng: np.random.Generator, dtype=np.float32):
        self.sizes = tuple(int(s) for s in sizes)
        if len(self.sizes) < 2:
            raise ValueError("an MLP needs at least an input and an output size")
        shapes = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        self.params = FlatBuffer(shapes, dtype)
        self.grads = self.params.zeros_like()
        last = self.n_layers - 1
        for i, (w, _) in enumerate(self.layers(self.params)):
            gain = 1.0 if i == last else 2.0
            w[...] = rng.standard_normal(w.shape) * np.sqrt(gain / w.shape[0])

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        return sum(v.size for v in self.params.views)

    @staticmethod
    def layers(buffer: FlatBuffer) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) of each layer, as views into a params or grads buffer."""
        views = buffer.views
        return list(zip(views[0::2], views[1::2]))

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        """The input of every layer, then the logits."""
        activations = [x]
        layers = self.layers(self.params)
        for i, (w, b) in enumerate(layers):
            z = activations[-1] @ w
            z += b
            if i < len(layers) - 1:
                np.maximum(z, 0, out=z)  # ReLU
            activations.append(z)
        return activations

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[-1]

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> float:
        """The mean cross-entropy of the batch (x, y); writes its gradient into ``grads``."""
        activations = self._forward(x)
        loss, probabilities = _cross_entropy(activations[-1], y)
        # d loss / d logits of the mean softmax cross-entropy: (softmax - one_hot) / batch
        dz = probabilities
        dz[np.arange(len(y)), y] -= 1
        dz /= len(y)
        layers = self.layers(self.params)
        grads = self.layers(self.grads)
        for i in reversed(range(self.n_layers)):
            h = activations[i]
            w = layers[i][0]
            dw, db = grads[i]
            np.matmul(h.T, dz, out=dw)
            np.sum(dz, axis=0, out=db)
            if i > 0:
                dh = dz @ w.T
                dh[h <= 0] = 0  # through the ReLU: h = max(z, 0) passes the gradient where z > 0
                dz = dh
        return loss

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on (x, y)."""
        logits = self.logits(x)
        loss, _ = _cross_entropy(logits, y)
        return loss, float(np.mean(np.argmax(logits, axis=1) == y))


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean of -log softmax(logits)[y], softmax(logits)), stable: logits shifted by their row
    maximum before exp."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_likelihood = shifted[np.arange(len(y)), y] - np.log(total[:, 0])
    return -float(np.mean(log_likelihood, dtype=np.float64)), exp / total
