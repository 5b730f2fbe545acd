"""``gradscope inspect`` and ``gradscope.inspect``: saved models' gradients against an independent GradientTape.

The command runs in this process (``main``), as in test_cli_inputs.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_cli_inputs import run_main

import gradscope
from conftest import tape_layer_grad_norms
from gradscope.history import load_run
from gradscope.inspection import load_model
from gradscope.model_data import SYNTHETIC_NOTICE

BATCH = 8


def layer_groups(model: keras.Model) -> tuple[list[str], list[list[int]]]:
    """The layers with trainable weights, and the indices of their variables in the model's list."""
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    layers = [layer for layer in model.layers if layer.trainable_weights]
    return [layer.name for layer in layers], [[index[id(v)] for v in layer.trainable_weights] for layer in layers]


def summary_rows(text: str) -> list[str]:
    """The layer names in the printed summary table, top to bottom."""
    table = text[text.index("gradscope summary"):text.index("trainable parameters")]
    return [line.split("│")[2].strip() for line in table.splitlines() if line.startswith("│")]


def functional_model() -> keras.Model:
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    h = keras.layers.Dense(4, activation="relu", name="middle")(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(h), name="small_functional")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A compiled functional model, an uncompiled one, a small CNN and their data, saved with model.save."""
    folder = tmp_path_factory.mktemp("inspect")
    keras.utils.set_random_seed(7)
    model = functional_model()
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.save(folder / "functional.keras")
    functional_model().save(folder / "uncompiled.keras")
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax", name="out")],
                           name="small_cnn")
    cnn.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    cnn.save(folder / "cnn.keras")
    frozen = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, trainable=False)], name="frozen")
    frozen.compile(loss="mse")
    frozen.save(folder / "frozen.keras")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40)
    np.savez(folder / "xy.npz", x=x, y=y)
    np.savez(folder / "x5.npz", x=x[:, :5], y=y)
    np.savez(folder / "y7.npz", x=x, y=rng.normal(size=(40, 7)))
    # What `gradscope run` reads: 8x8 images in [0, 1], labels 0..9, with a validation set.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    np.savez(folder / "digits.npz", x_train=images[:64], y_train=digits.target[:64], x_test=images[64:96],
             y_test=digits.target[64:96])
    (folder / "not_a_model.keras").write_text("hello")
    tokens = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
                               keras.layers.Flatten(), keras.layers.Dense(3)])
    tokens.compile(loss="mse")
    tokens.save(folder / "tokens.keras")
    np.savez(folder / "ids.npz", x=rng.integers(0, 26, (40, 5)), y=rng.normal(size=(40, 3)))
    np.savez(folder / "other.npz", a=x, b=y)
    return folder


@pytest.mark.slow  # draws the run folder's plots
def test_functional_model_from_the_command_line(capsys, saved, tmp_path):
    path = saved / "functional.keras"
    code, out, err = run_main(capsys, "inspect", str(path), "--data", str(saved / "xy.npz"),
                              "--batch-size", str(BATCH), "--out", str(tmp_path / "run"))
    assert code == 0, err
    model = load_model(path)
    names, groups = layer_groups(model)
    assert summary_rows(out) == names == ["hidden", "middle", "out"]
    assert "gradients of 4 batches of 8 at the saved weights" in out and "Diagnosis" in out
    history = load_run(tmp_path / "run")
    assert len(history) == 4  # 40 samples make 5 batches; --steps 0 records the first 4
    with np.load(saved / "xy.npz") as data:
        x, y = data["x"], np.eye(3, dtype=np.float32)[data["y"]]
    # Every batch is taken at the saved weights: row k is batch k's gradient there.
    for k in range(4):
        rows = slice(k * BATCH, (k + 1) * BATCH)
        expected, loss = tape_layer_grad_norms(model, x[rows], y[rows], keras.losses.categorical_crossentropy, groups)
        np.testing.assert_allclose(history["grad_norm"][k], expected, rtol=1e-5)
        np.testing.assert_allclose(history.scalars["loss"][k], loss, rtol=1e-5)


def test_cnn_from_the_command_line_reads_what_run_reads(capsys, saved):
    path = saved / "cnn.keras"
    code, out, err = run_main(capsys, "inspect", str(path), "--data", str(saved / "digits.npz"),
                              "--batch-size", str(BATCH))
    assert code == 0, err
    model = load_model(path)
    names, groups = layer_groups(model)
    assert summary_rows(out) == names == ["conv", "out"]
    # The same numbers through the Python twin, against a tape on the first batch: the run
    # format's flattened 64 pixels are laid out again as the model's 8x8x1.
    with np.load(saved / "digits.npz") as data:
        x, y = data["x_train"].reshape(-1, 8, 8, 1), data["y_train"]
    history = gradscope.inspect(model, x.reshape(len(x), -1), y, batch_size=BATCH)
    expected, _ = tape_layer_grad_norms(model, x[:BATCH], y[:BATCH], keras.losses.sparse_categorical_crossentropy,
                                        groups)
    np.testing.assert_allclose(history["grad_norm"][0], expected, rtol=1e-5)


def test_an_uncompiled_model_takes_the_loss_from_the_flag(capsys, saved):
    args = ["inspect", str(saved / "uncompiled.keras"), "--data", str(saved / "xy.npz"), "--batch-size", "8"]
    code, out, err = run_main(capsys, *args, "--loss", "categorical_crossentropy", "--lr", "0.1")
    assert code == 0, err
    assert summary_rows(out) == ["hidden", "middle", "out"] and "Diagnosis" in out
    assert "notice: --optimizer and --lr apply to --steps N only" in out


@pytest.mark.parametrize("model, data, words", [
    ("not_a_model.keras", "xy.npz", "not_a_model.keras is not a saved Keras model"),
    ("missing.keras", "xy.npz", "missing.keras does not exist"),
    ("functional.keras", "x5.npz", "the model expects inputs of shape (6,) per sample; the data gives (5,)"),
    ("functional.keras", "y7.npz", "the loss cannot compare targets of shape (7,) per sample with outputs of "
                                   "shape (3,)"),
    ("frozen.keras", "xy.npz", "model 'frozen' has no trainable weights (2 weights, none trainable)"),
    ("uncompiled.keras", "xy.npz", "the model has no loss (it was saved or made without compile): give one, "
                                   "e.g. --loss mse"),
    ("functional.keras", "digits.npz", "the model expects inputs of shape (6,) per sample; the data gives (64,)"),
    ("tokens.keras", "ids.npz", "the model's Embedding takes token ids 0..19; the data holds ids from 0 to 25"),
    ("functional.keras", "other.npz", "other.npz holds a, b; expected arrays x and y, or x_train, y_train, x_test"),
    ("functional.keras", "missing.npz", "data path"),
])
def test_bad_input_is_one_line_naming_the_mismatch(capsys, saved, model, data, words):
    code, out, err = run_main(capsys, "inspect", str(saved / model), "--data", str(saved / data))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("gradscope inspect: error: ") and words in err, err
    assert "Traceback" not in out + err


def test_steps_0_leaves_the_model_as_it_was_and_steps_n_trains_a_copy(toy):
    x, y = toy
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    before = [w.copy() for w in model.get_weights()]  # moving statistics too
    history = gradscope.inspect(model, x, y, batch_size=16)
    assert isinstance(history, gradscope.GradientHistory) and len(history) == 4
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert int(model.optimizer.iterations.numpy()) == 0 and model.loss == "categorical_crossentropy"
    trained = gradscope.inspect(model, x, y, steps=6, batch_size=16, learning_rate=0.05)
    assert len(trained) == 6 and np.isfinite(trained["grad_norm"]).all()
    assert not np.allclose(trained["grad_norm"][0], trained["grad_norm"][-1])  # the copy's weights moved
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_synthetic_data_comes_with_its_notice(capsys, tmp_path):
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4, name="emb"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax", name="out")],
                             name="tokens")
    model.save(tmp_path / "tokens.keras")
    code, out, err = run_main(capsys, "inspect", str(tmp_path / "tokens.keras"), "--synthetic", "--loss", "mse",
                              "--steps", "3", "--batch-size", "4", "--quiet")
    assert code == 0, err
    assert f"notice: {SYNTHETIC_NOTICE}" in out and "say nothing about how it trains on your data" in out
    assert "training a copy of tokens for 3 steps" in out and summary_rows(out) == ["emb", "out"]


@pytest.mark.parametrize("flags, words", [
    (["--loss", "msee"], "unknown Keras loss 'msee'"),
    (["--optimizer", "adamm", "--steps", "2"], "unknown Keras optimizer 'adamm'"),
    (["--optimizer", "Optimizer", "--steps", "2"], "the Keras optimizer 'Optimizer' cannot update a weight"),
    (["--steps", "-1"], "argument --steps: expected a whole number from 0 to 2,147,483,647, got -1"),
])
def test_a_bad_flag_is_one_line_naming_it(capsys, saved, flags, words):
    code, out, err = run_main(capsys, "inspect", str(saved / "functional.keras"), "--synthetic", *flags)
    assert code == 2, err
    assert [line for line in err.splitlines() if "error:" in line] == [err.splitlines()[-1]] and words in err, err
    assert "Traceback" not in out + err


def test_data_and_synthetic_are_either_or(capsys, saved):
    code, _, err = run_main(capsys, "inspect", str(saved / "functional.keras"), "--synthetic", "--data", "x.npz")
    assert code == 2 and "not allowed with argument" in err
    code, _, err = run_main(capsys, "inspect", str(saved / "functional.keras"))
    assert code == 2 and "one of the arguments --data --synthetic is required" in err


@pytest.mark.slow  # a process of its own, stopped by a signal
def test_a_signal_stops_training_at_a_step_end_and_keeps_the_record(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    model.compile(loss="mse", optimizer="sgd")
    model.save(tmp_path / "tiny.keras")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "gradscope", "inspect", str(tmp_path / "tiny.keras"),
                             "--synthetic", "--steps", "2000000000", "--quiet", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("training a copy"):
                break
        time.sleep(3)  # long enough to trace the step and run some
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: " in out and "recorded steps saved to" in out
    assert err.strip() == "gradscope inspect: interrupted (SIGINT)"
    history = load_run(tmp_path / "run")
    assert len(history) > 0 and np.isfinite(history["grad_norm"]).all()
