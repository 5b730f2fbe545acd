"""Measures over the record: the ratios to the output layer over the first and the last tenth."""

from __future__ import annotations

import numpy as np

from gradscope.diagnosis import depth_ratios


def test_late_vanishing_is_caught():
    early = np.tile([0.5, 1.0], (50, 1))
    late = np.tile([0.001, 1.0], (50, 1))
    worst, first, last = depth_ratios(np.vstack([early, late]))
    assert first[0] == 0.5 and last[0] == 0.001 and worst[0] == 0.001


def test_a_convolution_s_gains_count_its_kernel_once():
    # 3x3 kernel, 16 -> 16 channels: fans of 144 each way, 2,304 weights. At
    # Glorot's variance 2 / (144 + 144) the norm is 4 and both gains are 1.
    from gradscope.diagnosis import weight_gains
    from gradscope.history import GradientHistory

    info = [{"fan_in": 144, "fan_out": 144, "kernel_size": 2304, "initial_kernel_norm": 4.0}]
    h = GradientHistory(["conv"], variables=["conv/kernel"], layer_info=info)
    h.append([0], {"grad_norm": np.ones((1, 1))})
    forward, backward = weight_gains(h)
    assert (forward[0], backward[0]) == (1.0, 1.0)


def test_a_trunk_of_one_layer_keeps_the_output_layer_as_reference():
    from gradscope.diagnosis import trunk_reference
    from gradscope.history import GradientHistory

    info = [{"output_shape": "(None, 20, 8)"}, {"output_shape": "(None, 16)"}, {"output_shape": "(None, 2)"}]
    assert trunk_reference(GradientHistory(["embedding", "lstm", "out"], layer_info=info)).tolist() == [2, 2, 2]
