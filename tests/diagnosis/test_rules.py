"""Each rule object on its own, at its threshold, and the docs' rule table generated from the rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradscope.diagnosis import (
    RULES,
    RULES_TABLE_BEGIN,
    RULES_TABLE_END,
    DiagnosisContext,
    Finding,
    diagnose,
    rules_table_markdown,
)
from gradscope.history import GradientHistory

ROOT = Path(__file__).resolve().parents[2]


FAN = 16  # fan_in = fan_out = 16: a kernel norm of 4 * g is a gain of exactly g both ways


def _case(rule: str, value: float, steps: int = 60, activation: str = "tanh") -> GradientHistory:
    """Two layers, hidden `a` and output `out` (4 classes); `value` goes where `rule` looks, on `a` (or the output)."""
    h = GradientHistory(
        ["a", "out"], variables=["a/kernel", "out/kernel"],
        layer_info=[{"units": FAN, "fan_in": FAN, "fan_out": FAN, "activation": activation},
                    {"units": 4, "fan_in": FAN, "fan_out": FAN, "activation": "softmax"}],
    )
    bp = np.tile([value if rule in ("vanishing", "exploding") else 0.5, 1.0], (steps, 1))
    series = {"grad_norm": bp, "backprop": bp}
    if rule in ("saturated", "dead_relu"):
        series["saturation" if rule == "saturated" else "dead"] = np.tile([value, 0.0], (steps, 1))
    gains = [value if rule in ("small_weights", "large_weights") else 1.0, 1.0]
    accuracy = value * 0.25 if rule == "stalled" else 0.9  # chance is 1/4
    h.append(np.arange(steps), series, {"loss": np.ones(steps), "accuracy": np.full(steps, accuracy)},
             {"grad_norm": np.ones((steps, 2)), "weight_norm": np.tile(np.multiply(gains, 4.0), (steps, 1))})
    return h


@pytest.mark.parametrize(
    "name, past, layer",
    [("vanishing", 0.99, "a"), ("exploding", 1.01, "a"), ("saturated", 1.01, "a"), ("dead_relu", 1.01, "a"),
     ("small_weights", 0.99, "a"), ("large_weights", 1.01, "a"), ("stalled", 0.99, "out")],
)
def test_each_rule_fires_past_its_threshold_and_not_at_it(name, past, layer):
    rule = RULES[name]
    assert rule.check(DiagnosisContext(_case(name, rule.threshold))) == []
    findings = rule.check(DiagnosisContext(_case(name, rule.threshold * past)))
    assert [(f.rule, f.layers, f.remedy) for f in findings] == [(name, [layer], rule.remedy)]


def test_non_finite_rule_fires_on_an_infinite_gradient_only():
    rule = RULES["non_finite"]
    h = _case("non_finite", 0.0)
    assert rule.check(DiagnosisContext(h)) == []
    g = np.ones((4, 2))
    g[3, 0] = np.inf
    h = GradientHistory(["a", "out"], variables=["a/kernel", "out/kernel"])
    h.append(np.arange(4), {"grad_norm": np.ones((4, 2))}, {"loss": np.ones(4)},
             {"grad_norm": g, "weight_norm": np.ones((4, 2))})
    message = "non-finite values (NaN/Inf) first appeared at step 3 in the gradient of layer a (kernel)."
    assert rule.check(DiagnosisContext(h)) == [
        Finding("non_finite", ["a"], message, "numeric overflow or an invalid operation", rule.remedy)
    ]


def test_thresholds_are_read_from_the_rule_object():
    h = _case("saturated", 0.4)
    assert RULES["saturated"].check(DiagnosisContext(h))
    stricter = replace(RULES["saturated"], threshold=0.5)
    assert stricter.check(DiagnosisContext(h)) == []
    # The words follow the numbers.
    assert "over 30%" in RULES["saturated"].meaning and "over 50%" in stricter.meaning


def test_large_weights_gives_relu_layers_the_relu_threshold():
    rule = RULES["large_weights"]
    t = rule.relu_threshold
    assert t > rule.threshold
    assert rule.check(DiagnosisContext(_case("large_weights", t, activation="relu"))) == []
    assert rule.check(DiagnosisContext(_case("large_weights", t * 1.01, activation="relu")))
    between = (rule.threshold + t) / 2  # large for tanh, not for ReLU
    assert rule.check(DiagnosisContext(_case("large_weights", between, activation="tanh")))
    relu = _case("large_weights", between, activation="relu")
    assert rule.check(DiagnosisContext(relu)) == []
    lower = replace(rule, relu_threshold=between * 0.99)
    assert [f.layers for f in lower.check(DiagnosisContext(relu))] == [["a"]]
    assert f"({between * 0.99:g} for ReLU)" in lower.meaning


def test_stalled_needs_the_table_s_min_steps():
    rule = RULES["stalled"]
    n = rule.min_steps
    assert rule.check(DiagnosisContext(_case("stalled", 1.0, steps=n)))
    assert rule.check(DiagnosisContext(_case("stalled", 1.0, steps=n - 1))) == []
    short = _case("stalled", 1.0, steps=20)
    assert "stalled" not in {f.rule for f in diagnose(short).findings}
    sooner = [replace(r, min_steps=20) if r.name == "stalled" else r for r in RULES.values()]
    assert "stalled" in {f.rule for f in DiagnosisContext(short, rules=sooner).diagnosis().findings}


def test_rules_name_causes_through_the_other_rules_applied():
    steps = 60
    bp = np.tile([0.001, 1.0], (steps, 1))
    h = GradientHistory(["a", "out"])
    h.append(np.arange(steps), {"grad_norm": bp, "backprop": bp, "saturation": np.tile([0.6, 0.0], (steps, 1))})
    assert RULES["vanishing"].check(DiagnosisContext(h))[0].cause.startswith("saturated units in a")
    without = [r for r in RULES.values() if r.name != "saturated"]
    cause = RULES["vanishing"].check(DiagnosisContext(h, rules=without))[0].cause
    assert cause == "depth: 2 layers multiply factors below 1"


def test_the_docs_rule_table_is_generated_from_rules():
    doc = (ROOT / "docs" / "diagnosis.md").read_text()
    table = doc[doc.index(RULES_TABLE_BEGIN) + len(RULES_TABLE_BEGIN):doc.index(RULES_TABLE_END)].strip()
    generated = rules_table_markdown()
    rows = {row.split(" | ")[0].strip("| `"): row for row in generated.splitlines()[2:]}
    assert list(rows) == list(RULES)
    for name, rule in RULES.items():
        # Every field of every rule is in its row, and the doc's row is that row.
        for key, value in rule.parameters().items():
            assert f"{key} = {value:g}" in rows[name]
        assert rule.meaning.replace("|", "\\|") in rows[name] and rule.remedy in rows[name]
        assert rows[name] in table.splitlines(), f"{name}: regenerate the table with `python -m gradscope.diagnosis`"
    assert table == generated


def _grown(loss_end: float, weight_end: float, steps: int = 60) -> GradientHistory:
    """Loss 1 and `a`'s kernel norm 4 (its start) for half the steps, then ``loss_end`` and ``weight_end``."""
    h = GradientHistory(
        ["a", "out"], variables=["a/kernel", "out/kernel"],
        layer_info=[{"units": FAN, "fan_in": FAN, "fan_out": FAN, "activation": "tanh", "initial_kernel_norm": 4.0},
                    {"units": 4, "fan_in": FAN, "fan_out": FAN, "activation": "softmax", "initial_kernel_norm": 4.0}],
    )
    bp = np.tile([0.5, 1.0], (steps, 1))
    late = np.arange(steps) >= steps // 2
    norms = np.stack([np.where(late, weight_end, 4.0), np.full(steps, 4.0)], axis=1)
    h.append(np.arange(steps), {"grad_norm": bp, "backprop": bp},
             {"loss": np.where(late, loss_end, 1.0), "accuracy": np.full(steps, 0.9)},
             {"grad_norm": np.ones((steps, 2)), "weight_norm": norms})
    return h


@pytest.mark.parametrize("loss_end, weight_end, fires, layers", [
    (1.0, 4.0, False, []),
    (99.0, 4.0 * 99, False, []),  # below 100x
    (150.0, 4.0, True, ["out"]),  # the loss: the finding points at the output
    (1.0, 4.0 * 101, True, ["a"]),  # the weights of one layer
    (1.0, np.inf, True, ["a"]),  # a kernel that became non-finite
])
def test_diverged_fires_on_a_loss_or_weights_grown_by_orders_of_magnitude(loss_end, weight_end, fires, layers):
    findings = RULES["diverged"].check(DiagnosisContext(_grown(loss_end, weight_end)))
    assert [f.layers for f in findings] == ([layers] if fires else [])
    if fires:
        assert findings[0].message.startswith("Training diverged:") and "learning rate" in findings[0].remedy


def test_initial_gains_come_from_the_weights_before_the_first_update():
    # The first recorded norm (after the first update) is 100x the start: a
    # diverging run, not a large initialisation.
    h = _grown(1.0, 4.0 * 1000)
    h.layer_info[0]["initial_kernel_norm"] = 4.0
    diagnosis = diagnose(h)
    assert [f.rule for f in diagnosis.findings] == ["diverged"]
    assert diagnosis.layers[0].gain == pytest.approx(1.0)


def test_large_weights_names_the_relu_threshold_for_relu_layers():
    h = _case("large_weights", 3.5, activation="relu")
    (finding,) = RULES["large_weights"].check(DiagnosisContext(h))
    assert finding.message == "Initial weight gains above 3: a 3.50."


def test_the_readme_names_every_rule():
    readme = (ROOT / "README.md").read_text()
    assert [name for name in RULES if f"`{name}`" not in readme] == []


# -- overfitting and underfitting: the training and validation curves -------------------------------------------


def _fitting_case(loss, acc, val_loss, val_acc) -> GradientHistory:
    """A healthy gradient record (no gradient rule fires) with these epoch-end curves."""
    h = _case("none", 0.5)
    for epoch, row in enumerate(zip(loss, acc, val_loss, val_acc, strict=True), 1):
        logs = dict(zip(("loss", "accuracy", "val_loss", "val_accuracy"), row, strict=True))
        h.evaluations.add(epoch * 10, epoch, logs)
    return h


def _findings(h: GradientHistory) -> list[str]:
    return [f.rule for f in diagnose(h).findings]


def test_overfitting_fires_when_validation_loss_rises_and_names_the_best_epoch():
    epochs = np.arange(1, 21)
    loss = 1.0 / epochs  # falls throughout
    val_loss = 0.5 + 0.01 * (epochs - 8) ** 2  # lowest at epoch 8, 0.5; 1.94 at the end
    h = _fitting_case(loss, np.full(20, 0.9), val_loss, np.full(20, 0.88))
    (finding,) = RULES["overfitting"].check(DiagnosisContext(h))
    assert "lowest at epoch 8 of 20" in finding.message
    # The median of the last three validation losses (1.5, 1.71, 1.94); the accuracy gap, 2 points, is not named.
    assert "rose from 0.5 at epoch 8 to 1.71 (+242%, threshold +10%)" in finding.message
    assert "points above" not in finding.message
    assert _findings(h) == ["overfitting"]


def test_overfitting_fires_on_the_accuracy_gap_past_its_threshold_only():
    rule = RULES["overfitting"]
    val_loss = np.linspace(1.0, 0.5, 10)  # still falling: only the gap can fire it
    at = _fitting_case(np.linspace(1, 0.1, 10), np.full(10, 0.95), val_loss, np.full(10, 0.95 - rule.gap + 1e-9))
    past = _fitting_case(np.linspace(1, 0.1, 10), np.full(10, 0.95), val_loss, np.full(10, 0.95 - rule.gap - 0.01))
    assert rule.check(DiagnosisContext(at)) == []
    (finding,) = rule.check(DiagnosisContext(past))
    assert "11.0 points above validation accuracy (threshold 10)" in finding.message


def test_overfitting_needs_the_rise_to_last_and_the_training_loss_to_fall():
    rule = RULES["overfitting"]
    acc = np.full(8, 0.9)
    # The last evaluation alone jumps: the median of the last three does not move.
    spike = _fitting_case(np.linspace(1, 0.2, 8), acc, [1, 0.8, 0.6, 0.5, 0.5, 0.5, 0.5, 2.0], acc)
    # Validation loss rises, but so does the training loss: diverging, not overfitting.
    both = _fitting_case(np.linspace(0.2, 1.0, 8), acc, np.linspace(0.3, 1.2, 8), acc)
    assert rule.check(DiagnosisContext(spike)) == [] and rule.check(DiagnosisContext(both)) == []


@pytest.mark.parametrize("seed", range(20))
def test_healthy_noisy_curves_get_neither_finding(seed):
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, 31)
    loss = 0.3 + 0.7 / epochs
    noise = rng.normal(0, 0.02, (2, 30))  # evaluation noise: 2% of the loss, 2 points of accuracy
    h = _fitting_case(loss, 0.97 - 0.3 / epochs, (loss + 0.03) * (1 + noise[0]), 0.95 - 0.3 / epochs + noise[1])
    assert _findings(h) == []


def test_no_validation_no_judgement():
    h = _fitting_case(np.linspace(1, 0.1, 10), np.full(10, 0.99), np.full(10, np.nan), np.full(10, np.nan))
    assert _findings(h) == []


def test_underfitting_fires_when_both_accuracies_stay_low_and_nothing_explains_it():
    rule = RULES["underfitting"]
    low = _fitting_case(np.full(6, 1.2), np.full(6, rule.threshold - 0.01), np.full(6, 1.25),
                        np.full(6, rule.threshold - 0.03))
    (finding,) = rule.check(DiagnosisContext(low))
    assert finding.message.startswith("Underfitting: training accuracy 59.0% and validation accuracy 57.0%")
    assert _findings(low) == ["underfitting"]
    # At the threshold, or with a gradient finding to explain it, it stays silent.
    at = _fitting_case(np.full(6, 1.2), np.full(6, rule.threshold), np.full(6, 1.25), np.full(6, rule.threshold))
    assert rule.check(DiagnosisContext(at)) == []
    vanishing = _case("vanishing", 0.001)
    vanishing.evaluations = low.evaluations
    assert _findings(vanishing) == ["vanishing"]


def _teacher_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of a random linear teacher, 15% of them replaced at random: the noise a small set lets a net learn."""
    x = rng.normal(size=(n, 16)).astype("float32")
    labels = np.argmax(x @ _TEACHER, axis=1)
    flip = rng.random(n) < 0.15
    labels[flip] = rng.integers(0, 4, flip.sum())
    return x, np.eye(4, dtype="float32")[labels]


_TEACHER = np.random.default_rng(7).normal(size=(16, 4))


@pytest.mark.slow
def test_a_wide_network_overfits_100_samples_and_not_enough_data():
    import keras

    import gradscope

    rng = np.random.default_rng(0)
    validation = _teacher_data(rng, 500)

    def train(n: int, epochs: int, batch: int) -> list[str]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(512, activation="relu"),
                                  keras.layers.Dense(4, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
        x, y = _teacher_data(rng, n)
        history = gradscope.train(model, x, y, batch_size=batch, epochs=epochs, validation_data=validation, seed=0)
        return [f.rule for f in diagnose(history).findings]

    assert train(100, 12, 20) == ["overfitting"]
    assert train(2000, 5, 100) == []


# -- residual nets and normalisation layers ------------------------------------------------------------------------

RESIDUAL = ["stem", "block0_a", "block0_b", "block1_a", "block1_b", "norm", "head"]
MAIN = [True, False, False, False, False, True, True]


def _residual_case(backprop: list[float], main_path: list[bool] | None = MAIN, dact: list[float] | None = None,
                   measure: str = "backprop", normalization: str | None = None) -> GradientHistory:
    """A residual net's record: `main_path` as the recording marks it (None: a plain net, unmarked)."""
    info = [{"name": n, "activation": "tanh"} for n in RESIDUAL]
    for i, flag in enumerate(main_path or []):
        info[i]["main_path"] = flag
    if normalization is not None:
        info[RESIDUAL.index(normalization)]["normalization"] = True
    h = GradientHistory(RESIDUAL, layer_info=info)
    values = np.tile(backprop, (20, 1))
    series = {"grad_norm": values} if measure == "grad_norm" else {"grad_norm": np.ones((20, 7)), "backprop": values}
    if dact is not None:
        series["dact_mean"] = np.tile(dact, (20, 1))
    h.append(range(20), series)
    return h


def test_a_weak_residual_branch_is_not_vanishing_toward_the_input():
    # The branches get 1/100 of the output layer's gradient; the stem, before
    # them, gets half of it through the skip connections.
    d = diagnose(_residual_case([0.5, 0.01, 0.01, 0.01, 0.01, 0.9, 1.0]))
    assert [(f.rule, f.layers) for f in d.findings] == [("weak_branch", ["block0_a", "block0_b", "block1_a",
                                                                         "block1_b"])]
    assert [v.verdict for v in d.layers] == ["healthy"] + ["weak branch"] * 4 + ["healthy"] * 2
    assert d.branch_layers == ["block0_a", "block0_b", "block1_a", "block1_b"]
    assert any("judged along the main path (stem, norm, head)" in s for s in d.sentences())


def test_the_same_numbers_in_a_plain_net_are_vanishing():
    d = diagnose(_residual_case([0.5, 0.01, 0.01, 0.01, 0.01, 0.9, 1.0], main_path=None))
    assert [(f.rule, f.layers) for f in d.findings] == [("vanishing", ["block0_a", "block0_b", "block1_a",
                                                                       "block1_b"])]
    assert d.branch_layers == []


def test_vanishing_along_the_main_path_of_a_residual_net_is_found():
    d = diagnose(_residual_case([0.01, 0.5, 0.5, 0.5, 0.5, 0.9, 1.0]))
    assert [(f.rule, f.layers) for f in d.findings] == [("vanishing", ["stem"])]


def test_the_chain_rule_products_run_along_the_main_path():
    dact = [0.9, 0.1, 0.1, 0.1, 0.1, 0.8, 0.5]
    context = DiagnosisContext(_residual_case([0.5] * 6 + [1.0], dact=dact))
    assert context.derivative_product == pytest.approx(0.8 * 0.5)
    plain = DiagnosisContext(_residual_case([0.5] * 6 + [1.0], main_path=None, dact=dact))
    assert plain.derivative_product == pytest.approx(0.1 ** 4 * 0.8 * 0.5)


def test_a_normalisation_layer_s_small_weight_gradient_is_not_vanishing():
    # Without the back-propagated gradient, depth is judged on weight-gradient
    # norms, and a norm layer's few parameters make its own small.
    bp = [1.0, 1.0, 1.0, 1.0, 1.0, 0.001, 1.0]
    assert diagnose(_residual_case(bp, None, measure="grad_norm", normalization="norm")).healthy
    d = diagnose(_residual_case(bp, None, measure="grad_norm"))
    assert [(f.rule, f.layers) for f in d.findings] == [("vanishing", ["norm"])]
    # Its back-propagated gradient is judged like any other layer's.
    d = diagnose(_residual_case(bp, None, normalization="norm"))
    assert [(f.rule, f.layers) for f in d.findings] == [("vanishing", ["norm"])]


def _conv_case(first: float) -> GradientHistory:
    shapes = ["(None, 8, 8, 4)", "(None, 8, 8, 4)", "(None, 10)"]
    h = GradientHistory(["conv", "conv_1", "head"], layer_info=[{"output_shape": s} for s in shapes])
    bp = np.tile([first, 0.012, 1.0], (20, 1))
    h.append(range(20), {"grad_norm": np.ones((20, 3)), "backprop": bp})
    return h


def test_convolutions_are_compared_with_the_end_of_their_trunk_not_across_the_pooling():
    # Pooling over 64 positions hands each of them a sliver of the gradient:
    # the convolutions get ~1/100 of the head's per element, and that is fine.
    d = diagnose(_conv_case(0.01))
    assert d.healthy
    assert d.first_ratio == pytest.approx(0.01 / 0.012)
    assert d.sentences()[0] == "layer 1 gets 1/1 of conv_1's back-propagated gradient."
    d = diagnose(_conv_case(0.0001))
    assert [(f.rule, f.layers) for f in d.findings] == [("vanishing", ["conv"])]
    assert "of conv_1's" in d.findings[0].message


def test_under_several_optimizers_each_network_is_compared_with_its_own_last_layer():
    # A GAN: the discriminator's last layer gets far more gradient than the
    # generator's; neither network is vanishing within itself.
    info = [{"optimizer": "d_optimizer"}, {"optimizer": "d_optimizer"},
            {"optimizer": "g_optimizer"}, {"optimizer": "g_optimizer"}]
    h = GradientHistory(["d1", "d2", "g1", "g2"], layer_info=info)
    bp = np.tile([0.5, 1.0, 0.0005, 0.001], (20, 1))
    h.append(range(20), {"grad_norm": np.ones((20, 4)), "backprop": bp})
    d = diagnose(h)
    assert d.healthy
    assert [v.ratio for v in d.layers] == [0.5, 1.0, 0.5, 1.0]
    assert d.sentences()[0] == "layer 1 gets 1/2 of d2's back-propagated gradient."
