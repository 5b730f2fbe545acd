"""Shared tiny models and data for the tests: small enough to train in seconds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Hypothesis keeps its example database in ./.hypothesis by default: keep it
# out of the repository, for every property test.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="gradscope-hypothesis-"))

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and the float32 policy."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits: real images, always available offline."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = np.eye(10, dtype="float32")[d.target]
    return x, y


@pytest.fixture
def toy():
    """A small regression-free classification batch (random but fixed)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 96)]
    return x, y


@pytest.fixture
def tape_norms():
    """The reference gradient computation, as a function."""
    return tape_layer_grad_norms


def tape_layer_grad_norms(model, x, y, loss_fn, var_groups):
    """Independent reference: per-layer L2 gradient norms via one tf.GradientTape."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = tf.reduce_mean(loss_fn(y, pred))
    grads = tape.gradient(loss, model.trainable_variables)
    return [
        float(np.sqrt(sum(np.sum(np.square(grads[i].numpy().astype(np.float64))) for i in group)))
        for group in var_groups
    ], float(loss)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes (None for a folder), by path inside ``folder``."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def umask():
    """Sets the process umask for one test, and restores it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.fixture
def system_tmp(tmp_path, monkeypatch):
    """The system temporary folder, moved inside the test's own (where rescued records go)."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
