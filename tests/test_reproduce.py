"""The papers' claims on small versions with fixed seeds: the measured factors against the closed forms, and the
verdicts of He et al.'s depth experiment in small."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from conftest import MNIST_DIR
from gradscope.history import GradientHistory
from gradscope.reproduce import (
    FULL_SCALES,
    SCALES,
    TOLERANCE,
    Scale,
    depth_experiment,
    glorot2010,
    he2015,
    hidden_profile,
    kernel_gradient_profile,
    lecture,
)

mnist_only = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="needs ../shared/data/mnist")


@pytest.fixture(scope="module")
def digits_data():
    from gradscope.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist_data():
    from gradscope.data import load_dataset

    return load_dataset("mnist", MNIST_DIR)


def quiet(text: str) -> None:
    pass


def test_hidden_profile_is_the_rms_over_rows_of_the_hidden_layers():
    h = GradientHistory(["hidden_1", "hidden_2", "output"])
    h.append([0, 1], {"backprop": np.array([[1.0, 2.0, 9.0], [7.0, 2.0, 9.0]])})
    assert hidden_profile(h, "backprop") == pytest.approx([5.0, 2.0])
    assert hidden_profile(h, "backprop", rows=slice(0, 1)) == pytest.approx([1.0, 2.0])


def test_kernel_gradient_profile_divides_by_the_kernel_entries():
    h = GradientHistory(["hidden_1", "hidden_2", "output"],
                        variables=["hidden_1/kernel", "hidden_1/bias", "hidden_2/kernel", "output/kernel"])
    # Two rows: per-entry RMS = sqrt(mean(norm^2) / entries).
    h.append([0, 1], {}, variable_series={"grad_norm": np.array([[6.0, 5.0, 2.0, 1.0], [6.0, 5.0, 4.0, 1.0]])})
    assert kernel_gradient_profile(h, [3, 4, 5]) == pytest.approx([6 / math.sqrt(12), math.sqrt(10 / 20)])


def test_full_scales_are_the_papers_sizes_or_larger():
    for name, scale in SCALES.items():
        full = FULL_SCALES[name]
        assert full.batches > scale.batches
    # The papers' sizes: 5 tanh layers of 1000, 21 ReLU layers of 512 (and the depth experiment,
    # 512 wide for 1,000 steps under --full).
    assert (SCALES["glorot2010"].width, SCALES["glorot2010"].depth) == (1000, 5)
    assert (FULL_SCALES["he2015"].train_width, FULL_SCALES["he2015"].train_steps) == (512, 1000)
    assert (SCALES["he2015"].width, SCALES["he2015"].depth, SCALES["he2015"].train_depth) == (512, 21, 30)


@pytest.mark.slow
def test_glorot2010_factors_and_flat_weight_gradients_agree_within_5_percent(digits_data):
    # 4 tanh layers of 1000 on the 8x8 digits: the theory needs only the inputs' mean square.
    record = glorot2010(digits_data, Scale(width=1000, depth=4, batch_size=128, batches=2, samples=32), say=quiet)
    standard, standard_w, normalized, normalized_w = record.claims
    assert standard.theory == pytest.approx(1 / math.sqrt(3), rel=0.02)  # eq. 15: tanh' is near 1 here
    assert 0.85 < normalized.theory < 1  # n Var W = 1, less the tanh derivative
    for claim in record.claims:
        assert claim.tolerance == TOLERANCE == 0.05
        assert claim.deviation <= 0.05, (claim.setup, claim.theory, claim.measured)
    # The figure holds each layer: the standard init's profile falls by 1/sqrt(3) a layer toward the input.
    standard_line = record.figures[0].series[0]
    steps = np.array(standard_line.measured[:-1]) / np.array(standard_line.measured[1:])
    assert steps == pytest.approx(np.full(len(steps), standard.theory), rel=0.1)  # layer by layer
    assert standard_line.measured[0] / standard_line.measured[-1] == pytest.approx((1 / math.sqrt(3)) ** 3, rel=0.1)
    assert [f.name for f in record.figures] == ["backprop", "weight_gradients"]


@pytest.mark.slow
def test_he2015_relu_factors_are_one_over_sqrt_2_under_glorot_and_1_under_he(digits_data):
    record = he2015(digits_data, Scale(width=256, depth=8, batch_size=128, batches=2, train_steps=0), say=quiet)
    glorot, he = record.claims
    assert glorot.theory == pytest.approx(1 / math.sqrt(2)) and he.theory == pytest.approx(1.0)
    assert glorot.measured == pytest.approx(glorot.theory, rel=0.05)
    assert he.measured == pytest.approx(he.theory, rel=0.05)
    assert glorot.agrees and he.agrees


@pytest.mark.slow
@mnist_only
def test_he2015_depth_experiment_he_trains_and_glorot_stalls(mnist_data):
    # The depth experiment in small, shortened to 150 steps: He init already learns, Glorot init has not moved.
    runs = {}
    claims, figure = depth_experiment(mnist_data, replace(SCALES["he2015"], train_steps=150), seed=0, say=quiet,
                                      runs=runs)
    glorot, he = claims  # in the order of HE_INITS
    assert "Glorot init" in glorot.setup and "He init" in he.setup
    accuracy = {series.label: np.mean(series.measured[-15:]) for series in figure.series}
    # The claims follow the accuracy: Glorot's within 10 points of chance, He's above one half.
    assert glorot.holds == (accuracy["Glorot init"] < 0.2) and he.holds == (accuracy["He init (he_normal)"] >= 0.5)
    assert glorot.holds and he.holds
    assert "stalled" in glorot.measured_text and "findings: none" in he.measured_text
    # The records behind the verdicts: 150 steps each, and at the start layer 1 gets about 0.707^29 of the top
    # hidden layer's gradient under Glorot's init.
    assert sorted(runs) == ["glorot_uniform-relu-30x256-sgd150", "he_normal-relu-30x256-sgd150"]
    start = hidden_profile(runs["glorot_uniform-relu-30x256-sgd150"], "backprop", rows=slice(0, 1))
    assert 0.2 * 0.5**14.5 < start[0] / start[-1] < 5 * 0.5**14.5


@pytest.mark.slow
@mnist_only
def test_lecture_claims_on_the_lecture_network(mnist_data):
    record = lecture(mnist_data, Scale(batch_size=128, batches=2), say=quiet)
    assert all(claim.agrees for claim in record.claims), [(c.setup, c.deviation) for c in record.claims]
    derivative = record.claims[-1]
    assert derivative.measured == pytest.approx(4.501e-7, rel=1e-3)
    # tanh's factor falls where the weights spread s (he_normal); ReLU's stays sqrt(1/2) under both inits.
    tanh_glorot, tanh_he, relu_glorot, relu_he = record.figures[0].series
    assert max(tanh_he.measured) < min(tanh_glorot.measured)
    assert relu_glorot.theory == relu_he.theory == [pytest.approx(math.sqrt(0.5))] * 4
    # random_uniform shrinks tanh's outputs layer by layer; Glorot keeps them within a factor of 1.2.
    small, glorot = record.figures[1].series
    assert small.measured[-1] < 0.5 * small.measured[0]
    assert max(glorot.measured) < 1.2 * min(glorot.measured)
    assert [f.name for f in record.figures] == ["activation_derivative", "activation_spread", "tanh_derivative"]
