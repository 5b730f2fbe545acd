"""Ensembles: the averaged prediction, and the ensemble's validation curve from its members' predictions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradscope.ensembles import EpochPredictions, average_model, ensemble_evaluations, prediction_loss


def _member(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                             keras.layers.Dense(3, activation="softmax")])


def test_the_ensembles_prediction_is_the_mean_of_its_members():
    members = [_member(seed) for seed in range(3)]
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    each = np.stack([m.predict(x, verbose=0) for m in members])
    assert not np.allclose(each[0], each[1])  # different seeds, different members
    np.testing.assert_allclose(average_model(members).predict(x, verbose=0), each.mean(axis=0), atol=1e-6)


def _kept(predictions: list[np.ndarray], accuracy: list[float]) -> EpochPredictions:
    kept = EpochPredictions(x=None)
    kept.predictions = predictions
    kept.logs = [{"loss": 1 - a, "accuracy": a} for a in accuracy]
    kept.steps = [4 * (k + 1) for k in range(len(predictions))]
    return kept


def test_the_ensembles_curve_scores_the_averaged_prediction():
    y = np.eye(2)[[0, 1, 1]]
    # Each member gets one sample wrong; their mean gets all three right.
    a = _kept([np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])], [0.7])
    b = _kept([np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])], [0.9])
    record = ensemble_evaluations([a, b], y, "mse")
    mean = np.array([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert record.series("val_accuracy").tolist() == [1.0]
    assert record.series("val_loss")[0] == pytest.approx(np.mean((mean - y) ** 2))
    assert record.series("accuracy")[0] == pytest.approx(0.8)  # the members' mean training accuracy
    assert record.steps == [4] and record.epochs == [1]


def test_crossentropy_of_a_prediction_matches_keras():
    y = np.eye(3)[[0, 2]]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert prediction_loss(y, p, "crossentropy") == pytest.approx(expected, rel=1e-5)
