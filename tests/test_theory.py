"""Activation derivatives in float64, and the float32 saturation the lecture warns about."""

import math

import numpy as np
import pytest

from gradscope.theory import (
    backprop_factor,
    derivative,
    derivative_table,
    float32_autodiff,
    layer_profile,
    linear_backprop_ratio,
    mean_square_activation,
    mean_square_derivative,
    per_layer_factor,
    weight_variance,
)


@pytest.mark.parametrize("act,fn", [("tanh", math.tanh), ("sigmoid", lambda s: 1 / (1 + math.exp(-s)))])
@pytest.mark.parametrize("s", [0.0, 1.0, 2.0, 4.0])
def test_derivatives_match_central_differences(act, fn, s):
    h = 1e-5
    assert derivative(act, s) == pytest.approx((fn(s + h) - fn(s - h)) / (2 * h), rel=1e-6)


def test_tanh_prime_8_is_the_lectures_value():
    # The lecture: tanh'(8) = 0.0000004501; sech^2 in float64.
    assert derivative("tanh", 8.0) == pytest.approx(4.501e-7, rel=1e-3)
    assert derivative("tanh", 8.0) == pytest.approx(1 / math.cosh(8.0) ** 2, rel=1e-12)
    row = derivative_table([8.0])[0]
    assert row["relu"] == 1.0 and row["sigmoid"] == pytest.approx(math.exp(-8) / (1 + math.exp(-8)) ** 2)


def test_float32_tanh_saturates_to_exactly_zero_gradient():
    (_, y0, g0), (_, y8, g8) = float32_autodiff("tanh", [0.0, 8.0])
    assert (y0, g0) == (0.0, 1.0)
    assert y8 == 1.0 and g8 == 0.0


def test_linear_ratio_closed_form():
    assert linear_backprop_ratio(100, 0.01, 5) == 1.0
    assert linear_backprop_ratio(100, 0.04, 2) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no closed-form derivative"):
        derivative("gelu", np.zeros(2))


# -- signal propagation at initialisation ---------------------------------------------------------
@pytest.mark.parametrize("init", ["standard", "glorot_uniform", "he_normal", "random_uniform", "lecun_normal"])
def test_weight_variance_is_what_keras_draws(init):
    from gradscope.models import kernel_initializer

    kernel = np.asarray(kernel_initializer(init, seed=3)((500, 300)), dtype=np.float64)
    assert kernel.var() == pytest.approx(weight_variance(init, 500, 300), rel=0.02)


def test_weight_variance_of_an_unknown_initializer_is_refused():
    with pytest.raises(ValueError, match="no closed-form weight variance for 'orthogonal'"):
        weight_variance("orthogonal", 3, 3)


@pytest.mark.parametrize("q", [0.01, 0.3, 1.0, 4.0])
def test_gaussian_expectations_match_monte_carlo(q):
    s = np.random.default_rng(0).normal(0.0, math.sqrt(q), 2_000_000)
    assert mean_square_derivative("tanh", q) == pytest.approx(np.mean((1 - np.tanh(s) ** 2) ** 2), rel=2e-3)
    assert mean_square_activation("tanh", q) == pytest.approx(np.mean(np.tanh(s) ** 2), rel=2e-3)
    assert mean_square_derivative("relu", q) == pytest.approx(np.mean(s > 0), abs=2e-3)
    assert mean_square_activation("relu", q) == pytest.approx(np.mean(np.maximum(s, 0) ** 2), rel=5e-3)


def test_backprop_factors_of_the_papers():
    # Glorot & Bengio eq. 15: n Var(W) = 1/3 under the standard init; He et al.: ReLU halves the variance.
    assert backprop_factor(1000 * weight_variance("standard", 1000, 1000)) == pytest.approx(1 / math.sqrt(3))
    assert backprop_factor(512 * weight_variance("glorot_uniform", 512, 512), 0.5) == pytest.approx(1 / math.sqrt(2))
    assert backprop_factor(512 * weight_variance("he_normal", 512, 512), 0.5) == pytest.approx(1.0)


def test_linear_profile_is_glorots_eq_6():
    widths = [300, 200, 200, 200, 200]
    profile = layer_profile(widths, "random_uniform", "linear", 0.5)
    sigma2 = weight_variance("random_uniform", 200, 200)
    assert profile["backprop"][0] == pytest.approx(linear_backprop_ratio(200, sigma2, 3))
    assert per_layer_factor(profile["backprop"]) == pytest.approx(math.sqrt(200 * sigma2))
    # Forward, eq. 5: Var(s) is multiplied by n Var(W) per layer, from n_0 Var(W) Var[x].
    assert profile["q"] == pytest.approx([300 * sigma2 * 0.5 * (200 * sigma2) ** k for k in range(4)])
    # Eq. 14: one sample's weight gradient is the same in every layer when all layers are alike (not the first
    # here: its 300 inputs make Var(s) 300/200 times larger, and its weight gradient sqrt(200/300) times smaller).
    assert profile["weight_grad"] == pytest.approx([math.sqrt(200 / 300), 1, 1, 1])
    alike = layer_profile([200] * 5, "random_uniform", "linear", 0.5)["weight_grad"]
    assert alike == pytest.approx(np.ones(4))


def test_relu_profiles_under_glorot_and_he():
    glorot = layer_profile([784, *[512] * 6], "glorot_uniform", "relu", 0.1)
    he = layer_profile([784, *[512] * 6], "he_normal", "relu", 0.1)
    assert per_layer_factor(glorot["backprop"]) == pytest.approx(1 / math.sqrt(2))
    assert per_layer_factor(he["backprop"]) == pytest.approx(1.0)
    assert he["derivative_rms"] == pytest.approx([math.sqrt(0.5)] * 6)
    assert he["q"][1:] == pytest.approx([he["q"][1]] * 5)  # He's forward condition, eq. 10: Var(s) kept


def test_tanh_derivative_factor_falls_as_the_weights_grow():
    small = layer_profile([784, 512, 512], "glorot_uniform", "tanh", 0.1)["derivative_rms"]
    large = layer_profile([784, 512, 512], "he_normal", "tanh", 0.1)["derivative_rms"]
    assert np.all(large < small) and np.all(small < 1)
