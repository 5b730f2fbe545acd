"""The training and validation record: what fit and gradscope.train put in it, its gaps, and the run folder."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import gradscope
from gradscope import GradientMonitor
from gradscope.evaluations import EVALUATIONS_FILE, Evaluations
from gradscope.history import GradientHistory, RunFolderError, load_run


def _record(rows: list[tuple[float, float, float, float]]) -> Evaluations:
    record = Evaluations()
    for epoch, (loss, acc, val_loss, val_acc) in enumerate(rows, 1):
        record.add(10 * epoch, epoch, {"loss": loss, "accuracy": acc, "val_loss": val_loss, "val_accuracy": val_acc})
    return record


def test_gaps_best_epoch_and_final_row():
    record = _record([(1.0, 0.5, 1.1, 0.45), (0.5, 0.8, 0.7, 0.7), (0.2, 0.95, 0.9, 0.72)])
    record.add(35, 4, {"loss": 0.1, "accuracy": 0.99}, epoch_end=False)  # within epoch 4: no validation
    np.testing.assert_allclose(record.loss_gap[:3], [0.1, 0.2, 0.7])
    np.testing.assert_allclose(record.accuracy_gap[:3], [0.05, 0.1, 0.23])
    assert np.isnan(record.loss_gap[3])
    assert record.best_epoch() == 2
    final = record.final()  # the last epoch end, not the row within epoch 4
    assert final["accuracy"] == 0.95 and final["accuracy_gap"] == pytest.approx(0.23)
    assert record.series("loss", epochs_only=True).tolist() == [1.0, 0.5, 0.2]


def test_without_validation_there_is_no_best_epoch():
    record = Evaluations()
    record.add(5, 1, {"loss": 0.3, "accuracy": 0.9, "val_loss": None})
    assert record.best_epoch() is None and np.isnan(record.final()["val_accuracy"])


def test_saved_and_loaded_with_the_run(tmp_path):
    history = GradientHistory(["dense"])
    history.append([0, 1], {"grad_norm": np.ones((2, 1))})
    history.evaluations = _record([(1.0, 0.5, float("nan"), 0.4), (0.5, 0.8, 0.7, 0.7)])
    history.save(tmp_path)
    saved = json.loads((tmp_path / EVALUATIONS_FILE).read_text())
    assert saved["val_loss"] == [None, 0.7]  # JSON has no NaN
    loaded = load_run(tmp_path).evaluations
    assert loaded.steps == [10, 20] and loaded.epochs == [1, 2] and loaded.epoch_end == [True, True]
    np.testing.assert_array_equal(loaded.series("val_loss"), [np.nan, 0.7])
    # A run saved before evaluations were recorded loads with an empty record.
    (tmp_path / EVALUATIONS_FILE).unlink()
    assert len(load_run(tmp_path).evaluations) == 0


@pytest.mark.parametrize("text", ["[1, 2]", '{"steps": [1], "epochs": []}', '{"steps": ["x"], "epochs": [1], '
                                  '"epoch_end": [true], "loss": [1], "accuracy": [1], "val_loss": [1], '
                                  '"val_accuracy": [1]}', "not json"])
def test_a_damaged_file_is_one_run_folder_error(tmp_path, text):
    history = GradientHistory(["dense"])
    history.append([0], {"grad_norm": np.ones((1, 1))})
    history.save(tmp_path)
    (tmp_path / EVALUATIONS_FILE).write_text(text)
    with pytest.raises(RunFolderError, match=EVALUATIONS_FILE):
        load_run(tmp_path)


def _tiny(toy):
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_the_monitor_records_fits_val_logs_each_epoch(toy):
    x, y = toy
    model = _tiny(toy)
    monitor = GradientMonitor()
    fit = model.fit(x[:64], y[:64], batch_size=16, epochs=3, validation_data=(x[64:], y[64:]), verbose=0,
                    callbacks=[monitor])
    record = monitor.history.evaluations
    assert record.epochs == [1, 2, 3] and record.steps == [4, 8, 12]
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(record.series(metric), fit.history[metric], rtol=1e-6)


@pytest.mark.slow
def test_train_evaluates_validation_on_the_monitors_schedule(toy):
    x, y = toy
    model = _tiny(toy)
    monitor = GradientMonitor(evaluate_every=3)
    gradscope.train(model, x[:64], y[:64], batch_size=8, epochs=2, validation_data=(x[64:], y[64:]),
                    callbacks=[monitor], shuffle=False)
    record = monitor.history.evaluations
    # 8 steps an epoch: steps 3 and 6 within epoch 1, 9, 12 and 15 within epoch 2, and the two epoch ends.
    assert record.steps == [3, 6, 8, 9, 12, 15, 16]
    assert record.epoch_end == [False, False, True, False, False, False, True]
    assert np.isfinite(record.series("val_loss")).all()
    # The last evaluation is of the final weights: compare with an independent computation.
    predicted = model.predict(x[64:], verbose=0).astype(np.float64)
    val_loss = float(np.mean(-np.sum(y[64:] * np.log(np.clip(predicted, 1e-7, 1)), axis=1)))
    val_acc = float(np.mean(predicted.argmax(1) == y[64:].argmax(1)))
    assert record.series("val_loss")[-1] == pytest.approx(val_loss, rel=1e-4)
    assert record.series("val_accuracy")[-1] == pytest.approx(val_acc)
