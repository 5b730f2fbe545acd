"""Ensembles: members trained alone with different seeds, judged by their averaged prediction.

`EpochPredictions` keeps one member's validation predictions at each epoch
end; `ensemble_evaluations` averages them over the members into the
ensemble's `Evaluations` (its validation curve) and `average_model` makes one
Keras model that predicts the members' mean.

Example:

>>> import numpy as np, keras
>>> members = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")]) for _ in range(3)]
>>> x = np.ones((4, 3), np.float32)
>>> mean = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
>>> bool(np.allclose(average_model(members).predict(x, verbose=0), mean, atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from gradscope.evaluations import METRICS, Evaluations


def average_model(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose prediction is the mean of the members' (they must share their input shape).

    Args:
        members: the trained members.
        name: the model's name. Defaults to `"ensemble"`.
    """
    inputs = keras.Input(tuple(members[0].inputs[0].shape[1:]), name="pixels")
    outputs = [member(inputs) for member in members]
    return keras.Model(inputs, keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0],
                       name=name)


class EpochPredictions(keras.callbacks.Callback):
    """Keeps the model's predictions on ``x`` and the epoch's logs at each epoch end.

    Args:
        x: the inputs to predict (the validation images).
        session: the `RecordingSession` of the model's monitor, paused while predicting so that
            prediction adds nothing to the gradient record. Defaults to `None`.
    """

    def __init__(self, x: Any, session: Any = None) -> None:
        super().__init__()
        self.x, self.session = x, session
        self.predictions: list[np.ndarray] = []
        self.logs: list[dict[str, float]] = []
        self.steps: list[int] = []
        self._done = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._done += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.session is not None:
            with self.session.paused():
                predicted = self.model.predict(self.x, batch_size=512, verbose=0)
        else:
            predicted = self.model.predict(self.x, batch_size=512, verbose=0)
        self.predictions.append(np.asarray(predicted, np.float64))
        self.logs.append({k: float(v) for k, v in (logs or {}).items() if k in METRICS})
        self.steps.append(self._done)


def prediction_loss(y: np.ndarray, predicted: np.ndarray, loss: str) -> float:
    """The loss of a prediction as Keras computes it: mean squared error or categorical cross-entropy.

    Args:
        y: one-hot targets.
        predicted: the predictions.
        loss: ``"mse"`` or ``"crossentropy"``.

    Example:

    >>> y = np.array([[0.0, 1.0]])
    >>> half = np.array([[0.5, 0.5]])
    >>> prediction_loss(y, half, "mse"), round(prediction_loss(y, half, "crossentropy"), 4)
    (0.25, 0.6931)
    """
    if loss == "mse":
        return float(np.mean((predicted - y) ** 2))
    # Keras normalises the probabilities and clips them at its epsilon, 1e-7.
    p = np.clip(predicted / predicted.sum(axis=-1, keepdims=True), 1e-7, 1 - 1e-7)
    return float(np.mean(-np.sum(y * np.log(p), axis=-1)))


def prediction_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    """The share of samples whose largest output is the target's class."""
    return float(np.mean(np.argmax(predicted, axis=-1) == np.argmax(y, axis=-1)))


def ensemble_evaluations(members: Sequence[EpochPredictions], y_val: np.ndarray, loss: str) -> Evaluations:
    """The ensemble's record: per epoch, validation loss and accuracy of the members' mean prediction.

    Its training loss and accuracy are the members' means of theirs (each as its training logs give it).

    Args:
        members: each member's `EpochPredictions`, all of the same epochs.
        y_val: the one-hot validation targets.
        loss: ``"mse"`` or ``"crossentropy"``.
    """
    record = Evaluations()
    for epoch in range(min(len(m.predictions) for m in members)):
        mean = np.mean([m.predictions[epoch] for m in members], axis=0)
        logs: Mapping[str, float] = {
            "loss": float(np.mean([m.logs[epoch].get("loss", np.nan) for m in members])),
            "accuracy": float(np.mean([m.logs[epoch].get("accuracy", np.nan) for m in members])),
            "val_loss": prediction_loss(y_val, mean, loss),
            "val_accuracy": prediction_accuracy(y_val, mean),
        }
        record.add(members[0].steps[epoch], epoch + 1, logs)
    return record
