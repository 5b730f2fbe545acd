"""Measures over the record: the ratios to the output layer over the first and the last tenth."""

from __future__ import annotations

import numpy as np

from gradscope.diagnosis import depth_ratios


def test_late_vanishing_is_caught():
    early = np.tile([0.5, 1.0], (50, 1))
    late = np.tile([0.001, 1.0], (50, 1))
    worst, first, last = depth_ratios(np.vstack([early, late]))
    assert first[0] == 0.5 and last[0] == 0.001 and worst[0] == 0.001
