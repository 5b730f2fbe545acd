"""Turns what the hooks staged during one training step into one row, on the device.

The data path inside one step, in the order the ops run:

1. forward: each watched layer's output is staged (`hooks.py` taps it);
2. backward: the same tap's gradient function stages d(loss)/d(output);
3. ``compute_loss`` stages the loss, the targets and the predictions;
4. ``optimizer.apply``: the gradients it is given and the loss scale are
   staged before the update; the optimizer's own updates are staged as it
   writes each variable; after it, `Recorder.commit` reads the updated
   weights, reduces everything staged to a few numbers per layer and writes
   one row into a ring buffer.

Staging (`gradscope.staging`) costs nothing at run time, so the compiled step
gains only the reductions and one write per step. The layout of a row is
defined once, in `RowLayout`: the row is concatenated in its order and split
back by it.

The host calls `Recorder.flush` now and then (every few hundred steps, at
the end of an epoch, or a few times a second for the live view) and gets
the rows as numpy arrays in one transfer.

Example:

>>> import tensorflow as tf
>>> rec = Recorder(["tanh"], [0], capacity=8)
>>> rec.stage.gradients([(0, tf.constant([3.0, 4.0]))])
>>> rec.commit()
>>> rows = rec.flush()
>>> rows.steps.tolist(), rows.grad_sq.tolist()
([0], [[25.0]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradscope.distributed import commit_across_replicas, replica_context
from gradscope.rows import SCALARS, RowLayout, Rows  # noqa: F401 - SCALARS: read from here too
from gradscope.schedule import Schedule
from gradscope.staging import Staged, Staging, variable_value
from gradscope.stats import (
    FORWARD_STATS,
    batch_accuracy,
    finite_or_inf,
    forward_stats_many,
    histogram,
    mean_squares,
    placed,
    sq_norms,
)

_NAN = float("nan")


class ActivationHistograms:
    """Histograms of the layers' outputs at chosen steps: the host raises a
    flag, and the next recorded step fills them (one `tf.cond` per step).

    Args:
        activations: the activation name of each watched layer (or None).
        bins: bins per layer. Defaults to `40`.
    """

    def __init__(self, activations: Sequence[str | None], bins: int = 40) -> None:
        self.activations = list(activations)
        self.bins = int(bins)
        L = len(self.activations)
        with tf.init_scope():
            self.flag = tf.Variable(0, trainable=False, name="gradscope_hist_flag", dtype=tf.int32)
            self.counts = tf.Variable(np.zeros((L, self.bins), np.float32), trainable=False,
                                      name="gradscope_hist_counts")
            self.ranges = tf.Variable(np.zeros((L, 2), np.float32), trainable=False, name="gradscope_hist_ranges")
            self.step = tf.Variable(-1, trainable=False, name="gradscope_hist_step", dtype=tf.int64)

    def fill_if_asked(self, outputs: dict[int, tf.Tensor], step: tf.Tensor) -> None:
        """In the graph: bins ``outputs`` (layer index -> output, or a function giving it) when asked."""
        if not outputs:
            return

        def fill() -> tf.Tensor:
            idx = sorted(outputs)
            # An output may come as a function (under tf.distribute: the
            # gather of every replica's batch), called only here.
            parts = [histogram(outputs[i]() if callable(outputs[i]) else outputs[i], self.activations[i], self.bins)
                     for i in idx]
            rows = [[i] for i in idx]
            self.counts.assign(tf.tensor_scatter_nd_update(self.counts, rows, tf.stack([c for c, _ in parts])))
            self.ranges.assign(tf.tensor_scatter_nd_update(self.ranges, rows, tf.stack([r for _, r in parts])))
            self.step.assign(step)
            self.flag.assign(0)
            return tf.constant(0)

        tf.cond(self.flag > 0, fill, lambda: tf.constant(0))

    def request(self) -> None:
        """Asks the next recorded step to fill the histograms."""
        self.flag.assign(1)

    def read(self) -> dict | None:
        """The last histograms taken, ``{"step", "ranges", "counts"}``, or None."""
        step = int(self.step.numpy())
        if step < 0:
            return None
        return {
            "step": step,
            "ranges": self.ranges.numpy().astype(np.float64),
            "counts": self.counts.numpy().astype(np.float64),
        }


class Recorder:
    """Stages, reduces and stores one row of statistics per training step.

    Args:
        layer_activations: the activation name of each watched layer (or None).
        var_layer: for each watched variable, the index of its layer.
        capacity: rows the ring holds between two flushes. Defaults to `1024`.
        every: record every N-th step only. Defaults to `1`.
        activation_stats: compute the forward statistics (and histograms)
            of the layers' outputs. Defaults to `True`.
        weights_every: measure the weight and update norms on every N-th
            recorded step only (NaN on the others). Defaults to `1`.
        saturation_threshold: |a| at or above which a tanh unit counts as
            saturated (sigmoid: a at or above it, or at or below 1 minus it).
            Defaults to `0.99`.
        histogram_bins: bins of the activation histograms. Defaults to `40`.
    """

    def __init__(
        self,
        layer_activations: Sequence[str | None],
        var_layer: Sequence[int],
        *,
        capacity: int = 1024,
        every: int = 1,
        activation_stats: bool = True,
        weights_every: int = 1,
        saturation_threshold: float = 0.99,
        histogram_bins: int = 40,
    ) -> None:
        self.activations = list(layer_activations)
        self.var_layer = list(var_layer)
        self.layout = RowLayout(len(self.activations), len(self.var_layer))
        self.capacity = int(capacity)
        self.schedule = Schedule(every, weights_every)
        #: Where the hooks hand their tensors over.
        self.stage = Staging(self.activations, len(self.var_layer), self.schedule,
                             activation_stats=activation_stats, saturation_threshold=saturation_threshold)
        self.histograms = ActivationHistograms(self.activations, histogram_bins)
        with tf.init_scope():
            self.ring = tf.Variable(np.zeros((self.capacity, self.layout.width), np.float32), trainable=False,
                                    name="gradscope_ring")
            self.ring_steps = tf.Variable(np.zeros((self.capacity,), np.int64), trainable=False,
                                          name="gradscope_ring_steps", dtype=tf.int64)
            # Rows committed since the last flush.
            self.count = tf.Variable(0, trainable=False, name="gradscope_count", dtype=tf.int64)

    # -- in the step -------------------------------------------------------------
    def commit(self, weights: Sequence[tuple[int, Any]] = ()) -> None:
        """Reduces what this step staged to one row and writes it to the ring.

        Args:
            weights: ``(column, variable)`` of the watched variables, whose
                norms are read here, after the update.
        """
        staged = self.stage.collect()
        if replica_context() is not None:
            # Under tf.distribute: each replica hands its sums over, and the
            # row of the global step is written once, across replicas.
            commit_across_replicas(self, staged, list(weights))
            return
        self.write(lambda: self._row_parts(staged, list(weights)), staged.forward, staged.slow)

    def write(self, parts: Callable[[], dict[str, tf.Tensor]], outputs: dict[int, Any], slow: bool = False) -> None:
        """Writes one row on recorded steps and counts the step.

        Args:
            parts: makes the row's parts (in the recorded branch only).
            outputs: layer index -> output (or a function giving it), for
                the histograms when they are asked for.
            slow: the pending variables were written this step.
        """

        def write() -> tf.Tensor:
            row = self.layout.concat(parts())
            slot = self.count % self.capacity
            self.ring.scatter_nd_update([[slot]], [row])
            self.ring_steps.scatter_nd_update([[slot]], [self.schedule.calls])
            self.count.assign_add(1)
            self.histograms.fill_if_asked(outputs, self.schedule.calls)
            if slow:
                self.stage.clear_pending()
            return tf.constant(0)

        self.schedule.when_recording(write)
        self.schedule.advance()

    def _row_parts(self, b: Staged, weights: list[tuple[int, Any]]) -> dict[str, tf.Tensor]:
        L, V = self.layout.layers, self.layout.variables
        stage = self.stage
        scale = b.scale if b.scale is not None else stage.scale()
        grads = b.grads or []
        present = [(c, g) for c, g in grads if g is not None]
        sq = stage.unscale(sq_norms([g for _, g in present]), scale) if present else None
        grad = placed([V], [c for c, _ in present], finite_or_inf(sq) if present else None)
        # A None gradient (a branch the loss does not reach) is a zero one.
        zero = [c for c, g in grads if g is None]
        if zero:
            grad = placed([V], zero, tf.zeros([len(zero)]), base=grad)
        def not_measured() -> tuple[tf.Tensor, tf.Tensor]:
            nan = tf.fill([V], _NAN)  # one op for both: each op costs in every step
            return nan, nan

        weight, update = self.schedule.when_weighing(lambda: self.weights_and_updates(b, weights), not_measured)
        # Pending values (the slow path) are the base the staged ones go onto.
        idx = sorted(b.forward)
        stats = forward_stats_many([b.forward[i] for i in idx], [self.activations[i] for i in idx],
                                   stage.saturation_threshold) if idx else None
        pending = tf.convert_to_tensor(stage.pending_forward) if b.slow else None
        forward = placed([L, len(FORWARD_STATS)], idx, stats, pending)
        idx = sorted(b.backprop)
        ms = stage.unscale(mean_squares([b.backprop[i] for i in idx]), scale) if idx else None
        backprop = placed([L], idx, ms, tf.convert_to_tensor(stage.pending_backprop) if b.slow else None)
        if b.loss is not None:
            loss, y_true, y_pred = b.loss
            loss_acc = tf.stack([tf.cast(loss, tf.float32), batch_accuracy(y_true, y_pred)])
        elif b.slow:
            loss_acc = tf.convert_to_tensor(stage.pending_scalars)
        else:
            loss_acc = tf.fill([2], _NAN)
        scalars = tf.concat([loss_acc, tf.reshape(scale, [1])], 0)
        return {"forward": forward, "backprop_sq": backprop, "grad_sq": grad,
                "weight_sq": weight, "update_sq": update, "scalars": scalars}

    def weights_and_updates(self, b: Staged, weights: list[tuple[int, Any]]) -> tuple[tf.Tensor, tf.Tensor]:
        """Squared norms of the weights (read now, after the update) and of
        the updates; NaN where not measured, +inf where non-finite."""
        V = self.layout.variables
        weight = placed(
            [V], [c for c, _ in weights],
            finite_or_inf(sq_norms([variable_value(v) for _, v in weights])) if weights else None,
        )
        update = tf.convert_to_tensor(self.stage.pending_update) if b.slow else tf.zeros([V])
        if b.updates:
            idx = sorted(b.updates)
            deltas = [d for i in idx for d in b.updates[i]]
            norms = sq_norms(deltas)
            if len(deltas) > len(idx):  # a variable written more than once
                owner = [k for k, i in enumerate(idx) for _ in b.updates[i]]
                norms = tf.math.unsorted_segment_sum(norms, owner, len(idx))
            update = tf.tensor_scatter_nd_add(update, [[i] for i in idx], norms)
        return weight, finite_or_inf(update)

    # -- on the host -------------------------------------------------------------
    def restart(self) -> None:
        """Starts a new record: step 0 next, no pending rows, no histograms yet."""
        self.count.assign(0)
        self.schedule.start_at(0)
        self.histograms.step.assign(-1)
        self.histograms.flag.assign(0)

    def flush(self) -> Rows:
        """Fetches the rows committed since the last flush (one transfer)."""
        count = int(self.count.numpy())
        if count == 0:
            return self.layout.split(np.zeros((0, self.layout.width), np.float32), np.zeros(0, np.int64))
        if count <= self.capacity:
            # Rows sit at slots 0..count-1: fetch only those.
            block, steps = self.ring[:count].numpy(), self.ring_steps[:count].numpy()
        else:
            # The ring wrapped: the oldest surviving row is at count % capacity.
            order = np.arange(count - self.capacity, count) % self.capacity
            block, steps = self.ring.numpy()[order], self.ring_steps.numpy()[order]
        self.count.assign(0)
        rows = self.layout.split(block, steps)
        rows.lost = count - len(block)
        return rows
