"""first_nonfinite: where a run first went NaN or Inf, on records whose origin is known."""

from __future__ import annotations

import numpy as np

from gradscope.diagnosis import first_nonfinite
from gradscope.history import GradientHistory


def test_first_nonfinite_prefers_the_forward_origin():
    h = GradientHistory(["a", "b", "c"], variables=["a/kernel", "b/kernel", "c/kernel"])
    act = np.zeros((4, 3))
    act[2, 1:] = np.nan  # layer b's output (and so c's) is NaN at step 2
    grads = np.ones((4, 3))
    grads[2:, :] = np.inf  # in the record, +inf: non-finite; NaN: not measured
    h.append([0, 1, 2, 3], {"act_mean": act, "nonfinite": np.isnan(act).astype(float)},
             {"loss": [1, 1, np.nan, np.nan]}, {"grad_norm": grads, "weight_norm": np.ones((4, 3))})
    r = first_nonfinite(h)
    assert (r.step, r.layer, r.where) == (2, "b", "activations")
    assert "step 2" in r.sentence() and "layer b" in r.sentence()
    # Under loss scaling, non-finite gradients alone are the scaler's business.
    h2 = GradientHistory(["a"], variables=["a/kernel"])
    h2.append([0, 1], {"act_mean": np.zeros((2, 1))}, {"loss": [1.0, 1.0]},
              {"grad_norm": np.array([[np.inf], [1.0]]), "weight_norm": np.ones((2, 1))})
    assert first_nonfinite(h2, loss_scaled=True) is None
    assert first_nonfinite(h2).where == "gradients"


def _weights_history(weights, grads, nonfinite=None):
    n = len(weights)
    h = GradientHistory(["a", "b"], variables=["a/kernel", "b/kernel"])
    series = {"nonfinite": np.zeros((n, 2)) if nonfinite is None else nonfinite}
    h.append(np.arange(n), series, {"loss": np.ones(n)}, {"grad_norm": grads, "weight_norm": weights})
    return h


def test_weights_an_update_made_nonfinite_are_the_origin():
    # Step 1's update (with finite gradients) made b's kernel infinite; the
    # weight norms are read after the update, so row 1 shows it.
    w = np.ones((4, 2))
    w[1:, 1] = np.inf
    g = np.ones((4, 2))
    g[2:, :] = np.inf
    r = first_nonfinite(_weights_history(w, g))
    assert (r.step, r.layer, r.variable, r.where) == (1, "b", "kernel", "weights")


def test_weights_broken_with_their_gradient_point_to_the_gradient():
    # Weights measured every other row (NaN: not measured). b's kernel was
    # non-finite after step 2 together with its gradient (so step 2 is the
    # gradient's fault); a's kernel only becomes so in step 4.
    w = np.array([[1, 1], [np.nan, np.nan], [1, np.inf], [np.nan, np.nan], [np.inf, np.inf]], float)
    g = np.array([[1, 1], [1, 1], [1, np.inf], [np.inf, np.inf], [np.inf, np.inf]], float)
    r = first_nonfinite(_weights_history(w, g))
    assert (r.step, r.layer, r.where) == (2, "b", "gradients")
    # Had step 2's gradient been finite, b's weights are the origin.
    g[2, 1] = 1.0
    assert first_nonfinite(_weights_history(w, g)).where == "weights"


def test_weights_poisoned_between_steps_show_as_that_layers_output():
    # Set to inf from outside between steps 0 and 1: the first non-finite
    # values any step records are b's outputs at step 1.
    w = np.array([[1, 1], [1, np.inf]], float)
    g = np.array([[1, 1], [np.inf, np.inf]], float)
    act = np.array([[0, 0], [0, 1]], float)
    r = first_nonfinite(_weights_history(w, g, act))
    assert (r.step, r.layer, r.variable, r.where) == (1, "b", "kernel", "activations")
