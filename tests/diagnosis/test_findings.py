"""The Diagnosis record as people see it."""

from __future__ import annotations

import numpy as np

from gradscope.diagnosis import diagnose
from gradscope.history import GradientHistory


def test_ipython_shows_a_returned_diagnosis_in_one_line() -> None:
    from IPython.lib.pretty import pretty

    h = GradientHistory(["h1", "out"])
    h.append(range(20), {"grad_norm": np.tile([0.01, 1.0], (20, 1))}, {"loss": np.full(20, 0.25)})
    d = diagnose(h)
    rules = ", ".join(f.rule for f in d.findings)
    assert "vanishing" in rules
    assert pretty(d) == f"<Diagnosis: layer 1 gets 1/100 of the output layer's gradient norm; rules fired: {rules}>"
    healthy = GradientHistory(["h1", "out"])
    healthy.append(range(20), {"grad_norm": np.ones((20, 2))}, {"loss": np.linspace(1.0, 0.1, 20)})
    assert pretty(diagnose(healthy)).endswith("; rules fired: none>")
