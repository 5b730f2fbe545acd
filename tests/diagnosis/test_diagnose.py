"""diagnose end to end: lecture networks whose answer is known, and constructed records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from gradscope.diagnosis import (
    RULES,
    DiagnosisContext,
    Finding,
    Rule,
    diagnose,
    rules_table_markdown,
)
from gradscope.history import GradientHistory


@pytest.fixture(scope="module")
def images():
    """The real MNIST test images when shared/ is there, else scikit-learn's digits."""
    from conftest import MNIST_DIR
    from gradscope.data import load_dataset

    data = load_dataset(path=MNIST_DIR, limit=2048) if MNIST_DIR.is_dir() else load_dataset("digits")
    return data.x_train, data.one_hot(data.y_train)


def _train_lecture(images, activation, init, steps, scale=None, bias=None):
    import keras

    import gradscope
    from gradscope.models import lecture_mlp

    x, y = images
    model = lecture_mlp(x.shape[1], activation=activation, init=init, seed=0)
    for layer in model.layers[:-1]:
        if scale is not None:
            layer.kernel.assign(layer.kernel * scale)
        if bias is not None:
            layer.bias.assign(np.full(layer.bias.shape, bias, np.float32))
    return gradscope.train(model, x, y, loss="mse", optimizer=keras.optimizers.Adam(1e-3),
                           batch_size=128, steps=steps, seed=0)


@pytest.mark.slow
def test_sigmoid_random_uniform_vanishes_at_its_first_layers(images):
    d = diagnose(_train_lecture(images, "sigmoid", "random_uniform", steps=20))
    verdicts = [v.verdict for v in d.layers]
    assert verdicts[:2] == ["vanishing", "vanishing"]
    assert verdicts[-1] == "healthy"
    assert "vanishing" in [f.rule for f in d.findings]
    assert d.first_ratio < RULES["vanishing"].threshold
    # The chain-rule product explains the shrinkage to within a factor of 3.
    predicted = d.derivative_rms_product * d.weight_product
    assert predicted / 3 < d.early_ratio < predicted * 3


@pytest.mark.slow
def test_relu_he_normal_is_healthy(images):
    from conftest import MNIST_DIR

    if not MNIST_DIR.is_dir():
        # On the 8x8 digits the first layer fans 64 inputs out to 1024 units,
        # which puts its ratio right at the threshold: a borderline case, not
        # the lecture's.
        pytest.skip("needs the MNIST test set in ../shared/data/mnist")
    d = diagnose(_train_lecture(images, "relu", "he_normal", steps=20))
    assert [v.verdict for v in d.layers] == ["healthy"] * 5
    assert not {"vanishing", "exploding", "saturated", "dead_relu"} & {f.rule for f in d.findings}


@pytest.mark.slow
def test_tanh_with_weights_scaled_up_is_saturated(images):
    h = _train_lecture(images, "tanh", "glorot_uniform", steps=5, scale=8.0)
    d = diagnose(h)
    saturated = next(f for f in d.findings if f.rule == "saturated")
    assert len(saturated.layers) >= 3
    assert np.nanmedian(h["saturation"][:, 1]) > RULES["saturated"].threshold
    assert "large_weights" in {f.rule for f in d.findings}


@pytest.mark.slow
def test_weights_too_small_for_their_fan_in_are_named(images):
    # Glorot kernels scaled by 0.1: every hidden layer's gains drop to about
    # 0.1, far below the rule's 0.8; the output layer keeps Glorot's forward
    # gain sqrt(2 * 512 / 522) = 1.4, so it is not small.
    small = _train_lecture(images, "tanh", "glorot_uniform", steps=3, scale=0.1)
    d = diagnose(small)
    finding = next(f for f in d.findings if f.rule == "small_weights")
    assert finding.layers == ["hidden_1", "hidden_2", "hidden_3", "hidden_4"]
    assert all(v.gain < 0.2 for v in d.layers[:4]) and d.layers[4].gain > 1.0
    plain = diagnose(_train_lecture(images, "tanh", "glorot_uniform", steps=3))
    assert "small_weights" not in {f.rule for f in plain.findings}


@pytest.mark.slow
def test_relu_with_large_negative_bias_is_dead(images):
    h = _train_lecture(images, "relu", "he_normal", steps=5, bias=-100.0)
    d = diagnose(h)
    dead = next(f for f in d.findings if f.rule == "dead_relu")
    assert dead.layers[0] == "hidden_1"
    assert h["dead"][0, 0] == 1.0
    # No gradient passes a dead layer: every layer below the output gets none.
    assert np.all(h["grad_norm"][:, :-1] == 0)


@pytest.mark.slow
def test_deep_linear_net_matches_glorot_bengio_closed_form():
    import keras

    import gradscope
    from gradscope.theory import linear_backprop_ratio

    n, depth, sigma2 = 256, 6, 1.6 / 256
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((n,))] + [
        keras.layers.Dense(n, activation="linear", use_bias=False,
                           kernel_initializer=keras.initializers.RandomNormal(stddev=np.sqrt(sigma2), seed=i))
        for i in range(depth)
    ])
    x = rng.normal(size=(512, n)).astype("float32")
    y = rng.normal(size=(512, n)).astype("float32")
    # A loss linear in the output, so d(loss)/d(output) = y / size is
    # independent of the weights, as the closed form assumes.
    def linear_loss(y_true, y_pred):
        return keras.ops.mean(y_true * y_pred, axis=-1)

    h = gradscope.train(model, x, y, loss=linear_loss, optimizer=keras.optimizers.SGD(0.0), batch_size=512, steps=1)
    bp = h["backprop"][0]
    for k in range(1, depth):
        measured = bp[depth - 1 - k] / bp[-1]
        assert measured == pytest.approx(linear_backprop_ratio(n, sigma2, k), rel=0.10), k


def _history(bp: np.ndarray, **scalars) -> GradientHistory:
    steps, layers = bp.shape
    h = GradientHistory([f"l{i}" for i in range(layers)],
                        layer_info=[{"name": f"l{i}", "units": 10} for i in range(layers)])
    h.append(np.arange(steps), {"grad_norm": bp, "backprop": bp}, scalars or None)
    return h


def test_exploding_and_thresholds_on_synthetic_records():
    bp = np.tile([100.0, 30.0, 10.0, 1.0], (60, 1))
    d = diagnose(_history(bp))
    assert [v.verdict for v in d.layers] == ["exploding", "exploding", "healthy", "healthy"]
    assert d.findings[0].rule == "exploding" and d.findings[0].layers == ["l0", "l1"]
    # Exactly at the threshold is not a finding; just below it is.
    t = RULES["vanishing"].threshold
    d = diagnose(_history(np.tile([t, 1.0], (10, 1))))
    assert d.layers[0].verdict == "healthy"
    d = diagnose(_history(np.tile([t * 0.99, 1.0], (10, 1))))
    assert d.layers[0].verdict == "vanishing"


def test_stalled_needs_enough_steps_and_chance_accuracy():
    bp = np.ones((60, 3))
    h = _history(bp, loss=np.full(60, 0.1), accuracy=np.full(60, 0.11))
    assert "stalled" in {f.rule for f in diagnose(h).findings}
    h = _history(bp, loss=np.full(60, 0.1), accuracy=np.full(60, 0.9))
    assert "stalled" not in {f.rule for f in diagnose(h).findings}
    h = _history(bp[:20], loss=np.full(20, 0.1), accuracy=np.full(20, 0.11))
    assert "stalled" not in {f.rule for f in diagnose(h).findings}


def test_diagnose_leaves_skipped_loss_scaled_steps_alone():
    # Under mixed precision the loss scaler skips steps whose gradients
    # overflow (loss_scale != 1 in the record): not a non-finite run.
    g = np.ones((4, 2))
    g[1, :] = np.inf

    def record(scale):
        h = GradientHistory(["a", "b"], variables=["a/kernel", "b/kernel"])
        h.append(np.arange(4), {"grad_norm": np.ones((4, 2))}, {"loss": np.ones(4), "loss_scale": scale},
                 {"grad_norm": g, "weight_norm": np.ones((4, 2))})
        return {f.rule for f in diagnose(h).findings}

    assert "non_finite" not in record(np.array([32768.0, 16384.0, 16384.0, 16384.0]))
    assert "non_finite" in record(np.ones(4))  # the same record without loss scaling


def test_nonfinite_run_gets_nonfinite_verdicts_and_finding():
    bp = np.tile([0.5, 1.0], (10, 1))
    bp[6:, 0] = np.nan
    h = GradientHistory(["a", "b"], variables=["a/kernel", "b/kernel"])
    h.append(np.arange(10), {"grad_norm": bp, "backprop": bp, "nonfinite": np.isnan(bp).astype(float)},
             {"loss": np.ones(10)}, {"grad_norm": bp, "weight_norm": np.ones((10, 2))})
    d = diagnose(h)
    assert [v.verdict for v in d.layers] == ["non-finite", "healthy"]
    assert d.layers[0].ratio == pytest.approx(0.5)  # from the finite steps
    assert d.findings[0].rule == "non_finite" and "step 6" in d.findings[0].message


def test_a_saturated_output_layer_gets_the_output_remedy():
    from gradscope.diagnosis import OUTPUT_SATURATED_REMEDY

    steps = 60
    bp = np.tile([0.001, 0.01, 1.0], (steps, 1))
    sat = np.tile([0.0, 0.0, 0.6], (steps, 1))
    h = GradientHistory(["a", "b", "out"], layer_info=[{"units": 8}, {"units": 8}, {"units": 10}])
    h.append(np.arange(steps), {"grad_norm": bp, "backprop": bp, "saturation": sat},
             {"loss": np.full(steps, 0.45), "accuracy": np.full(steps, 0.1)})
    d = diagnose(h)
    by_rule = {f.rule: f for f in d.findings}
    assert by_rule["vanishing"].remedy == OUTPUT_SATURATED_REMEDY == by_rule["stalled"].remedy
    assert by_rule["vanishing"].cause.startswith("saturated units in out")


def test_vanishing_words_its_message_from_the_measure():
    bp = np.tile([0.025, 1.0], (10, 1))
    d = diagnose(_history(bp))
    assert d.findings[0].message == (
        "The back-propagated gradient shrinks toward the input: l0 gets 1/40 of the output layer's (threshold 0.05)."
    )
    h = GradientHistory(["l0", "l1"])
    h.append(np.arange(10), {"grad_norm": bp})  # no backprop: weight-gradient norms
    d = diagnose(h)
    assert d.measure == "grad_norm"
    assert d.findings[0].message == (
        "The weight-gradient norm shrinks toward the input: l0 gets 1/40 of the output layer's (threshold 0.05)."
    )


@dataclass(frozen=True)
class LossRoseRule(Rule):
    """The extension point: a rule is a `Rule` subclass with a `check`, and one object in a rules list."""

    def check(self, context: DiagnosisContext) -> list[Finding]:
        if not context.final_loss > self.threshold * context.first_loss:
            return []
        message = f"The loss rose from {context.first_loss:g} to {context.final_loss:g}."
        return [self.finding([context.output], message, "a too large step")]


def test_a_rule_added_to_the_rules_list_is_reported():
    rule = LossRoseRule("loss_rose", 2.0, "the loss over the last tenth is above {threshold:g} times the first tenth's",
                        "lower the learning rate")
    h = _history(np.tile([0.5, 1.0], (60, 1)), loss=np.repeat([1.0, 3.0], 30))
    assert diagnose(h).healthy
    d = DiagnosisContext(h, rules=[*RULES.values(), rule]).diagnosis()
    assert [f.rule for f in d.findings] == ["loss_rose"]
    assert d.sentences()[-1] == (
        "[loss_rose] The loss rose from 1 to 3. Cause: a too large step. Remedy: lower the learning rate."
    )
    assert rules_table_markdown([rule]).splitlines()[2] == (
        "| `loss_rose` | threshold = 2 | the loss over the last tenth is above 2 times the first tenth's "
        "| lower the learning rate |"
    )
    with pytest.raises(ValueError, match="two rules are named 'loss_rose'"):
        DiagnosisContext(h, rules=[rule, rule])


def test_diagnose_applies_the_rules_it_is_given():
    rule = LossRoseRule("loss_rose", 2.0, "the loss over the last tenth is above {threshold:g} times the first tenth's",
                        "lower the learning rate")
    h = _history(np.tile([0.01, 1.0], (60, 1)), loss=np.repeat([1.0, 3.0], 30))
    assert [f.rule for f in diagnose(h).findings] == ["vanishing"]
    d = diagnose(h, rules=[*RULES.values(), rule])
    assert [f.rule for f in d.findings] == ["vanishing", "loss_rose"]
    assert d.findings[-1] == Finding("loss_rose", ["l1"], "The loss rose from 1 to 3.", "a too large step",
                                     "lower the learning rate")
    assert d.sentences() == DiagnosisContext(h, rules=[*RULES.values(), rule]).diagnosis().sentences()
    assert [f.rule for f in diagnose(h, rules=[rule]).findings] == ["loss_rose"]


@pytest.mark.slow
def test_a_run_diverged_by_its_learning_rate_is_told_so_not_blamed_on_its_initialisation(digits):
    import keras

    import gradscope
    from gradscope.models import lecture_mlp

    x, y = digits
    model = lecture_mlp(x.shape[1], hidden=(32, 32), activation="relu", init="he_normal", seed=0)
    history = gradscope.train(model, x[:512], y[:512], loss="mse", optimizer=keras.optimizers.Adam(100.0),
                              batch_size=64, steps=40, seed=0)
    diagnosis = diagnose(history)
    rules = [f.rule for f in diagnosis.findings]
    assert "diverged" in rules and "large_weights" not in rules and "small_weights" not in rules
    # He initialisation's gains, from the weights before the first update: about sqrt(2) backward for ReLU.
    assert all(0.5 < v.gain < 3.0 for v in diagnosis.layers[:2])
    text = " ".join(diagnosis.sentences())
    assert "Initial weight gains above" not in text and "lower the learning rate" in text
