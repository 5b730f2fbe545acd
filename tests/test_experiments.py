"""`gradscope run`'s flags, parsed for real, down to the compiled Keras model and the trained run."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest

from gradscope.cli import build_parser
from gradscope.data import Dataset, load_dataset
from gradscope.experiments import Config, build_model, model_summary, run_config
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
