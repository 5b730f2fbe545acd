"""Staging: kept for the commit in the step's graph, reduced at once elsewhere."""

import numpy as np
import tensorflow as tf

from gradscope.schedule import Schedule
from gradscope.staging import Staging


def test_in_the_steps_graph_tensors_are_kept_not_reduced():
    staging = Staging(["tanh"], n_vars=1, schedule=Schedule())

    @tf.function
    def step(a):
        staging.forward(0, a)
        staged = staging.collect()
        assert list(staged.forward) == [0] and not staged.slow  # a Python-side check, at trace time
        return staged.forward[0]

    np.testing.assert_array_equal(step(tf.constant([[0.5]])).numpy(), [[0.5]])
    assert np.isnan(staging.pending_forward.numpy()).all()  # nothing went to the slow path


def test_inside_a_cond_branch_the_statistics_go_to_the_pending_variables():
    staging = Staging(["tanh"], n_vars=1, schedule=Schedule())

    @tf.function
    def step(a):
        tf.cond(tf.constant(True), lambda: (staging.forward(0, a), tf.constant(0))[1], lambda: tf.constant(0))
        return staging.collect().slow

    a = tf.constant([[0.0, 0.995], [-0.999, 0.5]])
    assert bool(step(a))
    mean, std, saturation = staging.pending_forward.numpy()[0, :3]
    assert np.isclose(mean, np.mean(a)) and np.isclose(std, np.std(a), rtol=1e-5)
    assert saturation == 0.5  # two of four outputs at |a| >= 0.99
    staging.clear_pending()
    assert np.isnan(staging.pending_forward.numpy()).all()


def test_loss_scale_divides_squares_only_when_there_is_one():
    staging = Staging(["tanh"], n_vars=1, schedule=Schedule())
    assert float(staging.unscale(tf.constant(16.0), staging.scale())) == 16.0
    staging.scale_fn = lambda: tf.constant(4.0)
    assert float(staging.unscale(tf.constant(16.0), staging.scale())) == 1.0
