"""The lecture's network and its parameter counts."""

import numpy as np
import pytest

from gradscope.models import LECTURE_HIDDEN, kernel_initializer, lecture_mlp, mlp_param_count


@pytest.mark.slow
def test_lecture_network_has_1859082_parameters():
    model = lecture_mlp()
    assert model.count_params() == 1_859_082
    assert [layer.units for layer in model.layers] == [1024, 512, 512, 512, 10]
    assert {layer.activation.__name__ for layer in model.layers} == {"tanh"}
    assert mlp_param_count(784, LECTURE_HIDDEN, 10) == model.count_params()


@pytest.mark.slow
def test_worked_example_has_1149010_parameters():
    model = lecture_mlp(784, hidden=(500, 500, 500, 500), outputs=10)
    assert model.count_params() == 1_149_010 == mlp_param_count(784, (500,) * 4, 10)


def test_hidden_activation_leaves_the_output_alone():
    model = lecture_mlp(64, hidden=(8, 8), activation="relu", output_activation="tanh", init="he_normal", seed=1)
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "relu", "tanh"]
    # Per-layer seeds: layers of equal shape do not share weights.
    twin = lecture_mlp(8, hidden=(8, 8), seed=1)
    assert (twin.layers[0].kernel.numpy() != twin.layers[1].kernel.numpy()).any()


def test_standard_init_is_glorot_and_bengios_uniform_heuristic():
    # U[-1/sqrt(n), 1/sqrt(n)] with n the fan-in (Glorot & Bengio 2010, eq. 1): Var(W) = 1/(3n).
    model = lecture_mlp(400, hidden=(300,), init="standard", seed=0)
    kernel = model.layers[0].kernel.numpy().astype(np.float64)
    assert np.abs(kernel).max() <= 1 / np.sqrt(400)
    assert np.abs(kernel).max() > 0.99 / np.sqrt(400)
    assert kernel.var() * 400 == pytest.approx(1 / 3, rel=0.02)
    output = model.layers[1].kernel.numpy()
    assert np.abs(output).max() <= 1 / np.sqrt(300)  # its own fan-in


def test_standard_init_is_accepted_where_keras_names_are():
    from gradscope.experiments import Config, check_names

    check_names(Config(init="standard"))  # no error
    assert type(kernel_initializer("standard", seed=1, layer=2)).__name__ == "VarianceScaling"
    assert kernel_initializer("standard", seed=1, layer=2).seed == 1002
