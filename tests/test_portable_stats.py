"""The statistics written once with keras.ops (gradscope/portable_stats.py).

TensorFlow's step sums the features its own way (`gradscope.stats`) and the
JAX step calls `forward_stats` here: both must give the statistics' plain
definitions, computed here with numpy in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gradscope import stats
from gradscope.portable_stats import FORWARD_STATS, batch_accuracy, forward_stats, histogram

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
    "relu": lambda s: np.maximum(s, 0),
    "relu6": lambda s: np.clip(s, 0, 6),
    "elu": lambda s: np.where(s > 0, s, np.exp(s) - 1),
    "softplus": lambda s: np.log1p(np.exp(s)),
    "linear": lambda s: s,
}


def _definitions(a: np.ndarray, activation: str, t: float) -> dict[str, float]:
    """The FORWARD_STATS of ``a`` from their definitions (NaN where one does not apply)."""
    out = {"act_mean": a.mean(), "act_std": a.std(), "nonfinite": 0.0}
    nan = float("nan")
    if activation == "tanh":
        d = 1 - a ** 2
        out.update(saturation=np.mean(np.abs(a) >= t), dead=nan, dact_mean=d.mean(), dact_rms=np.sqrt(np.mean(d ** 2)))
    elif activation == "sigmoid":
        d = a * (1 - a)
        out.update(saturation=np.mean((a >= t) | (a <= 1 - t)), dead=nan, dact_mean=d.mean(),
                   dact_rms=np.sqrt(np.mean(d ** 2)))
    elif activation in ("relu", "relu6"):
        d = ((a > 0) & (a < 6)) if activation == "relu6" else (a > 0)
        out.update(saturation=nan, dead=np.mean(np.all(a == 0, axis=0)), dact_mean=d.mean(),
                   dact_rms=np.sqrt(d.mean()))
    elif activation == "linear":
        out.update(saturation=nan, dead=nan, dact_mean=1.0, dact_rms=1.0)
    else:
        d = np.where(a > 0, 1.0, a + 1.0) if activation == "elu" else 1 - np.exp(-a)
        out.update(saturation=nan, dead=nan, dact_mean=d.mean(), dact_rms=np.sqrt(np.mean(d ** 2)))
    return out


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_both_backends_statistics_match_their_definitions(activation):
    rng = np.random.default_rng(3)
    s = rng.normal(scale=3.0, size=(64, 24)).astype(np.float32)
    s[:, :5] = -np.abs(s[:, :5])  # five units that never fire under a ReLU
    a = ACTIVATIONS[activation](s.astype(np.float64)).astype(np.float32)
    expected = _definitions(a.astype(np.float64), activation, 0.99)
    portable = np.asarray(forward_stats(a, activation, 0.99), np.float64)
    tensorflow = stats.forward_stats(tf.constant(a), activation, 0.99).numpy().astype(np.float64)
    for k, name in enumerate(FORWARD_STATS):
        for got in (portable[k], tensorflow[k]):
            if np.isnan(expected[name]):
                assert np.isnan(got), name
            else:
                assert got == pytest.approx(expected[name], rel=2e-5, abs=2e-6), name


def test_a_nonfinite_output_is_flagged():
    a = np.ones((4, 3), np.float32)
    a[1, 2] = np.nan
    assert float(forward_stats(a, "relu", 0.99)[FORWARD_STATS.index("nonfinite")]) == 1.0
    assert np.isnan(float(forward_stats(a, "relu", 0.99)[FORWARD_STATS.index("dead")]))


def test_histogram_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500).astype(np.float32)
    counts, bounds = histogram(a, "relu", 10)
    expected, _ = np.histogram(a, bins=10, range=(float(a.min()), float(a.max())))
    np.testing.assert_array_equal(np.asarray(counts), expected)
    assert np.asarray(bounds).tolist() == pytest.approx([a.min(), a.max()])


@pytest.mark.parametrize(("y_true", "y_pred", "expected"), [
    (np.array([[0, 1], [1, 0]]), np.array([[0.2, 0.8], [0.1, 0.9]]), 0.5),  # one-hot
    (np.array([1, 1, 0]), np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]), 1.0),  # integer labels
    (np.array([[1], [0]]), np.array([[0.7], [0.6]]), 0.5),  # one output, threshold 0.5
])
def test_batch_accuracy(y_true, y_pred, expected):
    assert float(batch_accuracy(y_true, y_pred.astype(np.float32))) == expected
    assert float(stats.batch_accuracy(y_true, y_pred.astype(np.float32))) == expected
