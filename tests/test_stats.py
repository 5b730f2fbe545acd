"""In-graph statistics against numpy on constructed tensors."""

import numpy as np
import pytest
import tensorflow as tf

from gradscope.stats import FORWARD_STATS, batch_accuracy, forward_stats, histogram, sq_norm


def test_forward_stats_tanh_and_relu():
    rng = np.random.default_rng(0)
    a = np.tanh(rng.normal(scale=3.0, size=(64, 20))).astype(np.float32)
    s = dict(zip(FORWARD_STATS, forward_stats(tf.constant(a), "tanh", 0.99).numpy()))
    assert s["act_mean"] == pytest.approx(a.mean(), rel=1e-5, abs=1e-7)
    assert s["act_std"] == pytest.approx(a.std(), rel=1e-5)
    assert s["saturation"] == pytest.approx(np.mean(np.abs(a) > 0.99))
    assert s["dact_mean"] == pytest.approx(np.mean(1 - a**2), rel=1e-5)
    assert s["dact_rms"] == pytest.approx(np.sqrt(np.mean((1 - a**2) ** 2)), rel=1e-5)
    assert np.isnan(s["dead"])
    r = np.maximum(rng.normal(size=(64, 20)), 0).astype(np.float32)
    r[:, :5] = 0.0  # five dead units
    s = dict(zip(FORWARD_STATS, forward_stats(tf.constant(r), "relu", 0.99).numpy()))
    assert s["dead"] == pytest.approx(5 / 20)
    assert s["dact_mean"] == pytest.approx(np.mean(r > 0))
    assert np.isnan(s["saturation"])


def test_sigmoid_saturation_counts_both_tails():
    a = tf.constant([[0.001, 0.5, 0.999, 0.3]])
    stats = dict(zip(FORWARD_STATS, forward_stats(a, "sigmoid", 0.99).numpy()))
    assert stats["saturation"] == pytest.approx(0.5)


def test_histogram_counts_and_range():
    a = tf.constant([[-1.0, -0.5, 0.0, 0.5, 0.99]])
    counts, rng = histogram(a, "tanh", 4)
    assert rng.numpy().tolist() == [-1.0, 1.0]
    assert counts.numpy().tolist() == np.histogram([-1, -0.5, 0, 0.5, 0.99], bins=4, range=(-1, 1))[0].tolist()


def test_sq_norm_and_accuracy():
    assert float(sq_norm(tf.constant([[3.0, 4.0]]))) == 25.0
    y = tf.constant([[0, 1, 0], [1, 0, 0]], tf.float32)
    p = tf.constant([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    assert float(batch_accuracy(y, p)) == 0.5
    assert float(batch_accuracy(tf.constant([1, 1]), p)) == 1.0
