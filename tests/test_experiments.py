"""`gradscope run`'s flags, parsed for real, down to the compiled Keras model and the trained run."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest

from gradscope.cli import build_parser
from gradscope.data import Dataset, load_dataset
from gradscope.experiments import (
    DEFAULT_CURES,
    Config,
    ConfigError,
    build_model,
    ensemble_members,
    model_summary,
    regularized,
    run_config,
)
from gradscope.history import load_run
from gradscope.models import mlp_param_count


def config_for(*flags: str) -> Config:
    return Config.for_run(build_parser().parse_args(["run", *flags]))


def fake_data(input_dim: int, n: int = 8) -> Dataset:
    """Only the shapes matter to build_model."""
    x = np.zeros((n, input_dim), np.float32)
    y = np.arange(n) % 10
    return Dataset("shapes", x, y, x, y, num_classes=10)


def kernels(model: keras.Model) -> list[np.ndarray]:
    return [layer.kernel.numpy() for layer in model.layers]


@pytest.mark.slow
def test_run_defaults_are_the_lecture_experiment():
    config = config_for()
    assert (config.activation, config.init, config.hidden) == ("tanh", "random_uniform", [1024, 512, 512, 512])
    assert (config.loss, config.out_activation, config.optimizer, config.lr) == ("mse", "tanh", "adam", 1e-3)
    assert (config.batch_size, config.steps, config.epochs, config.seed) == (128, 400, None, 0)

    model = build_model(config, fake_data(784))
    assert [layer.units for layer in model.layers] == [1024, 512, 512, 512, 10]
    assert [layer.activation.__name__ for layer in model.layers] == ["tanh"] * 5  # the output included
    assert model.count_params() == 1_859_082
    for layer, w in zip(model.layers, kernels(model), strict=False):
        init = layer.kernel_initializer
        assert isinstance(init, keras.initializers.RandomUniform)
        assert (init.minval, init.maxval) == (-0.05, 0.05)
        # Drawn from U(-0.05, 0.05): inside the range, and filling it.
        assert -0.05 <= w.min() < -0.049 and 0.049 < w.max() <= 0.05
        assert abs(w.mean()) < 0.002 and w.std() == pytest.approx(0.1 / np.sqrt(12), rel=0.02)
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss == "mean_squared_error"


def test_every_network_and_training_flag_reaches_the_model():
    config = config_for("--activation", "relu", "--init", "he_normal", "--layers", "16,8", "--loss", "crossentropy",
                        "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "32", "--seed", "3")
    assert (config.batch_size, config.seed, config.steps) == (32, 3, 400)
    model = build_model(config, fake_data(64))
    assert [layer.units for layer in model.layers] == [16, 8, 10]
    assert model.count_params() == mlp_param_count(64, (16, 8), 10)
    # --activation sets the hidden layers; crossentropy's output is softmax.
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "relu", "softmax"]
    assert all(isinstance(layer.kernel_initializer, keras.initializers.HeNormal) for layer in model.layers)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert model.loss == "categorical_crossentropy"


@pytest.mark.parametrize("loss", ["mse", "crossentropy"])
def test_output_activation_overrides_the_losss_default(loss):
    model = build_model(config_for("--layers", "4", "--loss", loss, "--output-activation", "sigmoid"), fake_data(6))
    assert [layer.activation.__name__ for layer in model.layers] == ["tanh", "sigmoid"]


def test_epochs_lift_the_default_step_cap_and_steps_still_cap_them():
    for flags, epochs, steps in [(["--epochs", "30"], 30, None), (["--epochs", "2", "--steps", "5"], 2, 5),
                                 (["--steps", "7"], None, 7)]:
        config = config_for(*flags)
        assert (config.epochs, config.steps) == (epochs, steps), flags


def test_the_seed_fixes_the_weights():
    same = [build_model(config_for("--layers", "8", "--seed", "5"), fake_data(6)) for _ in range(2)]
    other = build_model(config_for("--layers", "8", "--seed", "6"), fake_data(6))
    for a, b, c in zip(kernels(same[0]), kernels(same[1]), kernels(other), strict=False):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_model_summary_is_a_plain_record_of_each_layer():
    model = build_model(config_for("--layers", "16,8", "--loss", "crossentropy"), fake_data(64))
    summary = model_summary(model)
    assert summary == {
        "name": "lecture_mlp",
        "total_params": (64 + 1) * 16 + (16 + 1) * 8 + (8 + 1) * 10,
        "layers": [
            {"name": "hidden_1", "output_shape": "(None, 16)", "activation": "tanh", "params": (64 + 1) * 16},
            {"name": "hidden_2", "output_shape": "(None, 8)", "activation": "tanh", "params": (16 + 1) * 8},
            {"name": "output", "output_shape": "(None, 10)", "activation": "softmax", "params": (8 + 1) * 10},
        ],
    }
    assert json.loads(json.dumps(summary)) == summary  # plain: numbers and strings only, no Keras objects


@pytest.mark.slow
def test_run_config_trains_the_asked_epochs_and_prints_each_layers_parameters(tmp_path):
    from rich.console import Console

    data = load_dataset("digits", limit=200)  # 64 inputs
    args = build_parser().parse_args(["run", "--layers", "8", "--epochs", "2", "--batch-size", "50", "--quiet"])
    config = Config.for_run(args)
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    history, diagnosis = run_config(config, data, tmp_path / "run", console, live=False)
    text = console.file.getvalue()

    assert history.steps.tolist() == list(range(8))  # 200 samples / batch 50 = 4 steps, twice
    assert history.config["batch_size"] == 50 and history.config["epochs"] == 2
    assert "batch 50, 2 epochs" in text
    # The model table: each layer's parameters, (inputs + 1) x units, and the total.
    rows = {line.split()[1]: line.split()[-2]
            for line in text.splitlines() if line.split()[1:2] in (["hidden_1"], ["output"])}
    assert rows == {"hidden_1": f"{(64 + 1) * 8:,}", "output": f"{(8 + 1) * 10:,}"}
    assert f"total {(64 + 1) * 8 + (8 + 1) * 10:,} parameters" in text
    assert [v.name for v in diagnosis.layers] == ["hidden_1", "output"]
    assert (tmp_path / "run" / "run.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("flags, jit", [([], True), (["--no-jit"], False), (["--jit"], True)])
def test_runs_use_xla_by_default_and_no_jit_turns_it_off(tmp_path, flags, jit):
    import json

    from rich.console import Console

    data = load_dataset("digits", limit=100)
    config = Config.for_run(build_parser().parse_args(["run", "--layers", "8", "--steps", "2", *flags]))
    run_config(config, data, tmp_path / "run", Console(file=io.StringIO()), live=False)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert saved["jit"] is jit


# -- the cures for overfitting ------------------------------------------------------------------------------------


def test_the_cure_flags_reach_the_config_and_its_label():
    config = config_for("--dropout", "0.3", "--weight-decay", "1e-4", "--augment", "--ensemble", "3")
    assert (config.dropout, config.weight_decay, config.augment, config.ensemble) == (0.3, 1e-4, True, 3)
    assert config.label == "tanh/random_uniform + dropout 0.3 + weight decay 0.0001 + augment + ensemble of 3"
    assert config.slug == "tanh-random_uniform-dropout0.3-weightdecay0.0001-augment-ensembleof3"
    assert config_for().label == "tanh/random_uniform"  # no cure: the label is the network's alone


def test_dropout_and_weight_decay_reach_the_model():
    model = build_model(config_for("--layers", "8,6", "--dropout", "0.3", "--weight-decay", "0.01"), fake_data(64))
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [(d.name, d.rate) for d in dropouts] == [("dropout_1", 0.3), ("dropout_2", 0.3)]
    # One L2 penalty per kernel, 0.01 * sum(W**2), in the loss Keras trains on.
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    expected = [0.01 * np.sum(layer.kernel.numpy().astype(np.float64) ** 2) for layer in dense]
    np.testing.assert_allclose([float(v) for v in model.losses], expected, rtol=1e-5)


def test_augmentation_changes_training_batches_only():
    model = build_model(config_for("--layers", "8", "--augment"), fake_data(64))
    images = np.zeros((16, 64), np.float32)
    images[:, 27:29] = 1.0  # a bright bar in the middle of each 8x8 image
    front = keras.Sequential(model.layers[:4])  # as_image, shift, rotate, flat
    assert [layer.name for layer in front.layers] == ["as_image", "shift", "rotate", "flat"]
    trained_on = front(images, training=True).numpy()
    assert not np.allclose(trained_on, images)  # moved and turned
    np.testing.assert_array_equal(front(images, training=False).numpy(), images)  # validation sees the image
    with pytest.raises(ConfigError, match="square images"):
        build_model(config_for("--augment"), fake_data(60))


def test_ensemble_members_have_their_own_seeds_and_weights():
    config = config_for("--layers", "8", "--ensemble", "3", "--seed", "5")
    members = ensemble_members(config)
    assert [m.seed for m in members] == [5, 6, 7]
    weights = [kernels(build_model(m, fake_data(64)))[0] for m in members]
    assert not np.allclose(weights[0], weights[1]) and not np.allclose(weights[1], weights[2])


def test_regularizers_each_apply_one_cure_at_the_flags_strength():
    base = config_for("--dropout", "0.2")
    cures = {name: regularized(base, name) for name in ("none", "dropout", "weight_decay", "augment", "ensemble")}
    assert [c.label for c in cures.values()] == list(cures)
    assert (cures["none"].dropout, cures["dropout"].dropout, cures["augment"].dropout) == (0.0, 0.2, 0.0)
    assert cures["weight_decay"].weight_decay == DEFAULT_CURES["weight_decay"]
    assert cures["ensemble"].ensemble == DEFAULT_CURES["ensemble"] and cures["augment"].augment


@pytest.mark.slow
def test_dropouts_zeros_are_not_counted_as_dead_relus():
    import gradscope

    # With dropout 0.9 a unit is zeroed for a whole batch of 16 with probability 0.9**16 = 19%. The record reads
    # each Dense layer's output before its Dropout: the dead share at step 0 is that of the ReLUs themselves,
    # worked out here from the initial weights and the first batch.
    config = config_for("--layers", "32", "--activation", "relu", "--init", "he_normal", "--dropout", "0.9")
    data = load_dataset("digits", limit=64)
    model = build_model(config, data)
    hidden = model.get_layer("hidden_1")
    relu = np.maximum(data.x_train[:16] @ hidden.kernel.numpy() + hidden.bias.numpy(), 0)
    history = gradscope.train(model, data.x_train, data.one_hot(data.y_train), batch_size=16, steps=1,
                              shuffle=False)
    assert history.layers == ["hidden_1", "output"]  # the Dropout layers, without weights, are not watched
    assert history["dead"][0, 0] == pytest.approx(np.mean(np.all(relu == 0, axis=0)))


@pytest.mark.slow
def test_an_ensemble_run_reports_each_member_and_their_averaged_prediction(tmp_path):
    from rich.console import Console

    data = load_dataset("digits", limit=60)
    config = config_for("--layers", "8", "--epochs", "2", "--batch-size", "30", "--ensemble", "2", "--no-jit")
    console = Console(file=io.StringIO(), width=160)
    history, _ = run_config(config, data, tmp_path / "run", console, live=False)
    text = console.file.getvalue()
    members = history.config["ensemble_val_accuracy"]
    assert len(members) == 2 and all(0 <= a <= 1 for a in members)
    assert f"member 1 {members[0]:.1%}, member 2 {members[1]:.1%}; ensemble (averaged prediction)" in text
    assert history.evaluations.epochs == [1, 2] and len(history) == 4  # member 1's gradient record: 2 x 2 steps
    saved = load_run(tmp_path / "run")
    assert saved.evaluations.series("val_accuracy").tolist() == history.evaluations.series("val_accuracy").tolist()


@pytest.mark.slow
def test_compare_regularizers_prints_the_table_and_draws_the_curves(tmp_path):
    from rich.console import Console

    from gradscope.experiments import compare

    args = build_parser().parse_args(["compare", "--regularizers", "none", "dropout", "--dataset", "digits",
                                      "--limit", "40", "--layers", "8", "--epochs", "2", "--batch-size", "20",
                                      "--quiet", "--no-jit", "--out", str(tmp_path / "cmp")])
    console = Console(file=io.StringIO(), width=200)
    out = compare(args, console)
    text = console.file.getvalue()
    header = next(line for line in text.splitlines() if "validation acc" in line)
    assert "train acc" in header and "gap" in header and "best epoch" in header
    rows = [line for line in text.splitlines() if line.startswith("│") and line.rstrip("│ ").endswith("of 2")]
    assert [row.split()[1] for row in rows] == ["none", "dropout"]
    assert (out / "plots" / "curves.png").stat().st_size > 10_000
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dropout", "none", "plots"]
