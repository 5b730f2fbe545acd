"""The device ring: rows in order, and lost rows counted when it wraps."""

import numpy as np
import tensorflow as tf

from gradscope.recorder import Recorder


def _commit(rec, n):
    @tf.function
    def step():
        # Staged while traced, reduced by commit in the same graph.
        rec.stage.loss(tf.constant(1.0), tf.constant([[0.0, 1.0], [1.0, 0.0]]), tf.constant([[0.2, 0.8], [0.3, 0.7]]))
        rec.commit()

    for _ in range(n):
        step()


def test_flush_returns_rows_in_order_and_resets():
    rec = Recorder(["tanh"], [0, 0], capacity=8)
    _commit(rec, 3)
    rows = rec.flush()
    assert rows.steps.tolist() == [0, 1, 2] and rows.lost == 0
    assert rows.scalars[:, 0].tolist() == [1.0, 1.0, 1.0]  # loss
    assert rows.scalars[:, 1].tolist() == [0.5, 0.5, 0.5]  # accuracy: one of two argmax hits
    assert len(rec.flush()) == 0
    _commit(rec, 2)
    assert rec.flush().steps.tolist() == [3, 4]


def test_ring_wrap_keeps_the_newest_rows_and_counts_the_lost():
    rec = Recorder(["tanh"], [0], capacity=3)
    _commit(rec, 5)
    rows = rec.flush()
    assert rows.steps.tolist() == [2, 3, 4] and rows.lost == 2


def test_every_n_records_only_those_steps():
    rec = Recorder(["relu"], [0], capacity=8, every=3)
    _commit(rec, 7)
    assert rec.flush().steps.tolist() == [0, 3, 6]
    assert rec.schedule.step == 7


def _weighted_steps(rec, v, grads):
    """Steps that stage a gradient and an update of ``v``, then commit."""

    @tf.function
    def step(g):
        rec.stage.gradients([(0, g)])
        delta = 0.5 * g
        rec.stage.update(0, delta)
        v.assign_sub(delta)
        rec.commit([(0, v)])

    for g in grads:
        step(tf.constant(g, tf.float32))


def test_weights_every_measures_weights_and_updates_on_every_kth_recorded_step():
    v = tf.Variable([3.0, 4.0])
    rec = Recorder(["tanh"], [0], capacity=16, every=2, weights_every=2)
    _weighted_steps(rec, v, [[0.0, 2.0]] * 9)
    rows = rec.flush()
    assert rows.steps.tolist() == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(rows.grad_sq[:, 0], 4.0)  # every recorded step
    measured = [0, 4, 8]  # steps with calls % (every * weights_every) == 0
    for r, step in enumerate(rows.steps):
        if step in measured:
            # Read after the update: v = [3, 4 - (step + 1)].
            assert rows.weight_sq[r, 0] == 9.0 + (3.0 - step) ** 2
            assert rows.update_sq[r, 0] == 1.0
        else:
            assert np.isnan(rows.weight_sq[r, 0]) and np.isnan(rows.update_sq[r, 0])


def test_a_nonfinite_norm_is_recorded_as_inf_not_nan():
    v = tf.Variable([1.0, 1.0])
    rec = Recorder(["tanh"], [0], capacity=4)
    _weighted_steps(rec, v, [[np.nan, 0.0]])
    rows = rec.flush()
    assert np.isposinf(rows.grad_sq[0, 0]) and np.isposinf(rows.update_sq[0, 0]) and np.isposinf(rows.weight_sq[0, 0])


def test_the_row_layout_concatenates_and_splits_back_the_same_numbers():
    from gradscope.rows import RowLayout
    from gradscope.stats import FORWARD_STATS

    layout = RowLayout(layers=2, variables=3)
    F = len(FORWARD_STATS)
    parts = {
        "forward": np.arange(2 * F, dtype=np.float32).reshape(2, F),
        "backprop_sq": np.array([0.5, 0.25], np.float32),
        "grad_sq": np.array([1.0, 2.0, 3.0], np.float32),
        "weight_sq": np.array([4.0, 5.0, 6.0], np.float32),
        "update_sq": np.array([7.0, 8.0, 9.0], np.float32),
        "scalars": np.array([0.1, 0.2, 1.0], np.float32),
    }
    row = layout.concat({k: tf.constant(v) for k, v in parts.items()}).numpy()
    assert row.shape == (layout.width,) == (2 * F + 2 + 3 * 3 + 3,)
    rows = layout.split(np.stack([row, 2 * row]), np.array([4, 5]))
    assert rows.steps.tolist() == [4, 5]
    for name, value in parts.items():
        np.testing.assert_array_equal(getattr(rows, name)[0], value)
        np.testing.assert_array_equal(getattr(rows, name)[1], 2 * value)


def test_rows_become_per_layer_series_summed_over_each_layers_variables():
    from gradscope.rows import Rows

    n, F = 2, 7
    rows = Rows(
        steps=np.array([10, 11]),
        forward=np.zeros((n, 2, F)),
        backprop_sq=np.array([[4.0, 9.0], [16.0, 25.0]]),
        grad_sq=np.array([[9.0, 16.0, 1.0], [0.0, 0.0, 4.0]]),  # layer 0 owns variables 0 and 1
        weight_sq=np.array([[1.0, 3.0, 4.0], [np.nan] * 3]),  # NaN: not measured that step
        update_sq=np.array([[0.01, 0.03, 0.0], [np.nan] * 3]),
        scalars=np.array([[0.5, 0.25, 1.0], [0.4, 0.5, 1.0]]),
    )
    parts = rows.history_parts(var_layer=[0, 0, 1], epoch=3)
    series = parts["series"]
    np.testing.assert_allclose(series["grad_norm"], [[5.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(series["backprop"], [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_allclose(series["update_ratio"][0], [0.1, 0.0])
    assert np.isnan(series["update_ratio"][1]).all()
    assert parts["scalars"]["epoch"].tolist() == [3.0, 3.0] and parts["scalars"]["accuracy"].tolist() == [0.25, 0.5]
    np.testing.assert_allclose(parts["variable_series"]["grad_norm"][0], [3.0, 4.0, 1.0])
