"""The lecture's network and its parameter counts."""

import pytest

from gradscope.models import LECTURE_HIDDEN, lecture_mlp, mlp_param_count


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
