"""GradientMonitor under Keras 3's JAX backend (gradscope/jax_step.py).

Keras picks its backend once per process, so the tests marked `jax_only` run
in a fresh process with ``KERAS_BACKEND=jax``: `test_the_jax_tests_pass`
starts it from the TensorFlow suite and checks its outcome. Every reference
gradient is an independent ``jax.grad`` of a forward pass written here with
``jnp`` from the model's weights, not through Keras or gradscope.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ON_JAX = keras.backend.backend() == "jax"
jax_only = pytest.mark.skipif(not ON_JAX, reason="runs under KERAS_BACKEND=jax, in test_the_jax_tests_pass")


@pytest.mark.slow
@pytest.mark.skipif(ON_JAX, reason="this is the runner")
def test_the_jax_tests_pass():
    pytest.importorskip("jax", reason="the JAX extra is not installed: pip install -e '.[jax]'")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           str(Path(__file__)), "-m", "not slow"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    # Every JAX test ran: none was skipped for a missing backend.
    assert " passed" in done.stdout and " skipped" not in done.stdout, tail
    # Recording on JAX imports no TensorFlow.
    script = ("import sys, numpy as np, keras; from gradscope import GradientMonitor; "
              "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation='tanh')]); "
              "m.compile(optimizer='sgd', loss='mse'); g = GradientMonitor(); "
              "m.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=4, verbose=0, callbacks=[g]); "
              "g.summary(); print(len(g.history), 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.split()[-2:] == ["2", "False"], done.stdout[-2000:] + done.stderr[-2000:]


# -- the JAX side --------------------------------------------------------------------------

def _data(n=64, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, n)]
    return x, y


def _mlp(kind="sequential"):
    if kind == "sequential":
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"),
                                 keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)])
    if kind == "functional":
        inp = keras.Input((12,))
        h = keras.layers.Dense(16, activation="tanh")(inp)
        h = keras.layers.Dense(8, activation="relu")(h)
        return keras.Model(inp, keras.layers.Dense(4)(h))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(16, activation="tanh")
            self.b = keras.layers.Dense(8, activation="relu")
            self.c = keras.layers.Dense(4)

        def call(self, x):
            return self.c(self.b(self.a(x)))

    model = Subclassed()
    model(np.zeros((1, 12), "float32"))
    return model


def _reference(weights, x, y):
    """Loss, per-layer weight-gradient norms and d(loss)/d(output) RMS of the
    12-16-8-4 tanh/relu/linear MLP under MSE, by jax.grad on a jnp forward pass."""
    import jax
    import jax.numpy as jnp

    acts = [jnp.tanh, jax.nn.relu, lambda s: s]

    def loss_fn(ws, probes):
        h = x
        for i, act in enumerate(acts):
            h = act(h @ ws[2 * i] + ws[2 * i + 1]) + probes[i]
        return jnp.mean(jnp.square(h - y))

    probes = [jnp.zeros((len(x), w.shape[1])) for w in weights[::2]]
    loss, (gw, gp) = jax.value_and_grad(loss_fn, argnums=(0, 1))(weights, probes)
    grad = [float(np.sqrt(sum(float(jnp.sum(g ** 2)) for g in gw[2 * i:2 * i + 2]))) for i in range(3)]
    backprop = [float(jnp.sqrt(jnp.mean(g ** 2))) for g in gp]
    return float(loss), np.array(grad), np.array(backprop)


@jax_only
@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_step_zero_matches_jax_grad(kind):
    from gradscope import GradientMonitor

    model = _mlp(kind)
    model.compile(optimizer="adam", loss="mse")
    x, y = _data()
    weights = [np.array(v.numpy()) for v in model.trainable_variables]
    loss, grad, backprop = _reference(weights, x[:32], y[:32])
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.steps.tolist() == [0, 1]
    np.testing.assert_allclose(h["grad_norm"][0], grad, rtol=1e-5)
    np.testing.assert_allclose(h["backprop"][0], backprop, rtol=1e-5)
    np.testing.assert_allclose(h.scalars["loss"][0], loss, rtol=1e-5)


@jax_only
def test_forward_statistics_weights_and_updates_match_their_definitions():
    from gradscope import GradientMonitor

    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _data()
    w0 = [np.array(v.numpy(), np.float64) for v in model.trainable_variables]
    monitor = GradientMonitor()
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    a1 = np.tanh(x[:32] @ w0[0] + w0[1])
    a2 = np.maximum(a1 @ w0[2] + w0[3], 0.0)
    np.testing.assert_allclose(h["act_mean"][0][:2], [a1.mean(), a2.mean()], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(h["act_std"][0][:2], [a1.std(), a2.std()], rtol=1e-4)
    assert h["saturation"][0][0] == pytest.approx(np.mean(np.abs(a1) >= 0.99))
    assert h["dead"][0][1] == pytest.approx(np.mean(np.all(a2 == 0, axis=0)))
    w1 = [np.array(v.numpy(), np.float64) for v in model.trainable_variables]
    weight = [np.sqrt(np.sum(w1[2 * i] ** 2) + np.sum(w1[2 * i + 1] ** 2)) for i in range(3)]
    update = [np.sqrt(np.sum((w1[2 * i] - w0[2 * i]) ** 2) + np.sum((w1[2 * i + 1] - w0[2 * i + 1]) ** 2))
              for i in range(3)]
    np.testing.assert_allclose(h["weight_norm"][0], weight, rtol=1e-5)
    np.testing.assert_allclose(h["update_ratio"][0], np.array(update) / weight, rtol=1e-3)
    assert set(h.histograms) == {"start"}  # one step: the start is also the end
    counts = h.histograms["start"]["counts"]
    assert counts.shape == (3, 40) and counts.sum(axis=1).tolist() == [32 * 16, 32 * 8, 32 * 4]


@jax_only
def test_steps_per_execution_gives_a_row_per_step_and_fits_reuse_the_compiled_step():
    from gradscope import GradientMonitor

    model = _mlp()
    model.compile(optimizer="adam", loss="mse", steps_per_execution=3)
    x, y = _data(n=128)
    monitor = GradientMonitor()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.history.steps.tolist() == list(range(8))
    steps = monitor.session.recorder.steps
    assert steps.traces == 1
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.session.recorder.steps is steps and steps.traces == 1
    assert monitor.history.steps.tolist() == list(range(16))
    # The epoch's mean gradient norm per layer reaches fit's own History.
    assert sorted(k for k in history.history if k.startswith("grad_norm/")) == [
        f"grad_norm/{name}" for name in sorted(monitor.history.layers)]
    # A fit without the monitor runs Keras' own train function again: nothing more is recorded.
    recorder = monitor.session.recorder
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not recorder.pending and recorder.schedule.step == 16


@jax_only
def test_training_is_the_same_with_and_without_the_monitor_and_a_recompile_is_seen():
    from gradscope import GradientMonitor

    x, y = _data(n=64)
    optimizer = keras.optimizers.Adam(1e-2)
    models = [_mlp(), _mlp()]
    models[1].set_weights(models[0].get_weights())
    models[0].compile(optimizer=optimizer, loss="mse")
    models[1].compile(optimizer="adam", loss="mse")
    models[1].optimizer.learning_rate = 1e-2
    monitor = GradientMonitor(every=2)
    models[0].fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    models[1].fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same optimizer, another loss: the compiled step is built again, with the new loss.
    models[0].compile(optimizer=optimizer, loss="mae")
    mae = float(np.mean(np.abs(np.asarray(models[0].predict(x[:16], verbose=0)) - y[:16])))
    models[0].fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.history.scalars["loss"][-1] == pytest.approx(mae, rel=1e-5)


@jax_only
def test_a_layer_called_twice_is_measured_at_its_first_call_and_no_statistics_means_no_histograms():
    from gradscope import GradientMonitor

    inp = keras.Input((12,))
    shared = keras.layers.Dense(12, activation="tanh")
    model = keras.Model(inp, keras.layers.Dense(4)(shared(shared(inp))))
    model.compile(optimizer="sgd", loss="mse")
    x, y = _data(n=32)
    w, b = (np.asarray(v.numpy(), np.float64) for v in shared.weights)
    first = np.tanh(x @ w + b)
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.history["act_mean"][0][0] == pytest.approx(first.mean(), rel=1e-5)
    assert monitor.history.histograms["start"]["counts"][0].sum() == first.size
    lean = GradientMonitor(activation_stats=False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[lean])
    assert lean.history.histograms == {} and np.isnan(lean.history["act_mean"]).all()
    assert np.isfinite(lean.history["backprop"]).all()


@jax_only
def test_every_and_weights_every():
    from gradscope import GradientMonitor

    model = _mlp()
    model.compile(optimizer="adam", loss="mse")
    x, y = _data(n=96)
    monitor = GradientMonitor(every=2, weights_every=2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.steps.tolist() == [0, 2, 4]
    weighed = ~np.isnan(h["weight_norm"][:, 0])
    assert weighed.tolist() == [True, False, True]
    assert np.all(np.isfinite(h["grad_norm"]))


@jax_only
def test_nonfinite_is_traced_to_its_layer_and_the_policies_act():
    from gradscope import GradientMonitor, NonFiniteGradientError

    def poisoned():
        model = _mlp()
        model.compile(optimizer="sgd", loss="mse")
        w = model.layers[1].kernel
        bad = np.array(w.numpy())
        bad[0, 0] = np.inf  # the relu layer's output goes non-finite at step 0
        w.assign(bad)
        return model

    x, y = _data(n=64)
    monitor = GradientMonitor(on_nonfinite="stop")
    poisoned().fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[monitor])
    assert monitor.nonfinite is not None and monitor.nonfinite.step == 0
    assert monitor.nonfinite.layer == monitor.history.layers[1]
    assert len(monitor.history) == 1  # stopped at once
    model = poisoned()
    with pytest.raises(NonFiniteGradientError, match="at step 0 in the output of layer") as raised:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[GradientMonitor(on_nonfinite="raise")])
    assert raised.value.report.layer == model.layers[1].name


@jax_only
def test_accuracy_and_softmax_output(tmp_path):
    from gradscope import GradientMonitor, load_run

    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _data(n=32)
    probs = np.asarray(model.predict(x, verbose=0))
    monitor = GradientMonitor(tensorboard=str(tmp_path / "logs"), stream_to=str(tmp_path / "streamed"))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    np.testing.assert_array_equal(load_run(str(tmp_path / "streamed"))["grad_norm"], monitor.history["grad_norm"])
    assert monitor.history.scalars["accuracy"][0] == pytest.approx(np.mean(probs.argmax(1) == y.argmax(1)))
    folder = monitor.save(str(tmp_path / "run"))
    again = load_run(folder)
    np.testing.assert_array_equal(again["grad_norm"], monitor.history["grad_norm"])


@jax_only
def test_keras_distribution_is_refused_in_one_line():
    import jax

    from gradscope import GradientMonitor
    from gradscope.errors import DistributionError

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    try:
        model = _mlp()
        model.compile(optimizer="sgd", loss="mse")
        with pytest.raises(DistributionError, match="keras.distribution"):
            model.fit(*_data(n=32), batch_size=16, verbose=0, callbacks=[GradientMonitor()])
    finally:
        keras.distribution.set_distribution(None)


@jax_only
def test_the_cli_and_train_say_they_run_on_tensorflow(capsys):
    from gradscope import train
    from gradscope.cli import main

    assert main(["run", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Keras runs on jax" in err and "GradientMonitor" in err
    model = _mlp()
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        train(model, *_data(), epochs=1)


@jax_only
def test_mixed_precision_gradients_are_unscaled():
    import jax
    import jax.numpy as jnp

    from gradscope import GradientMonitor

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(4, dtype="float32")])
    model.compile(optimizer="adam", loss="mse")
    x, y = _data(n=32)
    w = [np.array(v.numpy(), np.float32) for v in model.trainable_variables]

    def loss_fn(ws):
        return jnp.mean((jnp.tanh(x @ ws[0] + ws[1]) @ ws[2] + ws[3] - y) ** 2)

    g = jax.grad(loss_fn)(w)
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.scalars["loss_scale"][0] > 1000  # the gradients came scaled ...
    # ... and are recorded unscaled, to float16's precision in the forward pass.
    expected = [np.sqrt(sum(float(jnp.sum(gi ** 2)) for gi in g[2 * i:2 * i + 2])) for i in range(2)]
    np.testing.assert_allclose(h["grad_norm"][0], expected, rtol=2e-3)


@jax_only
def test_a_train_step_of_its_own(capsys):
    """One that differentiates its own loss: gradients only, with a notice; one that
    applies nothing gradscope sees: training goes on, unrecorded, with a notice."""
    import jax

    from gradscope import GradientMonitor

    class OwnLoss(keras.Sequential):
        def train_step(self, state, data):
            tv, ntv, ov, mv = state
            x, y = data

            def loss_fn(tv):
                y_pred, _ = self.stateless_call(tv, ntv, x)
                return keras.ops.mean(keras.ops.square(y_pred - y))

            grads = jax.grad(loss_fn)(tv)
            norm = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(g)) for g in grads))
            grads = [g * keras.ops.minimum(1.0, 0.1 / norm) for g in grads]  # clipped to a global norm of 0.1
            tv, ov = self.optimizer.stateless_apply(ov, grads, tv)
            return {}, (tv, ntv, ov, mv)

    class NoUpdate(keras.Sequential):
        def train_step(self, state, data):
            return {}, state

    x, y = _data(n=32)
    for kind, expected_rows in ((OwnLoss, 2), (NoUpdate, 0)):
        model = kind([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)])
        model.compile(optimizer="sgd", loss="mse")
        start = model.get_weights()
        monitor = GradientMonitor()
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
        assert len(monitor.history) == expected_rows
        err = capsys.readouterr().err
        if expected_rows:
            assert np.all(np.isfinite(monitor.history["grad_norm"])) and np.all(np.isnan(monitor.history["backprop"]))
            assert "gradients only" in err
            # The applied (clipped) gradients, and training exactly as without the monitor.
            np.testing.assert_allclose(np.linalg.norm(monitor.history["grad_norm"], axis=1), 0.1, rtol=1e-5)
            twin = kind([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)])
            twin.compile(optimizer="sgd", loss="mse")
            twin.set_weights(start)
            twin.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            assert "no step was recorded" in err


@jax_only
def test_a_unit_of_a_layer_and_its_activation_layer_is_measured_at_the_activation():
    from gradscope import GradientMonitor
    from gradscope.model_layers import watched_layers

    inp = keras.Input((12,))
    h = keras.layers.ReLU()(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Activation("tanh")(keras.layers.Dense(6)(h))))
    model.compile(optimizer="sgd", loss="mse")
    specs = watched_layers(model)
    assert [s.activation for s in specs] == ["relu", "tanh", "linear"]
    x, y = _data(n=32)
    w, b = (np.asarray(v.numpy(), np.float64) for v in specs[0].layer.weights)
    relu = np.maximum(x @ w + b, 0)
    monitor = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h["act_mean"][0][0] == pytest.approx(relu.mean(), rel=1e-5)
    assert h["dead"][0][0] == pytest.approx(np.mean(np.all(relu == 0, axis=0)))
    assert np.isfinite(h["saturation"][0][1])
