"""gradscope.train: the compiled GradientTape loop, checked against an independent tape."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradscope
from gradscope import GradientMonitor
from gradscope.models import lecture_mlp


def _small(input_dim=12, outputs=3, activation="tanh", init="glorot_uniform"):
    return lecture_mlp(input_dim, hidden=(16, 8), outputs=outputs, activation=activation,
                       output_activation="tanh", init=init, seed=3)


def test_grad_norm_matches_gradient_tape_at_two_steps(toy, tape_norms):
    x, y = toy
    model = _small()
    groups = [[0, 1], [2, 3], [4, 5]]
    w0 = [v.numpy() for v in model.trainable_variables]
    history = gradscope.train(model, x, y, loss="mse", optimizer=keras.optimizers.SGD(0.05),
                              batch_size=32, steps=2, shuffle=False)
    w1 = [v.numpy() for v in model.trainable_variables]
    assert list(history.steps) == [0, 1]
    ref = keras.models.clone_model(model)
    for v, w in zip(ref.trainable_variables, w0, strict=False):
        v.assign(w)
    expected, loss = tape_norms(ref, x[:32], y[:32], keras.losses.mean_squared_error, groups)
    np.testing.assert_allclose(history["grad_norm"][0], expected, rtol=1e-5)
    assert history.scalars["loss"][0] == pytest.approx(loss, rel=1e-5)
    # Kernel and bias separately, one column per variable, in the layers' order.
    assert history.variables == [f"{layer}/{var}" for layer in ("hidden_1", "hidden_2", "output")
                                 for var in ("kernel", "bias")]
    per_variable, _ = tape_norms(ref, x[:32], y[:32], keras.losses.mean_squared_error, [[i] for i in range(6)])
    np.testing.assert_allclose(history.variable_series["grad_norm"][0], per_variable, rtol=1e-5)
    assert all(b > 0 for b in per_variable[1::2])  # the biases' gradients are not trivially zero
    # Step 1 ran on the weights after one SGD step: reconstruct them independently.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y[:32], ref(x[:32], training=True)))
    g = tape.gradient(loss, ref.trainable_variables)
    for v, gi in zip(ref.trainable_variables, g, strict=False):
        v.assign_sub(0.05 * gi)
    expected, _ = tape_norms(ref, x[32:64], y[32:64], keras.losses.mean_squared_error, groups)
    np.testing.assert_allclose(history["grad_norm"][1], expected, rtol=1e-5)
    assert not np.allclose(w0[0], w1[0])


@pytest.mark.slow
def test_loop_and_fit_record_the_same_first_step(toy):
    x, y = toy
    records = []
    for use_fit in (False, True):
        keras.utils.set_random_seed(5)
        model = _small()
        model.compile(optimizer="adam", loss="mse")
        monitor = GradientMonitor()
        if use_fit:
            model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
        else:
            gradscope.train(model, x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[monitor])
        records.append(monitor.history)
    for name in ("grad_norm", "backprop", "weight_norm", "update_ratio", "act_std"):
        np.testing.assert_allclose(records[0][name], records[1][name], rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_keras_callbacks_work_with_the_loop(toy, tmp_path):
    x, y = toy
    model = _small()
    csv = tmp_path / "log.csv"

    class Counter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.batches, self.epochs = 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            assert set(logs) >= {"loss", "accuracy"}

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(dict(logs))

    counter = Counter()
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    history = gradscope.train(
        model, x, y, loss="mse", optimizer="adam", batch_size=32, epochs=5,
        validation_data=(x[:20], y[:20]),
        callbacks=[counter, keras.callbacks.CSVLogger(str(csv)), stopper],
    )
    # EarlyStopping with an impossible min_delta stops after the second epoch.
    assert len(counter.epochs) == 2 and counter.batches == 6 and len(history) == 6
    rows = csv.read_text().splitlines()
    assert len(rows) == 3
    header = rows[0].split(",")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "grad_norm/output"} <= set(header)
    # The epoch loss is the mean of the per-step losses (equal batch sizes).
    epoch0 = dict(zip(header, rows[1].split(","), strict=False))
    assert float(epoch0["loss"]) == pytest.approx(history.scalars["loss"][:3].mean(), rel=1e-5)
    assert model.history.history["loss"][0] == pytest.approx(float(epoch0["loss"]), rel=1e-6)
    # The last epoch's validation loss is what Keras' evaluate says of the final weights.
    assert counter.epochs[-1]["val_loss"] == pytest.approx(model.evaluate(x[:20], y[:20], verbose=0), rel=1e-5)


@pytest.mark.slow
def test_steps_limit_and_dataset_input(toy):
    x, y = toy
    model = _small()
    history = gradscope.train(model, x, y, loss="mse", optimizer="adam", batch_size=10, steps=7)
    assert list(history.steps) == list(range(7))
    assert np.all(np.isfinite(history.scalars["accuracy"]))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(24)
    model2 = _small()
    h2 = gradscope.train(model2, ds, loss="mse", optimizer="adam", epochs=2)
    assert len(h2) == 8 and h2.scalars["epoch"][-1] == 1


def test_datasets_of_unknown_length_run_to_the_step_limit_and_validate(toy):
    x, y = toy
    # .filter hides the length from TensorFlow: 96 samples in batches of 24 is 4 per pass.
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(24)
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    model = _small()
    val = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(16)
    logs = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, epoch_logs: logs.append(dict(epoch_logs)))
    history = gradscope.train(model, ds, loss="mse", optimizer="adam", steps=10, validation_data=val,
                              callbacks=[record])
    assert history.steps.tolist() == list(range(10))
    assert history.scalars["epoch"].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    # A validation dataset gives val_loss: Keras' evaluate on the final weights.
    assert len(logs) == 3
    assert logs[-1]["val_loss"] == pytest.approx(model.evaluate(val, verbose=0), rel=1e-5)


def test_accuracy_is_the_batch_share_of_argmax_hits(toy):
    x, y = toy
    model = _small()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    history = gradscope.train(model, x, y, batch_size=96, steps=1, shuffle=False)
    pred = model.predict(x, verbose=0)
    assert history.scalars["accuracy"][0] == pytest.approx(np.mean(pred.argmax(1) == y.argmax(1)))


def test_bad_inputs_raise_clear_errors(toy):
    x, y = toy
    model = _small()
    with pytest.raises(ValueError, match="different lengths"):
        gradscope.train(model, x, y[:10], loss="mse", optimizer="adam")
    with pytest.raises(ValueError, match="y is required"):
        gradscope.train(model, x, loss="mse", optimizer="adam")


def test_an_unbuilt_model_is_built_before_the_first_step(toy):
    x, y = toy
    model = keras.Sequential([keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    history = gradscope.train(model, x, y, loss="mse", optimizer="adam", batch_size=32, steps=3)
    assert list(history.steps) == [0, 1, 2]


def test_a_new_optimizer_in_train_is_honoured(toy):
    x, y = toy
    model = _small()
    monitor = GradientMonitor()
    gradscope.train(model, x, y, loss="mse", optimizer=keras.optimizers.SGD(0.0), steps=2, callbacks=[monitor])
    before = model.get_weights()[0].copy()
    gradscope.train(model, x, y, loss="mse", optimizer=keras.optimizers.SGD(0.5), steps=2, callbacks=[monitor])
    assert not np.allclose(before, model.get_weights()[0])


@pytest.mark.slow
def test_the_loop_under_xla_records_the_same_first_step(toy):
    x, y = toy
    records = []
    for jit in (False, True):
        keras.utils.set_random_seed(5)
        model = _small()
        records.append(gradscope.train(model, x, y, loss="mse", optimizer="adam", batch_size=40, epochs=1,
                                       shuffle=False, jit_compile=jit))
    # 96 samples in batches of 40: the last batch (16) is a second trace.
    assert list(records[1].steps) == [0, 1, 2]
    np.testing.assert_allclose(records[1]["grad_norm"][0], records[0]["grad_norm"][0], rtol=1e-5)
    np.testing.assert_allclose(records[1]["backprop"], records[0]["backprop"], rtol=1e-4)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"batch_size": 0}, ValueError, "batch_size must be a whole number of at least 1; got 0"),
    ({"batch_size": None}, TypeError, "batch_size must be a whole number"),
    ({"epochs": 0}, ValueError, "epochs must be a whole number of at least 1"),
    ({"steps": 1.5}, ValueError, "steps must be a whole number of at least 1"),
    ({"loss": None}, ValueError, "no loss to train with"),
])
def test_bad_train_arguments_raise_specific_errors(kwargs, error, words):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    args = {"loss": "mse", **kwargs}
    with pytest.raises(error) as caught:
        gradscope.train(model, np.ones((8, 4)), np.ones((8, 2)), **args)
    assert words in str(caught.value)


def test_train_wants_a_keras_model():
    with pytest.raises(TypeError, match="model must be a keras.Model; got str"):
        gradscope.train("model", np.ones((8, 4)), np.ones((8, 2)), loss="mse")


class _TraceCounter(keras.layers.Layer):
    """Identity whose Python body runs only when a step is traced, not when it runs."""

    traces = 0

    def call(self, x):
        _TraceCounter.traces += 1
        return x


@pytest.mark.parametrize("given_monitor", [False, True])
def test_repeated_train_calls_trace_the_step_once(given_monitor):
    x, y = np.ones((32, 4), "float32"), np.ones((32, 2), "float32")
    model = keras.Sequential([keras.Input((4,)), _TraceCounter(), keras.layers.Dense(2, activation="tanh")])
    monitor = [GradientMonitor()] if given_monitor else None
    _TraceCounter.traces = 0
    histories = [gradscope.train(model, x, y, loss="mse" if i == 0 else None, batch_size=8, epochs=1,
                                 shuffle=False, callbacks=monitor) for i in range(3)]
    traced = _TraceCounter.traces
    assert traced <= 2  # the symbolic build of the call order may trace once more; never once per call
    _TraceCounter.traces = 0
    gradscope.train(model, x, y, batch_size=8, epochs=1, callbacks=monitor)
    assert _TraceCounter.traces == 0
    # Each call without a monitor returns a record of its own; a given monitor continues its record.
    steps = [h.steps.tolist() for h in histories]
    if given_monitor:
        assert histories[0] is histories[2] and histories[2].steps.tolist() == list(range(16))  # 4 calls
    else:
        assert steps == [[0, 1, 2, 3]] * 3


def test_a_recompile_between_train_calls_traces_again():
    x, y = np.ones((32, 4), "float32"), np.ones((32, 2), "float32")
    model = keras.Sequential([keras.Input((4,)), _TraceCounter(), keras.layers.Dense(2)])
    gradscope.train(model, x, y, loss="mse", batch_size=8, epochs=1)
    _TraceCounter.traces = 0
    gradscope.train(model, x, y, loss="mae", batch_size=8, epochs=1)  # a new compile: a new trace
    assert _TraceCounter.traces >= 1


class _NumpyIdentity(keras.layers.Layer):
    """A layer XLA cannot compile: its value comes from numpy."""

    def call(self, x):
        return tf.ensure_shape(tf.numpy_function(lambda a: a, [x], tf.float32, stateful=False), x.shape)

    def compute_output_shape(self, shape):
        return shape


@pytest.mark.slow
def test_jit_auto_falls_back_with_one_line_when_xla_refuses_the_model(capsys):
    x, y = np.ones((16, 4), "float32"), np.ones((16, 2), "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), _NumpyIdentity(), keras.layers.Dense(2)])
    history = gradscope.train(model, x, y, loss="mse", batch_size=8, epochs=1, jit_compile="auto")
    assert history.steps.tolist() == [0, 1]
    lines = [line for line in capsys.readouterr().err.splitlines() if "XLA" in line]
    assert lines == ["gradscope: XLA cannot compile this model's step (PyFuncStateless); training without XLA"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        gradscope.train(model, x, y, batch_size=8, epochs=1, jit_compile=True)  # asked for XLA: no fallback


def test_the_monitor_kept_for_the_next_call_does_not_keep_the_model_alive():
    import gc
    import weakref

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    gradscope.train(model, np.ones((8, 4), "float32"), np.ones((8, 2), "float32"), loss="mse", batch_size=4)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


@pytest.mark.slow
def test_the_epoch_loss_survives_a_fallback_from_xla(toy):
    # RandomTranslation has no XLA kernel: the step falls back on its first call, and the epoch's sums must
    # go on in the plain step (they read 0 before), matching the batches' own running mean.
    x, y = toy
    model = keras.Sequential([keras.Input((12,)), keras.layers.Reshape((3, 4, 1)),
                              keras.layers.RandomTranslation(0.2, 0.2), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    batch_losses = []

    class Keep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_losses.append(float(logs["loss"]))

    monitor = gradscope.GradientMonitor()
    gradscope.train(model, x, y, batch_size=32, epochs=1, callbacks=[monitor, Keep()], jit_compile="auto")
    (epoch_loss,) = monitor.history.evaluations.series("loss")
    assert epoch_loss > 0 and epoch_loss == pytest.approx(batch_losses[-1], rel=1e-6)
