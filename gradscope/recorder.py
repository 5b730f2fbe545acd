"""Turns what the hooks see during one training step into one row, on the device.

The data path inside one step, in the order the ops run:

1. forward: each watched layer's output is *staged* (`hooks.py` taps it);
2. backward: the same tap's gradient function stages d(loss)/d(output);
3. ``compute_loss`` stages the loss, the targets and the predictions;
4. ``optimizer.apply``: the gradients it is given and the loss scale are
   staged before the update; the optimizer's own updates are staged as it
   writes each variable; after it, `Recorder.commit` reads the updated
   weights, reduces everything staged to a few numbers per layer and writes
   one row into a ring buffer.

Staging is free: while TensorFlow traces the step, the staged tensors are
kept in a Python dict, and `commit` (traced later in the same graph) reduces
them all at once. So the compiled step gains only the reductions and one
write per step, and with ``every > 1`` all of it sits in a single `tf.cond`
(with ``weights_every > 1`` the weight and update norms sit in one more).
A tensor staged in another graph (inside a `tf.cond` branch, e.g. the inner
optimizer of a `LossScaleOptimizer`, or in eager mode) cannot be used from
the step's graph; it is reduced where it is and written to a small pending
`tf.Variable` instead.

The host calls `Recorder.flush` now and then (every few hundred steps, at
the end of an epoch, or a few times a second for the live view) and gets
the rows as numpy arrays in one transfer.

Example:

>>> rec = Recorder(["tanh", None], [0, 0, 1], capacity=64)   # doctest: +SKIP
>>> rows = rec.flush()                                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from gradscope.stats import (
    FORWARD_STATS,
    batch_accuracy,
    forward_stats,
    forward_stats_many,
    histogram,
    mean_squares,
    sq_norms,
)

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


@dataclass
class _Staged:
    """What one trace of the step has staged so far (Python objects, trace time)."""

    forward: dict[int, tf.Tensor] = field(default_factory=dict)
    backprop: dict[int, tf.Tensor] = field(default_factory=dict)
    updates: dict[int, list[tf.Tensor]] = field(default_factory=dict)
    loss: tuple | None = None  # (loss, y_true, y_pred)
    grads: list[tuple[int, Any]] | None = None  # (column, gradient) as apply got them
    scale: tf.Tensor | None = None  # the loss scale they are divided by, read before apply
    slow: bool = False  # something of this step went to the pending variables


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
            recorded step only (NaN on the others). Each of them is a pass
            over every parameter. Defaults to `1`.
        saturation_threshold: |a| at or above which a tanh unit counts as
            saturated (sigmoid: a at or above it, or at or below 1 minus it). Defaults to
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
        activation_stats: bool = True,
        weights_every: int = 1,
        saturation_threshold: float = 0.99,
        histogram_bins: int = 40,
    ) -> None:
        self.activations = list(layer_activations)
        self.n_layers = len(self.activations)
        self.n_vars = len(var_layer)
        self.var_layer = list(var_layer)
        self.capacity = int(capacity)
        self.every = int(every)
        self.weights_every = int(weights_every)
        self.activation_stats = bool(activation_stats)
        self.saturation_threshold = float(saturation_threshold)
        self.bins = int(histogram_bins)
        self.scale_fn: Callable[[], tf.Tensor] | None = None
        L, V, F = self.n_layers, self.n_vars, len(FORWARD_STATS)
        self.width = L * F + L + 3 * V + len(SCALARS)
        self._staged: weakref.WeakKeyDictionary[Any, _Staged] = weakref.WeakKeyDictionary()
        self._eager_slow = False  # eager mode: the pending variables hold this step's values
        self._eager_grads: tuple | None = None
        with tf.init_scope():

            def var(value: Any, name: str, dtype: tf.DType = tf.float32) -> tf.Variable:
                return tf.Variable(value, trainable=False, name=f"gradscope_{name}", dtype=dtype)

            # Pending values staged outside the step's graph (see module doc).
            self.p_forward = var(np.full((L, F), _NAN, np.float32), "forward")
            self.p_backprop = var(np.full((L,), _NAN, np.float32), "backprop")
            self.p_update = var(np.zeros((V,), np.float32), "update")
            self.p_scalars = var(np.full((2,), _NAN, np.float32), "scalars")  # loss, accuracy
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

    # -- trace-time staging ------------------------------------------------------
    def _stash(self, graph: Any) -> _Staged:
        bucket = self._staged.get(graph)
        if bucket is None:
            bucket = self._staged[graph] = _Staged()
        return bucket

    def _step_graph(self) -> Any:
        """The graph the step's forward and backward pass are traced in: the
        current one, or, inside a `tf.cond`/`tf.while_loop` body, the nearest
        enclosing graph that is not control flow. None in eager mode."""
        if not tf.inside_function():
            return None
        graph = tf.compat.v1.get_default_graph()
        while getattr(graph, "is_control_flow_graph", False) and getattr(graph, "outer_graph", None) is not None:
            graph = graph.outer_graph
        return graph

    def _bucket(self) -> _Staged | None:
        """Where a tensor produced now may be kept for `commit`: the current
        graph's stash, unless the current graph is control flow (a tensor made
        inside a branch cannot be used outside it) or there is no graph."""
        if not tf.inside_function():
            return None
        graph = tf.compat.v1.get_default_graph()
        if getattr(graph, "is_control_flow_graph", False):
            return None
        return self._stash(graph)

    def _mark_slow(self) -> None:
        """Something of this step went to the pending variables; commit must read them."""
        graph = self._step_graph()
        if graph is None:
            self._eager_slow = True
        else:
            self._stash(graph).slow = True

    def _recorded(self) -> tf.Tensor:
        return tf.equal(self.calls % self.every, 0)

    def _when_recording(self, fn: Callable[[], Any], skipped: Callable[[], Any] | None = None) -> Any:
        """``fn()`` on recorded steps; with ``every > 1`` inside one `tf.cond`."""
        if self.every == 1:
            return fn()
        return tf.cond(self._recorded(), fn, skipped or (lambda: tf.constant(0)))

    def _when_weighing(self, fn: Callable[[], Any], skipped: Callable[[], Any]) -> Any:
        """``fn()`` on the recorded steps that also measure weights and
        updates (see ``weights_every``): one `tf.cond`, or none at all."""
        if self.weights_every == 1:
            return fn()
        due = tf.equal(self.calls % (self.every * self.weights_every), 0)
        return tf.cond(due, fn, skipped)

    def _scale(self) -> tf.Tensor:
        return tf.cast(self.scale_fn(), tf.float32) if self.scale_fn else tf.constant(1.0)

    def _unscale(self, squares: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        """Squares of loss-scaled gradients divided by the scale squared (no
        ops at all without loss scaling: each op costs in every step)."""
        return squares / tf.square(scale) if self.scale_fn else squares

    def _stage(self, keep: Callable[[_Staged], None], reduce_now: Callable[[], Any], weighing: bool = False) -> None:
        """Keeps a tensor for `commit` (the usual case: it was made in the
        step's graph), or, where commit cannot use it (control flow, eager),
        reduces it now into a pending variable, on recorded steps only (and,
        with ``weighing``, only on those that measure weights and updates)."""
        bucket = self._bucket()
        if bucket is not None:
            keep(bucket)
            return
        self._mark_slow()

        def write() -> tf.Tensor:
            reduce_now()
            return tf.constant(0)

        if weighing:
            self._when_recording(lambda: self._when_weighing(write, lambda: tf.constant(0)))
        else:
            self._when_recording(write)

    def stage_forward(self, layer: int, output: tf.Tensor) -> None:
        """A watched layer's output."""
        if not self.activation_stats:
            return
        self._stage(
            lambda b: b.forward.__setitem__(layer, output),
            lambda: self.p_forward.scatter_nd_update(
                [[layer]], [forward_stats(output, self.activations[layer], self.saturation_threshold)]),
        )

    def stage_backprop(self, layer: int, upstream: tf.Tensor) -> None:
        """d(loss)/d(output) of a watched layer, as back-propagation delivers it."""
        self._stage(
            lambda b: b.backprop.__setitem__(layer, upstream),
            lambda: self.p_backprop.scatter_nd_update(
                [[layer]], self._unscale(mean_squares([upstream]), self._scale())),
        )

    def stage_loss(self, loss: tf.Tensor, y_true: Any, y_pred: Any) -> None:
        """The batch loss, and what the batch accuracy is computed from."""
        self._stage(
            lambda b: setattr(b, "loss", (loss, y_true, y_pred)),
            lambda: self.p_scalars.assign(tf.stack([tf.cast(loss, tf.float32), batch_accuracy(y_true, y_pred)])),
        )

    def stage_update(self, col: int, value: Any, current: Any = None) -> None:
        """One write the optimizer makes to a watched variable: ``value``
        itself (assign_add/assign_sub), or ``value - current`` (assign)."""

        def delta() -> Any:
            if current is None:
                return value
            return tf.cast(value, tf.float32) - tf.cast(_value(current), tf.float32)

        self._stage(
            lambda b: b.updates.setdefault(col, []).append(delta()),
            lambda: self.p_update.scatter_nd_add([[col]], sq_norms([delta()])),
            weighing=True,
        )

    def stage_gradients(self, grads: Sequence[tuple[int, Any]]) -> None:
        """The gradients the optimizer is given, as ``(column, gradient)``
        (None counts as zero), and the loss scale they are divided by.

        The scale is read now, before apply (a `LossScaleOptimizer` changes
        it in apply); TensorFlow orders this read before apply's write. The
        gradients are kept in the stash of the graph this runs in (whatever
        that is: `commit` is traced in the same graph, right after apply).
        """
        scale = self._scale()
        if tf.inside_function():
            local = self._stash(tf.compat.v1.get_default_graph())
            local.grads, local.scale = list(grads), scale
        else:
            self._eager_grads = (list(grads), scale)

    # -- the row ------------------------------------------------------------------
    def commit(self, weights: Sequence[tuple[int, Any]] = ()) -> None:
        """Reduces what this step staged to one row and writes it to the ring.

        Args:
            weights: ``(column, variable)`` of the watched variables, whose
                norms are read here, after the update.
        """
        staged = _Staged()
        if tf.inside_function():
            here = tf.compat.v1.get_default_graph()
            step = self._step_graph()
            # Forward and backward were staged in the step's graph; the
            # gradients where apply runs (the same graph, or a branch of a
            # custom train_step). Each trace starts clean.
            outer = self._staged.pop(step, None) or _Staged()
            local = self._staged.pop(here, None) if here is not step else outer
            local = local or _Staged()
            staged = dataclasses.replace(outer, grads=local.grads, scale=local.scale,
                                         updates={**outer.updates, **local.updates}, slow=outer.slow or local.slow)
        else:
            grads, scale = self._eager_grads if self._eager_grads is not None else (None, None)
            staged.grads, staged.scale, staged.slow = grads, scale, self._eager_slow
            self._eager_grads, self._eager_slow = None, False

        def write() -> tf.Tensor:
            row = self._row(staged, list(weights))
            slot = self.count % self.capacity
            self.ring.scatter_nd_update([[slot]], [row])
            self.ring_steps.scatter_nd_update([[slot]], [self.calls])
            self.count.assign_add(1)
            self._histograms(staged)
            if staged.slow:
                self.p_forward.assign(tf.fill(tf.shape(self.p_forward), _NAN))
                self.p_backprop.assign(tf.fill(tf.shape(self.p_backprop), _NAN))
                self.p_update.assign(tf.zeros_like(self.p_update))
                self.p_scalars.assign(tf.fill(tf.shape(self.p_scalars), _NAN))
            return tf.constant(0)

        self._when_recording(write)
        self.calls.assign_add(1)

    def _row(self, b: _Staged, weights: list[tuple[int, Any]]) -> tf.Tensor:
        L = self.n_layers
        scale = b.scale if b.scale is not None else self._scale()
        grads = b.grads or []
        present = [(c, g) for c, g in grads if g is not None]
        sq = self._unscale(sq_norms([g for _, g in present]), scale) if present else None
        grad = _placed([self.n_vars], [c for c, _ in present], _finite_or_inf(sq) if present else None)
        # A None gradient (a branch the loss does not reach) is a zero one.
        zero = [c for c, g in grads if g is None]
        if zero:
            grad = _placed([self.n_vars], zero, tf.zeros([len(zero)]), base=grad)
        weight_update = self._when_weighing(
            lambda: self._weights_and_updates(b, weights), lambda: tf.fill([2 * self.n_vars], _NAN)
        )
        # Pending values (the slow path) are the base the staged ones go onto.
        idx = sorted(b.forward)
        stats = forward_stats_many([b.forward[i] for i in idx], [self.activations[i] for i in idx],
                                   self.saturation_threshold) if idx else None
        forward = _placed([L, len(FORWARD_STATS)], idx, stats, tf.convert_to_tensor(self.p_forward) if b.slow else None)
        idx = sorted(b.backprop)
        ms = self._unscale(mean_squares([b.backprop[i] for i in idx]), scale) if idx else None
        backprop = _placed([L], idx, ms, tf.convert_to_tensor(self.p_backprop) if b.slow else None)
        if b.loss is not None:
            loss, y_true, y_pred = b.loss
            loss_acc = tf.stack([tf.cast(loss, tf.float32), batch_accuracy(y_true, y_pred)])
        elif b.slow:
            loss_acc = tf.convert_to_tensor(self.p_scalars)[:2]
        else:
            loss_acc = tf.fill([2], _NAN)
        scalars = tf.concat([loss_acc, tf.reshape(scale, [1])], 0)
        return tf.concat([tf.reshape(forward, [-1]), backprop, grad, weight_update, scalars], 0)

    def _weights_and_updates(self, b: _Staged, weights: list[tuple[int, Any]]) -> tf.Tensor:
        """Squared norms of the weights (read now, after the update) and of
        the updates, (2 * variables,); NaN where not measured, +inf where
        non-finite."""
        weight = _placed(
            [self.n_vars], [c for c, _ in weights],
            _finite_or_inf(sq_norms([_value(v) for _, v in weights])) if weights else None,
        )
        update = tf.convert_to_tensor(self.p_update) if b.slow else tf.zeros([self.n_vars])
        if b.updates:
            idx = sorted(b.updates)
            deltas = [d for i in idx for d in b.updates[i]]
            norms = sq_norms(deltas)
            if len(deltas) > len(idx):  # a variable written more than once
                owner = [k for k, i in enumerate(idx) for _ in b.updates[i]]
                norms = tf.math.unsorted_segment_sum(norms, owner, len(idx))
            update = tf.tensor_scatter_nd_add(update, [[i] for i in idx], norms)
        return tf.concat([weight, _finite_or_inf(update)], 0)

    def _histograms(self, b: _Staged) -> None:
        """Fills the activation histograms when the host asked for them (one cond)."""
        if not b.forward:
            return

        def fill() -> tf.Tensor:
            idx = sorted(b.forward)
            parts = [histogram(b.forward[i], self.activations[i], self.bins) for i in idx]
            rows = [[i] for i in idx]
            self.hist_counts.assign(tf.tensor_scatter_nd_update(self.hist_counts, rows, tf.stack([c for c, _ in parts])))
            self.hist_ranges.assign(tf.tensor_scatter_nd_update(self.hist_ranges, rows, tf.stack([r for _, r in parts])))
            self.hist_step.assign(self.calls)
            self.hist_flag.assign(0)
            return tf.constant(0)

        tf.cond(self.hist_flag > 0, fill, lambda: tf.constant(0))

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


def _placed(shape: list[int], rows: list[int], values: tf.Tensor | None, base: tf.Tensor | None = None) -> tf.Tensor:
    """A tensor of ``shape`` with ``values`` at ``rows`` and NaN (or ``base``)
    elsewhere; no op at all when ``values`` already fill every row in order."""
    if base is None and rows == list(range(shape[0])):
        return values
    base = tf.fill(shape, _NAN) if base is None else base
    if not rows:
        return base
    return tf.tensor_scatter_nd_update(base, [[r] for r in rows], values)


def _finite_or_inf(x: tf.Tensor) -> tf.Tensor:
    """+inf where ``x`` is NaN or Inf: in the record, NaN means "not measured"."""
    return tf.where(tf.math.is_finite(x), x, tf.constant(float("inf"), x.dtype))


def _value(variable: Any) -> tf.Tensor:
    """The value of a Keras variable or of the tf.Variable behind it."""
    if isinstance(variable, tf.Variable):
        return tf.convert_to_tensor(variable)
    return tf.convert_to_tensor(variable.value)
