"""Activation derivatives in float64, and the float32 saturation the lecture warns about."""

import math

import numpy as np
import pytest

from gradscope.theory import derivative, derivative_table, float32_autodiff, linear_backprop_ratio


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
