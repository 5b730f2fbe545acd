"""In-graph statistics against numpy on constructed tensors."""

import numpy as np
import pytest
import tensorflow as tf

from gradscope.stats import FORWARD_STATS, batch_accuracy, forward_stats, forward_stats_many, histogram, sq_norms


def test_forward_stats_tanh_and_relu():
    rng = np.random.default_rng(0)
    a = np.tanh(rng.normal(scale=3.0, size=(64, 20))).astype(np.float32)
    s = dict(zip(FORWARD_STATS, forward_stats(tf.constant(a), "tanh", 0.99).numpy(), strict=False))
    assert s["act_mean"] == pytest.approx(a.mean(), rel=1e-5, abs=1e-7)
    assert s["act_std"] == pytest.approx(a.std(), rel=1e-5)
    assert s["saturation"] == pytest.approx(np.mean(np.abs(a) > 0.99))
    assert s["dact_mean"] == pytest.approx(np.mean(1 - a**2), rel=1e-5)
    assert s["dact_rms"] == pytest.approx(np.sqrt(np.mean((1 - a**2) ** 2)), rel=1e-5)
    assert np.isnan(s["dead"])
    r = np.maximum(rng.normal(size=(64, 20)), 0).astype(np.float32)
    r[:, :5] = 0.0  # five dead units
    s = dict(zip(FORWARD_STATS, forward_stats(tf.constant(r), "relu", 0.99).numpy(), strict=False))
    assert s["dead"] == pytest.approx(5 / 20)
    assert s["dact_mean"] == pytest.approx(np.mean(r > 0))
    assert np.isnan(s["saturation"])


def test_sigmoid_saturation_counts_both_tails():
    a = tf.constant([[0.001, 0.5, 0.999, 0.3]])
    stats = dict(zip(FORWARD_STATS, forward_stats(a, "sigmoid", 0.99).numpy(), strict=False))
    assert stats["saturation"] == pytest.approx(0.5)


def test_histogram_counts_and_range():
    a = tf.constant([[-1.0, -0.5, 0.0, 0.5, 0.99]])
    counts, rng = histogram(a, "tanh", 4)
    assert rng.numpy().tolist() == [-1.0, 1.0]
    assert counts.numpy().tolist() == np.histogram([-1, -0.5, 0, 0.5, 0.99], bins=4, range=(-1, 1))[0].tolist()


def test_sq_norm_and_accuracy():
    assert sq_norms([tf.constant([[3.0, 4.0]])]).numpy().tolist() == [25.0]
    y = tf.constant([[0, 1, 0], [1, 0, 0]], tf.float32)
    p = tf.constant([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    assert float(batch_accuracy(y, p)) == 0.5
    assert float(batch_accuracy(tf.constant([1, 1]), p)) == 1.0


@pytest.mark.parametrize("shape", [(3,), (784, 1024), (5001,), (37, 129), (2, 3, 64, 64)])
def test_sq_norms_under_xla_equal_the_sum_of_squares(shape):
    # Under XLA big tensors are summed through a matrix product, with the
    # elements that do not fill a row of the product summed apart.
    t = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    xla = tf.function(lambda x: sq_norms([x, 2.0 * x]), jit_compile=True)(tf.constant(t)).numpy()
    exact = np.sum(t.astype(np.float64) ** 2)
    np.testing.assert_allclose(xla, [exact, 4 * exact], rtol=1e-5)


def test_sq_norms_under_xla_keep_non_finite_values():
    t = np.ones((64, 128), np.float32)
    t[3, 5] = np.nan
    got = tf.function(lambda x: sq_norms([x, tf.where(tf.math.is_nan(x), np.inf, x)]), jit_compile=True)(t)
    assert np.isnan(got[0]) and np.isinf(got[1])


def _numpy_stats(a, activation, t=0.99):
    """The FORWARD_STATS of a (batch, ...) array, straight from their definitions."""
    a = a.reshape(len(a), -1).astype(np.float64)
    nan = float("nan")
    derivative = {
        "tanh": 1 - a**2,
        "sigmoid": a * (1 - a),
        "relu": (a > 0).astype(float),
        "relu6": ((a > 0) & (a < 6)).astype(float),
        "elu": np.where(a > 0, 1.0, a + 1.0),
        "softplus": 1 - np.exp(-a),
        "linear": np.ones_like(a),
    }.get(activation)
    saturation = {"tanh": np.mean(np.abs(a) >= t), "sigmoid": np.mean((a >= t) | (a <= 1 - t))}.get(activation, nan)
    dead = np.mean(np.all(a <= 0, axis=0)) if activation in ("relu", "relu6") else nan
    dmean = derivative.mean() if derivative is not None else nan
    drms = np.sqrt(np.mean(derivative**2)) if derivative is not None else nan
    return [a.mean(), a.std(), saturation, dead, dmean, drms, 0.0]


_SAMPLES = {
    "tanh": lambda r: np.tanh(r.normal(scale=3.0, size=(32, 6, 5))),
    "sigmoid": lambda r: 1 / (1 + np.exp(-r.normal(scale=6.0, size=(32, 30)))),
    "relu": lambda r: np.maximum(r.normal(loc=-1.0, size=(32, 30)), 0),
    "relu6": lambda r: np.clip(r.normal(loc=3.0, scale=4.0, size=(32, 30)), 0, 6),
    "elu": lambda r: (lambda s: np.where(s > 0, s, np.exp(s) - 1))(r.normal(size=(32, 30))),
    "softplus": lambda r: np.log1p(np.exp(r.normal(size=(32, 30)))),
    "linear": lambda r: r.normal(size=(32, 30)),
    "swish": lambda r: r.normal(size=(32, 30)),
}


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("activation", list(_SAMPLES))
def test_forward_stats_match_their_definitions(activation, jit):
    a = _SAMPLES[activation](np.random.default_rng(1)).astype(np.float32)
    # Under XLA the batch sums are taken another way (see stats._column_sums).
    got = tf.function(lambda x: forward_stats(x, activation, 0.99), jit_compile=jit)(tf.constant(a)).numpy()
    np.testing.assert_allclose(got, _numpy_stats(a, activation), rtol=2e-5, atol=1e-6, equal_nan=True)


def test_forward_stats_many_keeps_layer_order_across_activations():
    rng = np.random.default_rng(2)
    names = ["relu", "tanh", "relu", "linear", "tanh"]
    outs = [_SAMPLES[n](rng).reshape(32, -1).astype(np.float32) for n in names]
    many = forward_stats_many([tf.constant(a) for a in outs], names, 0.99).numpy()
    for row, a, n in zip(many, outs, names, strict=False):
        np.testing.assert_allclose(row, _numpy_stats(a, n), rtol=2e-5, atol=1e-6, equal_nan=True)


def test_nonfinite_outputs_are_flagged():
    a = np.zeros((4, 3), np.float32)
    a[2, 1] = np.inf
    assert forward_stats(tf.constant(a), "relu", 0.99).numpy()[FORWARD_STATS.index("nonfinite")] == 1.0
    assert forward_stats(tf.constant(np.zeros((4, 3), np.float32)), "relu", 0.99).numpy()[-1] == 0.0
