"""GradientMonitor under model.fit, checked against independent tf.GradientTape gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tape_layer_grad_norms
from gradscope import GradientMonitor, NonFiniteGradientError
from gradscope.model_layers import watched_layers


def _sequential():
    return keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="tanh"),
         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )


def _functional():
    inp = keras.Input((12,))
    a = keras.layers.Dense(16, activation="tanh")(inp)
    b = keras.layers.Dense(8, activation="sigmoid")(a)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([a, b]))
    return keras.Model(inp, out)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(16, activation="tanh")
        self.d2 = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.d2(self.d1(x))


class AssignedBackwards(keras.Model):
    """Layers assigned in the reverse of the order they are called, so Keras
    lists the output layer's variables first."""

    def __init__(self):
        super().__init__()
        self.head = keras.layers.Dense(3, activation="softmax")
        self.hidden = keras.layers.Dense(16, activation="tanh")

    def call(self, x):
        return self.head(self.hidden(x))


def _fit_then_rewind(model, x, y, monitor=None, batch_size=32, **fit_kwargs):
    """One recorded epoch of fit (no shuffling), then the weights put back as
    they were, so a reference can be computed on the weights of step 0."""
    weights = [v.numpy() for v in model.trainable_variables]
    monitor = monitor or GradientMonitor()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[monitor], **fit_kwargs)
    for v, w in zip(model.trainable_variables, weights, strict=False):
        v.assign(w)
    return monitor


def _fit_against_tape(model, x, y, monitor=None, batch_size=32):
    """`_fit_then_rewind`, and the GradientTape reference on the first batch
    at those weights. Returns (monitor, per-layer norms, loss)."""
    monitor = _fit_then_rewind(model, x, y, monitor, batch_size)
    expected, loss = _reference(model, x[:batch_size], y[:batch_size])
    return monitor, expected, loss


def _reference(model, x, y):
    """Per-layer gradient norms at the model's weights on one batch, by GradientTape."""
    groups = [s.var_indices for s in watched_layers(model)]
    norms, loss = tape_layer_grad_norms(model, x, y, keras.losses.categorical_crossentropy, groups)
    return np.array(norms), loss


@pytest.mark.slow
@pytest.mark.parametrize("make", [_sequential, _functional, Subclassed], ids=["sequential", "functional", "subclassed"])
def test_step0_grad_norm_matches_gradient_tape(make, toy):
    x, y = toy
    model = make()
    model(x[:1])  # builds every layer, subclassed models included
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor, expected, loss = _fit_against_tape(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)
    assert monitor.history.scalars["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert list(monitor.history.steps) == [0, 1, 2]


def test_layers_are_in_call_order_not_assignment_order(toy):
    x, y = toy
    model = AssignedBackwards()
    model(x[:1])
    assert model.trainable_variables[0].shape == (16, 3)  # Keras lists the head first
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = _fit_then_rewind(model, x, y)
    h = monitor.history
    assert h.layers == [model.hidden.name, model.head.name]
    assert h.variables[0] == f"{model.hidden.name}/kernel"
    # Each column holds its own layer's gradient, by an independent tape.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y[:32], model(x[:32], training=True)))
    grads = tape.gradient(loss, [model.hidden.kernel, model.hidden.bias, model.head.kernel, model.head.bias])
    expected = [np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in pair)) for pair in (grads[:2], grads[2:])]
    np.testing.assert_allclose(h["grad_norm"][0], expected, rtol=1e-5)
    # The output layer is last: its activation is the softmax.
    assert h.layer_info[-1]["activation"] == "softmax"


def test_lean_options_keep_gradients_exact_and_sample_the_weights(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor, expected, _ = _fit_against_tape(model, x, y, GradientMonitor(activation_stats=False, weights_every=2), 16)
    h = monitor.history
    np.testing.assert_allclose(h["grad_norm"][0], expected, rtol=1e-5)
    assert np.isfinite(h["backprop"]).all()
    assert np.isnan(h["act_mean"]).all() and np.isnan(h["nonfinite"]).all()
    assert "start" not in h.histograms
    assert h.config["recording"] == {"every": 1, "weights_every": 2, "activation_stats": False,
                                     "saturation_threshold": 0.99}
    # Weights and updates on every other step only.
    assert list(h.steps) == list(range(len(x) // 16))
    for name in ("weight_norm", "update_ratio"):
        assert np.isfinite(h[name][0::2]).all() and np.isnan(h[name][1::2]).all()


@pytest.mark.slow
def test_hooks_leave_the_training_math_unchanged(toy):
    """Keras reads a softmax output's logits in cross-entropy; the tap must keep that."""
    x, y = toy
    losses, reference = [], None
    for monitored in (False, True):
        keras.utils.set_random_seed(7)
        model = _sequential()
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        cbs = [GradientMonitor()] if monitored else []
        hist = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=cbs)
        losses.append(hist.history["loss"])
        if not monitored:
            reference = model.get_weights()
        else:
            for a, b in zip(reference, model.get_weights(), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_backprop_matches_gradient_wrt_layer_outputs(toy):
    x, y = toy
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="tanh"),
         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = _fit_then_rewind(model, x, y)
    # Independent: run the layers one by one and differentiate w.r.t. each output.
    with tf.GradientTape() as tape:
        h, outs = tf.constant(x[:32]), []
        for layer in model.layers:
            h = layer(h)
            outs.append(h)
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y[:32], h))
    grads = tape.gradient(loss, outs)
    expected = [np.sqrt(np.mean(g.numpy().astype(np.float64) ** 2)) for g in grads]
    np.testing.assert_allclose(monitor.history["backprop"][0], expected, rtol=1e-5)
    # Forward statistics of the same step, from the same outputs.
    a = outs[0].numpy()
    assert monitor.history["act_mean"][0, 0] == pytest.approx(a.mean(), rel=1e-4)
    assert monitor.history["saturation"][0, 0] == pytest.approx(np.mean(np.abs(a) > 0.99), abs=1e-6)
    relu_out = outs[1].numpy()
    assert monitor.history["dead"][0, 1] == pytest.approx(np.mean(np.all(relu_out <= 0, axis=0)), abs=1e-6)
    assert monitor.history["dact_mean"][0, 0] == pytest.approx(np.mean(1 - a**2), rel=1e-4)


def test_update_ratio_is_the_applied_step(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    monitor = GradientMonitor()
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    after = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    delta = np.sqrt(np.sum((after[0] - before[0]) ** 2) + np.sum((after[1] - before[1]) ** 2))
    # The weight norm is read after the update: the weights the next step uses.
    norm = np.sqrt(np.sum(after[0] ** 2) + np.sum(after[1] ** 2))
    assert monitor.history["update_ratio"][0, 0] == pytest.approx(delta / norm, rel=1e-4)
    assert monitor.history["weight_norm"][0, 0] == pytest.approx(norm, rel=1e-5)


@pytest.mark.slow
def test_mixed_precision_records_unscaled_gradients(toy):
    x, y = toy
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="tanh"),
         keras.layers.Dense(3), keras.layers.Activation("softmax", dtype="float32")]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    scale = float(model.optimizer.initial_scale)
    assert scale > 1
    monitor = _fit_then_rewind(model, x, y)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y[:32], model(x[:32], training=True)))
        scaled = loss * scale
    g = tape.gradient(scaled, model.trainable_variables)
    scaled_norm = np.sqrt(sum(np.sum(gi.numpy().astype(np.float64) ** 2) for gi in g[:2]))
    recorded = monitor.history["grad_norm"][0, 0]
    # float16 compute: compare loosely, but the factor of `scale` must be gone.
    assert recorded == pytest.approx(scaled_norm / scale, rel=2e-2)
    assert monitor.history.scalars["loss_scale"][0] == scale


@pytest.mark.slow
def test_steps_per_execution_gives_one_row_per_step(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy", steps_per_execution=4)
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    assert list(monitor.history.steps) == list(range(24))
    assert np.all(np.isfinite(monitor.history["grad_norm"]))


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_jit_compile_records_the_same_first_step(jit, toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit)
    monitor, expected, _ = _fit_against_tape(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)


def _tape_grads(model, data):
    """What a hand-written train_step does before it applies: loss and gradients."""
    xb, yb = data
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(yb, model(xb, training=True)))
    return loss, tape.gradient(loss, model.trainable_variables)


def test_custom_train_step_is_recorded(toy):
    x, y = toy

    class Custom(Subclassed):
        """The subclassed model with its own train_step."""

        def train_step(self, data):
            loss, grads = _tape_grads(self, data)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=False))
            return {"loss": loss}

    model = Custom()
    model(x[:1])
    model.compile(optimizer="adam")
    monitor, expected, _ = _fit_against_tape(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)


@pytest.mark.slow
def test_epoch_logs_reach_csvlogger_and_history(toy, tmp_path):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    csv = tmp_path / "log.csv"
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))
    hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                     callbacks=[monitor, keras.callbacks.CSVLogger(str(csv)), board])
    names = [s.name for s in watched_layers(model)]
    header = csv.read_text().splitlines()[0].split(",")
    # Keras' TensorBoard callback writes each epoch log as "epoch_<key>".
    tags = {}
    for event_file in (tmp_path / "tb" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                if value.tag.startswith("epoch_"):  # scalars (the model's config is a text summary)
                    tags.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    for name in names:
        assert f"grad_norm/{name}" in header
        # The epoch value is the mean of that epoch's recorded steps.
        assert hist.history[f"grad_norm/{name}"][1] == pytest.approx(
            monitor.history["grad_norm"][3:6, names.index(name)].mean(), rel=1e-6
        )
        assert tags[f"epoch_grad_norm/{name}"] == pytest.approx(hist.history[f"grad_norm/{name}"], rel=1e-6)


@pytest.mark.slow
def test_several_fit_calls_continue_or_restart(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert list(monitor.history.steps) == list(range(6))
    fresh = GradientMonitor(continue_history=False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[fresh])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[fresh])
    assert len(fresh.history) == 3
    # After fit the hooks are gone: a fit without the monitor records nothing more.
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert len(monitor.history) == 6 and "call" not in model.layers[0].__dict__


@pytest.mark.slow
def test_every_n_steps(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor(every=2)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert list(monitor.history.steps) == list(range(0, 12, 2))


class CountingMonitor(GradientMonitor):
    """Notes how many rows each fetch from the device brought."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fetched: list[int] = []

    def flush(self, check: bool = True) -> int:
        n = super().flush(check)
        self.fetched.append(n)
        return n


class FakeClock(keras.callbacks.Callback):
    """A clock that moves 0.1 s per training step; listed before the monitor."""

    def __init__(self):
        super().__init__()
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_train_batch_end(self, batch, logs=None):
        self.now += 0.1


@pytest.mark.slow
@pytest.mark.parametrize("flush_every, batches", [(256, [48]), (16, [16, 16, 16])])
def test_rows_come_from_the_device_in_batches_not_every_step(flush_every, batches, toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = CountingMonitor(flush_every=flush_every)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[monitor])
    assert [n for n in monitor.fetched if n] == batches
    assert monitor.history.steps.tolist() == list(range(48))


@pytest.mark.slow
def test_the_live_table_refreshes_four_times_a_second_not_every_step(toy):
    import io

    from rich.console import Console

    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    out = io.StringIO()
    monitor = CountingMonitor(verbose=2, console=Console(file=out, force_terminal=True, width=120))
    clock = monitor.clock = FakeClock()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[clock, monitor])
    # 0.1 s per step and a 0.25 s refresh: fresh rows (and a redraw) every third step.
    assert [n for n in monitor.fetched if n] == [3] * 16
    text = out.getvalue()
    assert "\x1b[2K\x1b[1A" in text  # a terminal: drawn in place (cursor moves), not as plain lines
    last_frame = text.rsplit("\x1b[2K", 1)[-1]
    assert "[" + "#" * 30 + "] epoch 1/1  step 48/48  loss" in last_frame
    assert all(f" {layer.name} " in last_frame for layer in model.layers) and "ratio to output" in last_frame


def test_layers_option_selects_layers(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    last = model.layers[-1].name
    monitor = GradientMonitor(layers=[last])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.history.layers == [last]
    with pytest.raises(ValueError, match="unknown layers: nope"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[GradientMonitor(layers=["nope"])])


def test_a_layers_filter_that_selects_nothing_says_so_and_trains(toy, capsys):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    before = model.layers[0].kernel.numpy().copy()
    monitor = GradientMonitor(layers=lambda layer: False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gradscope: cannot hook")]
    names = ", ".join(layer.name for layer in model.layers)
    assert err == [f"gradscope: cannot hook this model (the layers option selected none of the model's layers "
                   f"({names})); training goes on without gradient records"]
    assert not np.allclose(before, model.layers[0].kernel.numpy())


def _poisoned(x, y):
    """Layer 2 of 3 gets an infinite kernel at step 3 (a callback does it mid-training)."""
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                k = self.model.layers[1].kernel
                k.assign(np.full(k.shape, np.inf, np.float32))

    return model, Poison()


@pytest.mark.parametrize("policy", ["warn", "stop", "raise"])
def test_nonfinite_is_traced_to_step_and_layer(policy, toy, capsys):
    x, y = toy
    model, poison = _poisoned(x, y)
    monitor = GradientMonitor(on_nonfinite=policy)
    if policy == "raise":
        with pytest.raises(NonFiniteGradientError) as err:
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[poison, monitor])
        report = err.value.report
    else:
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[poison, monitor])
        report = monitor.nonfinite
        assert "first appeared at step 3" in capsys.readouterr().err
    assert report.step == 3
    assert report.layer == model.layers[1].name
    assert report.variable == "kernel"
    # Read after step 3's update, the kernel is infinite although its
    # gradient is finite: it was so before the step.
    assert report.where == "weights"
    if policy == "stop":
        assert len(monitor.history) == 4  # stopped right after the bad step
    if policy == "warn":
        assert len(monitor.history) == 12


def test_nan_from_activations_names_first_layer(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    xb = x.copy()
    xb[40] = np.nan  # sample 40 is in batch 5 (batch size 8): layer 1's output goes NaN first
    monitor = GradientMonitor(on_nonfinite="stop")
    model.fit(xb, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    r = monitor.nonfinite
    assert (r.step, r.layer, r.where) == (5, model.layers[0].name, "activations")


def test_unhookable_model_says_so_and_trains(toy, capsys):
    x, y = toy

    class NoApply(keras.Model):
        """A train_step that updates weights by hand: there is nothing to hook."""

        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            xb, yb = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(xb) - yb))
            for v, g in zip(self.trainable_variables, tape.gradient(loss, self.trainable_variables), strict=False):
                v.assign_sub(0.1 * g)
            return {"loss": loss}

    model = NoApply()
    model(x[:1])
    model.compile(optimizer="sgd")
    before = model.trainable_variables[0].numpy().copy()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[GradientMonitor()])
    assert "no step was recorded" in capsys.readouterr().err
    assert not np.allclose(before, model.trainable_variables[0].numpy())


@pytest.mark.slow
def test_interrupted_fit_keeps_rows_and_does_not_stack_hooks(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise KeyboardInterrupt

    monitor = GradientMonitor()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor, Interrupt()])
    # Keras skipped on_train_end; detach() fetches the rows and removes the hooks.
    monitor.detach()
    assert list(monitor.history.steps) == [0, 1, 2, 3]
    assert "call" not in model.layers[0].__dict__
    # A new fit without detach() after an interrupt must not stack wrappers either.
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor, Interrupt()])
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    steps = monitor.history.steps
    assert list(steps) == list(range(8 + 12))
    assert monitor.nonfinite is None and np.all(np.isfinite(monitor.history["grad_norm"]))


@pytest.mark.slow
def test_unbuilt_model_is_recorded_from_its_second_step(toy, capsys):
    x, y = toy
    model = keras.Sequential([keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert "recording starts after its first step" in capsys.readouterr().err
    assert list(monitor.history.steps) == [1, 2]
    assert np.all(np.isfinite(monitor.history["grad_norm"]))


@pytest.mark.slow
def test_none_gradient_counts_as_zero_not_as_nan(toy):
    x, y = toy

    class WithSpare(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3, activation="softmax")
            self.spare = keras.layers.Dense(2)  # built, but not on the loss's path

        def call(self, x):
            self.spare(x)
            return self.d(x)

    model = WithSpare()
    model(x[:1])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    monitor = GradientMonitor(on_nonfinite="raise")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    spare = monitor.history.layers.index(model.spare.name)
    assert np.all(monitor.history["grad_norm"][:, spare] == 0)


def test_embedding_sparse_gradients_are_summed_before_the_norm():
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(10, 3),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.array([[1, 1, 2, 3]] * 8, dtype="int32")  # index 1 twice in every sample
    y = np.ones((8, 1), "float32")
    monitor = _fit_then_rewind(model, x, y, batch_size=8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x)))
    g = tf.convert_to_tensor(tape.gradient(loss, model.trainable_variables[0]))
    assert monitor.history["grad_norm"][0, 0] == pytest.approx(float(tf.norm(g)), rel=1e-5)


@pytest.mark.slow
def test_a_monitor_reused_on_another_model_starts_a_new_history(toy):
    x, y = toy
    monitor = GradientMonitor()
    first = _sequential()
    first.compile(optimizer="adam", loss="categorical_crossentropy")
    first.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    second = _sequential()
    second.compile(optimizer="adam", loss="categorical_crossentropy")
    second.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert list(monitor.history.steps) == [0, 1, 2]
    assert monitor.history.layers == [s.name for s in watched_layers(second)]


@pytest.mark.slow
def test_validation_and_evaluate_leave_the_record_alone(toy, monkeypatch):
    from gradscope.staging import Staging

    staged = []
    original = Staging.forward
    monkeypatch.setattr(Staging, "forward", lambda self, i, out: (staged.append(i), original(self, i, out)))
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_data=(x[:16], y[:16]), callbacks=[monitor])
    model.evaluate(x, y, batch_size=32, verbose=0)
    model.predict(x, batch_size=32, verbose=0)
    # Only the training step was traced with the layer taps (3 layers, once):
    # validation inside fit, and evaluate/predict after it, were not.
    assert staged == [0, 1, 2]
    assert len(monitor.history) == 6 and np.all(np.isfinite(monitor.history["act_mean"]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_other_layer_types_and_optimizers(kind):
    rng = np.random.default_rng(0)
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
    if kind == "cnn":
        x = rng.random((32, 8, 8, 1)).astype("float32")
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                                  keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten(),
                                  keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax", name="out")])
        optimizer, names = keras.optimizers.AdamW(weight_decay=0.01), ["conv", "bn", "out"]
    else:
        x = rng.random((32, 5, 4)).astype("float32")
        model = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(6, name="lstm"),
                                  keras.layers.Dense(3, activation="softmax", name="out")])
        optimizer, names = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), ["lstm", "out"]
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    monitor = GradientMonitor(on_nonfinite="raise")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.layers == names and len(h) == 4
    assert np.all(np.isfinite(h["grad_norm"])) and np.all(h["update_ratio"] > 0)


@pytest.mark.slow
def test_a_recompile_between_fits_is_honoured(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    before = model.get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert not np.allclose(before, model.get_weights()[0])  # the new optimizer ran
    assert np.all(monitor.history["update_ratio"][3:, 0] > 0)


def test_run_eagerly_is_recorded_too(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    monitor, expected, loss = _fit_against_tape(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)
    assert monitor.history.scalars["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert np.all(np.isfinite(monitor.history["act_std"])) and np.all(np.isfinite(monitor.history["backprop"]))


def test_apply_inside_a_cond_in_a_custom_train_step(toy):
    x, y = toy

    class Guarded(Subclassed):
        """Applies the gradients only when they are finite (a common pattern)."""

        def train_step(self, data):
            loss, grads = _tape_grads(self, data)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

            def apply():
                self.optimizer.apply(grads, self.trainable_variables)
                return tf.constant(True)

            tf.cond(finite, apply, lambda: tf.constant(False))
            return {"loss": loss}

    model = Guarded()
    model(x[:1])
    model.compile(optimizer="sgd")
    monitor, expected, _ = _fit_against_tape(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)
    assert np.all(np.isfinite(monitor.history["backprop"])) and np.all(np.isfinite(monitor.history["act_std"]))


@pytest.mark.slow
def test_layers_without_an_output_to_measure_are_named_once(capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5, 2)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
    # keras.layers.RNN over a cell: the cell's call returns (output, states),
    # a tuple, so the cell (named after the RNN) has no output to measure.
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.RNN(keras.layers.SimpleRNNCell(4), name="rnn"),
                              keras.layers.Dense(3, activation="softmax", name="head")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    lines = [line for line in capsys.readouterr().err.splitlines() if "gradients only" in line]
    assert len(lines) == 1 and lines[0].startswith("gradscope: rnn: gradients only")
    assert "head" not in lines[0]
    assert np.all(np.isfinite(monitor.history["grad_norm"]))
    assert np.isnan(monitor.history["act_mean"][:, 0]).all() and np.isfinite(monitor.history["act_mean"][:, 1]).all()


def test_a_fully_measured_model_gets_no_gradients_only_notice(toy, capsys):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[GradientMonitor()])
    assert "gradients only" not in capsys.readouterr().err


def test_nan_activations_are_not_called_gradients_only(toy, capsys):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.layers[0].kernel.assign(np.full(model.layers[0].kernel.shape, np.nan, "float32"))
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    err = capsys.readouterr().err
    assert "gradients only" not in err
    assert f"first appeared at step 0 in the output of layer {model.layers[0].name}" in err


def _first_layer_output(model, xb):
    """The first (tanh) layer's output at the model's current weights, in numpy."""
    return np.tanh(xb @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy())


def test_start_and_end_histograms_bin_the_first_and_last_steps_outputs(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    monitor = _fit_then_rewind(model, x, y)  # 3 steps of 32, no shuffling
    h = monitor.history
    start, end = h.histograms["start"], h.histograms["end"]
    assert start["step"] == 0 and end["step"] == h.steps[-1] == 2
    # Layer 1 (tanh) at the initial weights on the first batch, binned on
    # [-1, 1] into the recorder's bins, independently in numpy.
    a = _first_layer_output(model, x[:32]).ravel()
    bins = start["counts"].shape[1]
    expected = np.bincount(np.clip(np.floor((a + 1.0) / 2.0 * bins).astype(int), 0, bins - 1), minlength=bins)
    assert start["ranges"][0].tolist() == [-1.0, 1.0]
    np.testing.assert_array_equal(start["counts"][0], expected)
    # The relu layer's range is the batch's own min and max, and every output is counted.
    assert start["ranges"][1][0] == 0.0 and start["counts"][1].sum() == 32 * 8


def test_saturation_threshold_is_honoured(toy):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    monitor = _fit_then_rewind(model, x, y, GradientMonitor(saturation_threshold=0.5))
    a = _first_layer_output(model, x[:32])
    share = float(np.mean(np.abs(a) >= 0.5))
    assert 0.05 < share < 0.95  # the threshold splits this layer's outputs
    assert monitor.history["saturation"][0, 0] == pytest.approx(share, abs=1e-6)
    assert monitor.history.config["recording"]["saturation_threshold"] == 0.5


@pytest.mark.slow
def test_a_monitor_reused_on_another_model_says_so_and_no_false_notice(toy, capsys):
    x, y = toy
    monitor = GradientMonitor()
    first = _sequential()
    first.compile(optimizer="adam", loss="categorical_crossentropy")
    first.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    capsys.readouterr()
    second = _sequential()
    second.compile(optimizer="adam", loss="categorical_crossentropy")
    second.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    err = capsys.readouterr().err
    assert "no step was recorded" not in err
    assert "this fit trains another model (or other layers), so a new history starts; " \
           "the previous one (3 recorded steps) is dropped" in err
    assert len(monitor.history) == 3


def test_a_built_model_with_nothing_to_train_is_not_called_unbuilt(toy, capsys):
    x, y = toy
    model = keras.Sequential([keras.Input((12,)), keras.layers.Activation("tanh")])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, x, batch_size=32, epochs=1, verbose=0, callbacks=[GradientMonitor()])
    err = capsys.readouterr().err
    assert "not built yet" not in err and "no step was recorded" not in err
    assert "cannot hook this model (the model has no layer with trainable weights)" in err


def _hidden_outputs(model, x):
    """The output of each hidden (non-output) watched layer, and the prediction, computed by hand."""
    if isinstance(model, Subclassed):
        h = model.d1(x)
        return [h], model.d2(h)
    if isinstance(model, keras.Sequential):
        outs, h = [], x
        for layer in model.layers:
            h = layer(h)
            outs.append(h)
        return outs[:-1], h
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:-1]
    probe = keras.Model(model.inputs, [layer.output for layer in hidden] + [model.output])
    *outs, pred = probe(x)
    return outs, pred


@pytest.mark.slow
@pytest.mark.parametrize("spe", [1, 4])
@pytest.mark.parametrize("make", [_sequential, _functional, Subclassed], ids=["sequential", "functional", "subclassed"])
def test_under_xla_step0_matches_a_gradient_tape(make, spe, toy):
    x, y = toy
    model = make()
    model(x[:1])
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True, steps_per_execution=spe)
    monitor = _fit_then_rewind(model, x, y)
    assert list(monitor.history.steps) == [0, 1, 2]
    expected, _ = _reference(model, x[:32], y[:32])
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)
    with tf.GradientTape() as tape:
        outs, pred = _hidden_outputs(model, tf.constant(x[:32]))
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y[:32], pred))
    rms = [np.sqrt(np.mean(g.numpy().astype(np.float64) ** 2)) for g in tape.gradient(loss, outs)]
    np.testing.assert_allclose(monitor.history["backprop"][0, :len(rms)], rms, rtol=1e-5)


@pytest.mark.slow
def test_under_xla_wide_layers_match_a_gradient_tape(toy):
    # Tensors of more than a few thousand numbers are summed by a matrix
    # product under XLA, with what does not fill its rows of 128 summed apart:
    # 12 x 700 = 8,400 kernel numbers (80 left over), a (32, 700) backprop.
    x, y = toy[0][:32], toy[1][:32]
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(700, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    before = [v.numpy() for v in model.trainable_variables]
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    # The weight norms are read after the step's update.
    after = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    np.testing.assert_allclose(monitor.history["weight_norm"][0, 0],
                               np.sqrt(np.sum(after[0] ** 2) + np.sum(after[1] ** 2)), rtol=1e-5)
    for v, w in zip(model.trainable_variables, before, strict=True):
        v.assign(w)
    expected, _ = _reference(model, x, y)
    np.testing.assert_allclose(monitor.history["grad_norm"][0], expected, rtol=1e-5)
    with tf.GradientTape() as tape:
        outs, pred = _hidden_outputs(model, tf.constant(x))
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, pred))
    rms = [np.sqrt(np.mean(g.numpy().astype(np.float64) ** 2)) for g in tape.gradient(loss, outs)]
    np.testing.assert_allclose(monitor.history["backprop"][0, :1], rms, rtol=1e-5)


@pytest.mark.slow
def test_the_loop_under_xla_matches_a_gradient_tape_for_each_model_kind(toy):
    import gradscope

    x, y = toy
    for make in (_sequential, _functional, Subclassed):
        model = make()
        model(x[:1])
        weights = [v.numpy() for v in model.trainable_variables]
        history = gradscope.train(model, x, y, loss="categorical_crossentropy", optimizer="adam", batch_size=32,
                                  steps=2, shuffle=False, jit_compile=True)
        for v, w in zip(model.trainable_variables, weights, strict=True):
            v.assign(w)
        expected, _ = _reference(model, x[:32], y[:32])
        np.testing.assert_allclose(history["grad_norm"][0], expected, rtol=1e-5, err_msg=make.__name__)


class _FailAt(keras.callbacks.Callback):
    """Raises at the given batch, as a crash in the middle of fit would."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("crash")


def _streamed_fit(data, monitor, *callbacks):
    """One epoch of 12 steps with ``monitor`` (streaming) and ``callbacks``."""
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(*data, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor, *callbacks])


@pytest.mark.slow
def test_a_streamed_run_keeps_its_flushed_chunks_when_fit_crashes(toy, tmp_path):
    from gradscope import load_run
    from gradscope.history_chunks import chunk_files

    monitor = GradientMonitor(stream_to=tmp_path / "run", flush_every=4)
    with pytest.raises(RuntimeError, match="crash"):
        _streamed_fit(toy, monitor, _FailAt(9))
    # Flushed after steps 4 and 8: two chunks on disk, nothing else needed to read them.
    assert [(c.first, c.rows) for c in chunk_files(tmp_path / "run")] == [(0, 4), (4, 4)]
    saved = load_run(tmp_path / "run")
    assert saved.steps.tolist() == list(range(8))
    monitor.detach()  # what a user does after the crash: the rest comes too
    np.testing.assert_array_equal(saved["grad_norm"], monitor.history["grad_norm"][:8])
    assert len(load_run(tmp_path / "run")) == len(monitor.history) == 10


@pytest.mark.slow
def test_a_streamed_run_is_finished_in_place(toy, tmp_path):
    from gradscope import load_run

    monitor = GradientMonitor(stream_to=tmp_path / "run", flush_every=5)
    _streamed_fit(toy, monitor)
    assert monitor.history.nbytes <= 64 * 8 * (1 + 11 * 3 + 4 + 3 * 6)  # room for 64 rows at most
    monitor.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "evaluations.json", "histograms.npz", "history", "plots", "run.json", "summary.json"]
    loaded = load_run(tmp_path / "run")
    assert loaded.steps.tolist() == list(range(12)) and sorted(loaded.histograms) == ["end", "start"]
    np.testing.assert_array_equal(loaded["grad_norm"], monitor.history["grad_norm"])


def test_stream_to_a_folder_holding_a_run_fails_before_training(toy, tmp_path):
    from gradscope import GradientHistory
    from gradscope.history import RunFolderError

    h = GradientHistory(["dense"])
    h.append([0], {"grad_norm": np.ones((1, 1))})
    h.save(tmp_path / "run")
    x, y = toy
    model = _sequential()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(RunFolderError, match="a run is saved there"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[GradientMonitor(stream_to=tmp_path / "run")])


@pytest.mark.slow
def test_plot_returns_the_overview_figure_of_the_record(toy, tmp_path):
    x, y = toy
    model = _sequential()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor()
    with pytest.raises(RuntimeError, match="recorded nothing yet"):
        monitor.plot()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    fig = monitor.plot()
    steps_ax, depth_ax, heat_ax = fig.axes[:3]
    backprop = monitor.history["backprop"]
    np.testing.assert_allclose(steps_ax.lines[0].get_ydata(), backprop[:, 0])  # 6 steps: raw lines, no smoothing
    np.testing.assert_allclose(depth_ax.lines[-1].get_ydata(), backprop[-1])
    np.testing.assert_allclose(heat_ax.collections[0].get_array(), backprop.T)
    saved = monitor.plot(tmp_path / "overview.png", series="grad_norm")
    assert saved.axes[0].get_ylabel() == "weight gradient (L2 norm of dL/dW)"
    assert (tmp_path / "overview.png").read_bytes()[:4] == b"\x89PNG"
