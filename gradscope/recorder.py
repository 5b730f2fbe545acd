"""Device-side buffers that collect one row of statistics per training step.

The data path inside one step, in the order the ops run:

1. forward: each watched layer's output is tapped (`hooks.py`) and its
   `stats.forward_stats` are *staged* into a small pending table;
2. backward: the same tap's gradient function stages the RMS of
   d(loss)/d(output);
3. ``compute_loss`` stages the loss and batch accuracy;
4. ``optimizer.apply``: the gradients' and the weights' squared norms are
   read, the optimizer's own update sizes are staged as it writes each
   variable, and after it the whole row is *committed* to a ring buffer.

All of it stays on the device. The host calls `Recorder.flush` now and then
(every few hundred steps, at the end of an epoch, or a few times a second for
the live view) and gets the rows as numpy arrays in one transfer.

Example:

>>> rec = Recorder(["dense"], [0, 0], capacity=64)   # doctest: +SKIP
>>> rows = rec.flush()                                # doctest: +SKIP
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from gradscope.stats import FORWARD_STATS, forward_stats, histogram

_NAN = float("nan")
SCALARS = ("loss", "accuracy", "loss_scale")


@dataclass
class Rows:
    """Rows fetched from the device: the raw record of a stretch of steps."""

    steps: np.ndarray  # (n,) int64, global step of each row
    forward: np.ndarray  # (n, layers, len(FORWARD_STATS))
    backprop_sq: np.ndarray  # (n, layers) mean square of d(loss)/d(output)
    grad_sq: np.ndarray  # (n, variables)
    weight_sq: np.ndarray  # (n, variables)
    update_sq: np.ndarray  # (n, variables)
    scalars: np.ndarray  # (n, len(SCALARS))
    lost: int = 0  # rows overwritten in the ring before they were fetched

    def __len__(self) -> int:
        return len(self.steps)


class Recorder:
    """Staging table, ring buffer and step counter, as `tf.Variable`s.

    Args:
        layer_activations: the activation name of each watched layer (or None).
        var_layer: for each watched variable, the index of its layer.
        capacity: rows the ring holds between two flushes. Defaults to `1024`.
        every: record every N-th step only. Defaults to `1`.
        saturation_threshold: |a| above which a tanh unit counts as
            saturated (sigmoid: a above it or below 1 minus it). Defaults to
            `0.99`.
        histogram_bins: bins of the activation histograms. Defaults to `40`.
    """

    def __init__(
        self,
        layer_activations: Sequence[str | None],
        var_layer: Sequence[int],
        *,
        capacity: int = 1024,
        every: int = 1,
        saturation_threshold: float = 0.99,
        histogram_bins: int = 40,
    ) -> None:
        self.activations = list(layer_activations)
        self.n_layers = len(self.activations)
        self.n_vars = len(var_layer)
        self.var_layer = list(var_layer)
        self.capacity = int(capacity)
        self.every = int(every)
        self.saturation_threshold = float(saturation_threshold)
        self.bins = int(histogram_bins)
        self.scale_fn: Callable[[], tf.Tensor] | None = None
        L, V, F = self.n_layers, self.n_vars, len(FORWARD_STATS)
        self.width = L * F + L + 3 * V + len(SCALARS)
        self._lock = threading.Lock()
        with tf.init_scope():
            var = lambda value, name, dtype=tf.float32: tf.Variable(  # noqa: E731
                value, trainable=False, name=f"gradscope_{name}", dtype=dtype
            )
            # Pending values of the step under way.
            self.p_forward = var(np.full((L, F), _NAN, np.float32), "forward")
            self.p_backprop = var(np.full((L,), _NAN, np.float32), "backprop")
            self.p_grad = var(np.full((V,), _NAN, np.float32), "grad")
            self.p_update = var(np.zeros((V,), np.float32), "update")
            self.p_scalars = var(np.full((len(SCALARS),), _NAN, np.float32), "scalars")
            # The ring of committed rows, and counters.
            self.ring = var(np.zeros((self.capacity, self.width), np.float32), "ring")
            self.ring_steps = var(np.zeros((self.capacity,), np.int64), "ring_steps", tf.int64)
            self.count = var(0, "count", tf.int64)  # rows committed since the last flush
            self.calls = var(0, "calls", tf.int64)  # optimizer steps seen, ever
            # Histograms: the host raises the flag, the next recorded step fills them.
            self.hist_flag = var(0, "hist_flag", tf.int32)
            self.hist_counts = var(np.zeros((L, self.bins), np.float32), "hist_counts")
            self.hist_ranges = var(np.zeros((L, 2), np.float32), "hist_ranges")
            self.hist_step = var(-1, "hist_step", tf.int64)

    # -- in-graph staging -----------------------------------------------------
    def _when_recording(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` (which only writes variables) on recorded steps only."""
        if self.every == 1:
            fn()
            return

        def run() -> tf.Tensor:
            fn()
            return tf.constant(0)

        tf.cond(tf.equal(self.calls % self.every, 0), run, lambda: tf.constant(0))

    def _scale(self) -> tf.Tensor:
        return tf.cast(self.scale_fn(), tf.float32) if self.scale_fn else tf.constant(1.0)

    def stage_forward(self, layer: int, output: tf.Tensor) -> None:
        """Forward statistics (and, when asked for, a histogram) of one layer."""
        act = self.activations[layer]

        def write() -> None:
            stats = forward_stats(output, act, self.saturation_threshold)
            self.p_forward.assign(tf.tensor_scatter_nd_update(self.p_forward, [[layer]], [stats]))

            def hist() -> tf.Tensor:
                counts, rng = histogram(output, act, self.bins)
                self.hist_counts.assign(tf.tensor_scatter_nd_update(self.hist_counts, [[layer]], [counts]))
                self.hist_ranges.assign(tf.tensor_scatter_nd_update(self.hist_ranges, [[layer]], [rng]))
                return tf.constant(0)

            tf.cond(self.hist_flag > 0, hist, lambda: tf.constant(0))

        self._when_recording(write)

    def stage_backprop(self, layer: int, upstream: tf.Tensor) -> None:
        """Mean square of d(loss)/d(output), unscaled under loss scaling."""

        def write() -> None:
            ms = tf.reduce_mean(tf.square(tf.cast(upstream, tf.float32))) / tf.square(self._scale())
            self.p_backprop.assign(tf.tensor_scatter_nd_update(self.p_backprop, [[layer]], [ms]))

        self._when_recording(write)

    def stage_scalars(self, loss: tf.Tensor, accuracy: tf.Tensor) -> None:
        def write() -> None:
            values = tf.stack([tf.cast(loss, tf.float32), tf.cast(accuracy, tf.float32)])
            self.p_scalars.assign(tf.tensor_scatter_nd_update(self.p_scalars, [[0], [1]], values))

        self._when_recording(write)

    def stage_grads(self, grad_sq: Sequence[tuple[int, tf.Tensor]]) -> None:
        """Squared gradient norms by variable index, as the optimizer gets them."""
        if not grad_sq:
            return
        scale2 = tf.square(self._scale())

        def write() -> None:
            idx = [[i] for i, _ in grad_sq]
            values = tf.stack([v for _, v in grad_sq]) / scale2
            self.p_grad.assign(tf.tensor_scatter_nd_update(self.p_grad, idx, values))

        self._when_recording(write)

    def stage_update(self, var_index: int, update_sq: tf.Tensor) -> None:
        """Adds the squared size of one write the optimizer made to a variable."""

        def write() -> None:
            self.p_update.assign(
                tf.tensor_scatter_nd_add(self.p_update, [[var_index]], [tf.cast(update_sq, tf.float32)])
            )

        self._when_recording(write)

    def commit(self, weight_sq: Sequence[tuple[int, tf.Tensor]]) -> None:
        """Closes the step: writes the pending row to the ring and resets it."""

        def write() -> None:
            w = tf.zeros((self.n_vars,), tf.float32)
            if weight_sq:
                w = tf.tensor_scatter_nd_update(w, [[i] for i, _ in weight_sq], tf.stack([v for _, v in weight_sq]))
            scalars = tf.tensor_scatter_nd_update(self.p_scalars, [[2]], [self._scale()])
            row = tf.concat(
                [
                    tf.reshape(self.p_forward, [-1]),
                    self.p_backprop,
                    self.p_grad,
                    w,
                    self.p_update,
                    scalars,
                ],
                0,
            )
            slot = self.count % self.capacity
            self.ring.scatter_nd_update([[slot]], [row])
            self.ring_steps.scatter_nd_update([[slot]], [self.calls])
            self.count.assign_add(1)
            self.hist_step.assign(tf.where(self.hist_flag > 0, self.calls, self.hist_step))
            self.hist_flag.assign(0)
            self.p_forward.assign(tf.fill(tf.shape(self.p_forward), _NAN))
            self.p_backprop.assign(tf.fill(tf.shape(self.p_backprop), _NAN))
            self.p_grad.assign(tf.fill(tf.shape(self.p_grad), _NAN))
            self.p_update.assign(tf.zeros_like(self.p_update))
            self.p_scalars.assign(tf.fill(tf.shape(self.p_scalars), _NAN))

        self._when_recording(write)
        self.calls.assign_add(1)

    # -- host side ------------------------------------------------------------
    def flush(self) -> Rows:
        """Fetches the rows committed since the last flush (one transfer)."""
        with self._lock:
            count = int(self.count.numpy())
            if count == 0:
                return self._split(np.zeros((0, self.width), np.float32), np.zeros(0, np.int64))
            n = min(count, self.capacity)
            ring = self.ring.numpy()
            steps = self.ring_steps.numpy()
            self.count.assign(0)
        # The ring wraps at capacity: put the rows back in order, oldest first.
        order = (np.arange(count - n, count) % self.capacity) if count > self.capacity else np.arange(n)
        rows = self._split(ring[order], steps[order])
        rows.lost = count - n
        return rows

    def request_histogram(self) -> None:
        """Asks the next recorded step to also fill the activation histograms."""
        self.hist_flag.assign(1)

    def read_histogram(self) -> dict | None:
        step = int(self.hist_step.numpy())
        if step < 0:
            return None
        return {
            "step": step,
            "ranges": self.hist_ranges.numpy().astype(np.float64),
            "counts": self.hist_counts.numpy().astype(np.float64),
        }

    def _split(self, block: np.ndarray, steps: np.ndarray) -> Rows:
        L, V, F = self.n_layers, self.n_vars, len(FORWARD_STATS)
        n = len(block)
        cuts = np.cumsum([L * F, L, V, V, V])
        fwd, bp, g, w, u, sc = np.split(block.astype(np.float64), cuts, axis=1)
        return Rows(steps.astype(np.int64), fwd.reshape(n, L, F), bp, g, w, u, sc)
