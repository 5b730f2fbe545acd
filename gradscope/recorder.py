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

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from gradscope.stats import FORWARD_STATS, forward_stats, histogram, sq_norm

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
        with tf.init_scope():
            var = lambda value, name, dtype=tf.float32: tf.Variable(  # noqa: E731
                value, trainable=False, name=f"gradscope_{name}", dtype=dtype
            )
            # Pending values of the step under way.
            self.p_forward = var(np.full((L, F), _NAN, np.float32), "forward")
            self.p_backprop = var(np.full((L,), _NAN, np.float32), "backprop")
            self.p_grad = var(np.full((V,), _NAN, np.float32), "grad")
            self.p_weight = var(np.full((V,), _NAN, np.float32), "weight")
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
        # What each pending variable is reset to after a commit: NaN means
        # "not measured this step"; updates accumulate from 0.
        self._resets = [
            (self.p_forward, _NAN), (self.p_backprop, _NAN), (self.p_grad, _NAN),
            (self.p_weight, _NAN), (self.p_update, 0.0), (self.p_scalars, _NAN),
        ]

    # -- in-graph staging -----------------------------------------------------
    def _when_recording(self, fn: Callable[[], tf.Tensor | None]) -> tf.Tensor:
        """Runs ``fn`` (which computes and writes statistics) on recorded steps only.

        With ``every > 1`` the whole computation sits inside a `tf.cond`, so
        skipped steps pay for neither the reductions nor the writes.
        Returns a tensor that is ready once the writes are done.
        """

        def run() -> tf.Tensor:
            out = fn()
            if out is None:
                return tf.constant(0)
            with tf.control_dependencies([out]):
                return tf.constant(0)

        if self.every == 1:
            return run()
        return tf.cond(tf.equal(self.calls % self.every, 0), run, lambda: tf.constant(0))

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

    def stage_pre_update(
        self, grads: Sequence[tuple[int, Any]], weights: Sequence[tuple[int, Any]]
    ) -> tf.Tensor:
        """Squared norms of the gradients the optimizer got and of the weights
        it is about to update, and the loss scale they are divided by.

        ``grads`` and ``weights`` pair a recorder column with a gradient
        (None counts as zero) or a variable. Returns a tensor to hang a
        control dependency on.
        """
        def write() -> tf.Tensor:
            scale = self._scale()
            out = []
            if grads:
                g2 = tf.stack([sq_norm(g) if g is not None else tf.constant(0.0) for _, g in grads])
                g2 = g2 / tf.square(scale)
                self.p_grad.assign(tf.tensor_scatter_nd_update(self.p_grad, [[i] for i, _ in grads], g2))
                out.append(g2)
            if weights:
                w2 = tf.stack([sq_norm(_value(v)) for _, v in weights])
                self.p_weight.assign(tf.tensor_scatter_nd_update(self.p_weight, [[i] for i, _ in weights], w2))
                out.append(w2)
            # Read before the update: a LossScaleOptimizer halves its scale
            # when the gradients overflow.
            self.p_scalars.assign(tf.tensor_scatter_nd_update(self.p_scalars, [[2]], [scale]))
            return tf.concat(out, 0) if out else scale

        return self._when_recording(write)

    def stage_update(self, var_index: int, value: Any, current: Any = None) -> None:
        """Adds the squared size of one write the optimizer makes to a variable:
        ``value`` itself (assign_add/assign_sub), or ``value - current`` (assign)."""
        def write() -> None:
            delta = value if current is None else tf.cast(value, tf.float32) - tf.cast(_value(current), tf.float32)
            self.p_update.assign(tf.tensor_scatter_nd_add(self.p_update, [[var_index]], [sq_norm(delta)]))

        self._when_recording(write)

    def commit(self) -> None:
        """Closes the step: writes the pending row to the ring and resets it."""

        def write() -> None:
            row = tf.concat(
                [
                    tf.reshape(self.p_forward, [-1]),
                    self.p_backprop,
                    self.p_grad,
                    self.p_weight,
                    self.p_update,
                    self.p_scalars,
                ],
                0,
            )
            slot = self.count % self.capacity
            self.ring.scatter_nd_update([[slot]], [row])
            self.ring_steps.scatter_nd_update([[slot]], [self.calls])
            self.count.assign_add(1)
            self.hist_step.assign(tf.where(self.hist_flag > 0, self.calls, self.hist_step))
            self.hist_flag.assign(0)
            for pending, value in self._resets:
                pending.assign(tf.fill(tf.shape(pending), value))

        self._when_recording(write)
        self.calls.assign_add(1)

    # -- host side ------------------------------------------------------------
    def flush(self) -> Rows:
        """Fetches the rows committed since the last flush (one transfer)."""
        count = int(self.count.numpy())
        if count == 0:
            return self._split(np.zeros((0, self.width), np.float32), np.zeros(0, np.int64))
        if count <= self.capacity:
            # Rows sit at slots 0..count-1: fetch only those.
            block, steps = self.ring[:count].numpy(), self.ring_steps[:count].numpy()
        else:
            # The ring wrapped: the oldest surviving row is at count % capacity.
            order = np.arange(count - self.capacity, count) % self.capacity
            block, steps = self.ring.numpy()[order], self.ring_steps.numpy()[order]
        self.count.assign(0)
        rows = self._split(block, steps)
        rows.lost = count - len(block)
        return rows

    def start_at(self, step: int) -> None:
        """Sets the global step of the next recorded row."""
        self.calls.assign(int(step))

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


def _value(variable: Any) -> tf.Tensor:
    """The value of a Keras variable or of the tf.Variable behind it."""
    if isinstance(variable, tf.Variable):
        return tf.convert_to_tensor(variable)
    return tf.convert_to_tensor(variable.value)
