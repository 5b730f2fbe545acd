"""The device ring: rows in order, and lost rows counted when it wraps."""

import numpy as np
import tensorflow as tf

from gradscope.recorder import Recorder


def _commit(rec, n):
    @tf.function
    def step():
        # Staged while traced, reduced by commit in the same graph.
        rec.stage_loss(tf.constant(1.0), tf.constant([[0.0, 1.0], [1.0, 0.0]]), tf.constant([[0.2, 0.8], [0.3, 0.7]]))
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
    assert int(rec.calls.numpy()) == 7
