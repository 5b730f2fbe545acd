"""Trace-time staging: what the hooks hand over during one training step.

While TensorFlow traces the step, each hook *stages* a tensor: a layer's
output, the gradient reaching it, the loss, the gradients and updates the
optimizer applies. Staging is free: the tensors are kept in a Python dict
keyed by the graph being traced, and the recorder's commit (traced later in
the same graph) reduces them all at once.

A tensor staged in another graph (inside a `tf.cond` branch, e.g. the inner
optimizer of a `LossScaleOptimizer`, or in eager mode) cannot be used from
the step's graph. It is reduced where it is, into a small *pending*
`tf.Variable`, and the step is marked slow so the commit reads those.

Example:

>>> import tensorflow as tf
>>> staging = Staging(["tanh"], n_vars=1, schedule=Schedule())
>>> staging.loss(tf.constant(0.5), tf.constant([[1.0, 0.0]]), tf.constant([[0.9, 0.1]]))
>>> staging.pending_scalars.numpy().tolist()  # eager: reduced at once
[0.5, 1.0]
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from gradscope.distributed import replica_key
from gradscope.schedule import Schedule
from gradscope.stats import FORWARD_STATS, batch_accuracy, forward_stats, mean_squares, sq_norms

_NAN = float("nan")


@dataclass
class Staged:
    """What one trace of the step staged (Python objects, at trace time)."""

    forward: dict[int, tf.Tensor] = field(default_factory=dict)
    backprop: dict[int, tf.Tensor] = field(default_factory=dict)
    updates: dict[int, list[tf.Tensor]] = field(default_factory=dict)
    loss: tuple | None = None  # (loss, y_true, y_pred)
    grads: list[tuple[int, Any]] | None = None  # (column, gradient) as apply got them
    scale: tf.Tensor | None = None  # the loss scale they are divided by, read before apply
    slow: bool = False  # something of this step went to the pending variables


class Staging:
    """Keeps each step's staged tensors until the recorder commits the row.

    Args:
        activations: the activation name of each watched layer (or None).
        n_vars: how many variables are watched.
        schedule: the recorder's `Schedule` (the slow path writes only on
            recorded steps).
        activation_stats: stage the layers' outputs at all. Defaults to `True`.
        saturation_threshold: |a| at or above which a tanh unit counts as
            saturated, for the slow path's statistics. Defaults to `0.99`.
    """

    def __init__(
        self,
        activations: Sequence[str | None],
        n_vars: int,
        schedule: Schedule,
        activation_stats: bool = True,
        saturation_threshold: float = 0.99,
    ) -> None:
        self.activations = list(activations)
        self.schedule = schedule
        self.activation_stats = bool(activation_stats)
        self.saturation_threshold = float(saturation_threshold)
        #: Returns the loss scale under mixed precision; None without one.
        self.scale_fn: Callable[[], tf.Tensor] | None = None
        #: The layers whose output, and whose back-propagated gradient, were
        #: ever staged: a layer in neither gets gradients only.
        self.seen_forward: set[int] = set()
        self.seen_backprop: set[int] = set()
        #: The optimizer's apply handed over gradients at least once.
        self.seen_gradients = False
        # Per traced graph, per replica: under tf.distribute every replica
        # traces the step into the same graph (None: no strategy, or its
        # cross-replica context).
        self._stashes: weakref.WeakKeyDictionary[Any, dict[int | None, Staged]] = weakref.WeakKeyDictionary()
        self._eager = Staged()  # eager mode: the pending variables hold this step's values
        L, F = len(self.activations), len(FORWARD_STATS)
        with tf.init_scope():

            def var(value: np.ndarray, name: str) -> tf.Variable:
                return tf.Variable(value, trainable=False, name=f"gradscope_pending_{name}", dtype=tf.float32)

            self.pending_forward = var(np.full((L, F), _NAN, np.float32), "forward")
            self.pending_backprop = var(np.full((L,), _NAN, np.float32), "backprop")
            self.pending_update = var(np.zeros((n_vars,), np.float32), "update")
            self.pending_scalars = var(np.full((2,), _NAN, np.float32), "scalars")  # loss, accuracy

    # -- the loss scale ------------------------------------------------------------
    @property
    def loss_scaled(self) -> bool:
        """The run scales its loss (mixed precision): a non-finite step is the scaler's to skip."""
        return self.scale_fn is not None

    def scale(self) -> tf.Tensor:
        """The current loss scale (1.0 without loss scaling)."""
        return tf.cast(self.scale_fn(), tf.float32) if self.scale_fn else tf.constant(1.0)

    def unscale(self, squares: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        """Squares of loss-scaled gradients divided by the scale squared (no
        ops at all without loss scaling: each op costs in every step)."""
        return squares / tf.square(scale) if self.scale_fn else squares

    # -- what the hooks call -------------------------------------------------------
    def forward(self, layer: int, output: tf.Tensor) -> None:
        """A watched layer's output."""
        if not self.activation_stats:
            return
        self.seen_forward.add(layer)
        self._stage(
            lambda b: b.forward.__setitem__(layer, output),
            lambda: self.pending_forward.scatter_nd_update(
                [[layer]], [forward_stats(output, self.activations[layer], self.saturation_threshold)]),
        )

    def backprop(self, layer: int, upstream: tf.Tensor) -> None:
        """d(loss)/d(output) of a watched layer, as back-propagation delivers it."""
        self.seen_backprop.add(layer)
        self._stage(
            lambda b: b.backprop.__setitem__(layer, upstream),
            lambda: self.pending_backprop.scatter_nd_update(
                [[layer]], self.unscale(mean_squares([upstream]), self.scale())),
        )

    def loss(self, loss: tf.Tensor, y_true: Any, y_pred: Any) -> None:
        """The batch loss, and what the batch accuracy is computed from."""
        self._stage(
            lambda b: setattr(b, "loss", (loss, y_true, y_pred)),
            lambda: self.pending_scalars.assign(
                tf.stack([tf.cast(loss, tf.float32), batch_accuracy(y_true, y_pred)])),
        )

    def update(self, col: int, value: Any, current: Any = None) -> None:
        """One write the optimizer makes to a watched variable: ``value``
        itself (assign_add/assign_sub), or ``value - current`` (assign)."""

        def delta() -> Any:
            if current is None:
                return value
            return tf.cast(value, tf.float32) - tf.cast(variable_value(current), tf.float32)

        self._stage(
            lambda b: b.updates.setdefault(col, []).append(delta()),
            lambda: self.pending_update.scatter_nd_add([[col]], sq_norms([delta()])),
            weighing=True,
        )

    def gradients(self, grads: Sequence[tuple[int, Any]]) -> None:
        """The gradients the optimizer is given, as ``(column, gradient)``
        (None counts as zero), and the loss scale they are divided by.

        The scale is read now, before apply (a `LossScaleOptimizer` changes
        it in apply); TensorFlow orders this read before apply's write. They
        are kept in the stash of the graph this runs in, whatever that is:
        the commit is traced in the same graph, right after apply.
        """
        self.seen_gradients = True
        target = self._stash(tf.compat.v1.get_default_graph()) if tf.inside_function() else self._eager
        # Several optimizers applied in one step add their gradients to one row.
        target.grads, target.scale = (target.grads or []) + list(grads), self.scale()

    # -- what the commit calls ------------------------------------------------------
    def collect(self) -> Staged:
        """Everything this step staged, taken out (each trace starts clean)."""
        if not tf.inside_function():
            staged, self._eager = self._eager, Staged()
            return staged
        here = tf.compat.v1.get_default_graph()
        step = _step_graph()
        # Forward and backward were staged in the step's graph; the gradients
        # where apply runs (the same graph, or a branch of a custom train_step).
        replica = replica_key()
        outer = self._stashes.get(step, {}).pop(replica, None) or Staged()
        local = (self._stashes.get(here, {}).pop(replica, None) if here is not step else outer) or Staged()
        return dataclasses.replace(outer, grads=local.grads, scale=local.scale,
                                   updates={**outer.updates, **local.updates}, slow=outer.slow or local.slow)

    def clear_pending(self) -> None:
        """Resets the pending variables once a slow step's row has read them."""
        for pending, fill in ((self.pending_forward, _NAN), (self.pending_backprop, _NAN),
                              (self.pending_update, 0.0), (self.pending_scalars, _NAN)):
            pending.assign(tf.fill(tf.shape(pending), fill))

    # -- where a staged tensor goes ---------------------------------------------------
    def _stash(self, graph: Any) -> Staged:
        replicas = self._stashes.get(graph)
        if replicas is None:
            replicas = self._stashes[graph] = {}
        return replicas.setdefault(replica_key(), Staged())

    def _stage(self, keep: Callable[[Staged], None], reduce_now: Callable[[], Any], weighing: bool = False) -> None:
        """Keeps a tensor for the commit (the usual case: it was made in the
        step's graph), or, where the commit cannot use it (control flow,
        eager), reduces it now into a pending variable, on recorded steps only
        (and, with ``weighing``, only on those that measure weights)."""
        in_graph = tf.inside_function()
        graph = tf.compat.v1.get_default_graph() if in_graph else None
        if in_graph and not getattr(graph, "is_control_flow_graph", False):
            keep(self._stash(graph))
            return
        step = _step_graph()
        (self._eager if step is None else self._stash(step)).slow = True

        def write() -> tf.Tensor:
            reduce_now()
            return tf.constant(0)

        if weighing:
            self.schedule.when_recording(lambda: self.schedule.when_weighing(write, lambda: tf.constant(0)))
        else:
            self.schedule.when_recording(write)


def _step_graph() -> Any:
    """The graph the step's forward and backward pass are traced in: the
    current one, or, inside a `tf.cond`/`tf.while_loop` body, the nearest
    enclosing graph that is not control flow. None in eager mode."""
    if not tf.inside_function():
        return None
    graph = tf.compat.v1.get_default_graph()
    while getattr(graph, "is_control_flow_graph", False) and getattr(graph, "outer_graph", None) is not None:
        graph = graph.outer_graph
    return graph


def variable_value(variable: Any) -> tf.Tensor:
    """The value of a Keras variable or of the tf.Variable behind it."""
    if isinstance(variable, tf.Variable):
        return tf.convert_to_tensor(variable)
    return tf.convert_to_tensor(variable.value)
