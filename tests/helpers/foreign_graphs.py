"""Shared pieces of the foreign-exporter graphs (tests/converters/test_foreign*.py): a lively
prototype readout and a 3x3 'same' convolution in numpy."""

from __future__ import annotations

import numpy as np

HIDDEN = 32  # hidden width


def prototype_readout(rng, feats: np.ndarray, y: np.ndarray, scale: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A lively untrained-but-sensible 2-layer readout (so predictions vary by class and a
    wrong reading shows): hidden unit h is tuned to the centred mean of class ``h % 10``
    (plus noise), the output sums its class's units; returns (w1, b1, w2, b2)."""
    f = feats.reshape(len(feats), -1).astype(np.float64)
    means = np.stack([f[y == c].mean(0) for c in range(10)])
    means -= means.mean(0)
    means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
    w1 = scale * (means[np.arange(HIDDEN) % 10] + rng.normal(0, 0.3 / np.sqrt(f.shape[1]),
                                                        (HIDDEN, f.shape[1])))
    b1 = rng.normal(0.2, 0.05, HIDDEN)
    w2 = np.where(np.arange(HIDDEN)[None, :] % 10 == np.arange(10)[:, None], 1.0, -0.1)
    return w1, b1, w2 + rng.normal(0, 0.01, w2.shape), rng.normal(0, 0.01, 10)


def conv3x3_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((len(x), w.shape[0], 8, 8))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("bchw,oc->bohw", pad[:, :, dy:dy + 8, dx:dx + 8], w[:, :, dy, dx])
    return out + b[None, :, None, None]
