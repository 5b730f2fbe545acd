"""In-graph statistics of TensorFlow's step: tensors in, a few scalars out.

Everything here runs inside the compiled training step and reduces big
tensors to scalars on the device; nothing here touches the host. The
statistics themselves (the features of an output, the algebra from their
means, the histogram, the accuracy) are written once, with `keras.ops`, in
`gradscope.portable_stats`, which the JAX step shares. What stays here is
TensorFlow's own faster way to do the big reductions: squared norms by
``l2_loss`` (or, under XLA, a matrix product), batch sums by a matrix product,
sparse gradients, and the placing of values into a row.

Example:

>>> import tensorflow as tf

>>> sq_norms([tf.constant([3.0, 4.0])]).numpy().tolist()
[25.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# histogram and finite_or_inf serve TensorFlow's step too: the recorder and distributed.py take them from here.
from gradscope.portable_stats import (  # noqa: F401
    FEATURES,
    FORWARD_STATS,
    RELU_LIKE,
    feature_kind,
    finite_or_inf,
    histogram,
    statistics,
)
from gradscope.portable_stats import batch_accuracy as _batch_accuracy

try:  # TensorFlow's own test for this; see docs/internals.md
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as _xla_context_of
except ImportError:  # pragma: no cover - a TensorFlow without it records with the non-XLA reductions
    _xla_context_of = None

_NAN = float("nan")

def sq_norms(tensors: Sequence[tf.Tensor | tf.IndexedSlices]) -> tf.Tensor:
    """Squared L2 norms as a float32 vector, one per tensor (an
    IndexedSlices counts as the dense tensor it stands for).

    Example:

    >>> sq_norms([tf.constant([3.0, 4.0]), tf.constant([[1.0], [2.0]])]).numpy().tolist()
    [25.0, 5.0]
    """
    if in_xla_context():
        return tf.stack([_sq_norm_by_matmul(_f32(_dense(t))) for t in tensors])
    # l2_loss is sum(t^2) / 2 in one fused pass (square + reduce_sum is two),
    # and the factor 2 is applied once to the stacked vector, not per tensor.
    return 2.0 * tf.stack([tf.nn.l2_loss(_f32(_dense(t))) for t in tensors])


def in_xla_context() -> bool:
    """Whether the ops being traced now will be compiled by XLA (inside a
    ``tf.function(jit_compile=True)``, or a function it calls).

    Example:

    >>> in_xla_context()
    False
    >>> bool(tf.function(lambda: tf.constant(in_xla_context()), jit_compile=True)())
    True
    """
    graph = tf.compat.v1.get_default_graph()
    return bool(_xla_context_of(graph)) if _xla_context_of is not None else False


# Under XLA on a CPU a reduction over a big tensor is compiled into a tree of
# reduce-window loops that read the data several times, on one core: summing
# the squares of the lecture network's 1.86 M gradients that way costs about
# 2.5 times what TensorFlow's own l2_loss kernel costs. A matrix product of
# the squares, laid out as rows of _MATMUL_WIDTH, with a column of ones reads
# them once through XLA's multi-threaded dot (docs/performance.md, "Under XLA").
_MATMUL_WIDTH = 128
_SMALL = 4096  # below this many elements a plain reduction is as cheap


def _sq_norm_by_matmul(t: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(t, [-1])
    n = t.shape.num_elements()
    if n is None or n < _SMALL:
        return tf.reduce_sum(tf.square(flat))
    body = n - n % _MATMUL_WIDTH
    rows = tf.reshape(flat[:body], [-1, _MATMUL_WIDTH])
    total = tf.reduce_sum(tf.matmul(tf.square(rows), tf.ones([_MATMUL_WIDTH, 1], tf.float32)))
    if body < n:
        total += tf.reduce_sum(tf.square(flat[body:]))
    return total


def mean_squares(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Mean of squares of each tensor (the square of its RMS), float32 vector."""
    sizes = tf.stack([tf.cast(tf.size(t), tf.float32) for t in tensors])
    return sq_norms(tensors) / sizes


def _dense(t: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    if not isinstance(t, tf.IndexedSlices):
        return t
    # Rows that share an index add up before they are squared (an embedding
    # row looked up twice in a batch gets one summed gradient).
    rows = tf.cast(t.dense_shape[0], tf.int32) if t.dense_shape is not None else tf.reduce_max(t.indices) + 1
    return tf.math.unsorted_segment_sum(t.values, t.indices, rows)


def _f32(t: tf.Tensor) -> tf.Tensor:
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def forward_stats(a: tf.Tensor, activation: str | None, saturation_threshold: float) -> tf.Tensor:
    """The `FORWARD_STATS` of one layer's output ``a`` (batch first), shape (7,).

    A statistic that does not apply to the activation (saturation of a ReLU,
    dead units of a tanh) is NaN rather than 0, so it is not mistaken for a
    measured value. A unit is saturated when |a| >= the threshold (to float
    rounding), dead when it outputs 0 for every sample of the batch.

    Example:

    >>> s = forward_stats(tf.constant([[0.0, 0.995], [0.5, -1.0]]), "tanh", 0.99)
    >>> {name: round(float(v), 3) for name, v in zip(FORWARD_STATS[:3], s)}
    {'act_mean': 0.124, 'act_std': 0.738, 'saturation': 0.5}
    """
    return forward_stats_many([a], [activation], saturation_threshold)[0]


def forward_stats_many(
    outputs: Sequence[tf.Tensor], activations: Sequence[str | None], saturation_threshold: float
) -> tf.Tensor:
    """`forward_stats` of several layers at once, shape (layers, 7).

    Each statistic is the mean of a few elementwise features of the output
    (a, a^2, a^4, an "is saturated" 0/1, ...), summed over the batch by a
    matrix product with a row of ones; the algebra from sums to statistics
    runs once per activation, not per layer. docs/performance.md says why
    this layout (it runs in every step).

    Args:
        outputs: the layers' outputs.
        activations: each layer's activation name, or None.
        saturation_threshold: |a| at or above which a tanh unit counts as saturated.
    """
    pairs = [unit_sums(a, act, saturation_threshold) for a, act in zip(outputs, activations, strict=True)]
    return stats_from_unit_sums([c for c, _ in pairs], [r for _, r in pairs], activations)


def unit_sums(a: tf.Tensor, activation: str | None, saturation_threshold: float) -> tuple[tf.Tensor, tf.Tensor]:
    """A layer's output reduced over its batch: the sums of its features
    (a, a^2, ...), one column per unit, shape (features, units); and the
    batch's row count. Sums of several batches (replicas) add up to the sums
    of the batch they make together, which `stats_from_unit_sums` turns into
    the same statistics as `forward_stats` of that batch."""
    a = _as_matrix(a)
    kind = feature_kind(activation)
    return _column_sums(a, FEATURES[kind](a, saturation_threshold)), tf.cast(tf.shape(a)[0], tf.float32)


def stats_from_unit_sums(
    sums: Sequence[tf.Tensor], rows: Sequence[tf.Tensor], activations: Sequence[str | None]
) -> tf.Tensor:
    """The (layers, 7) `FORWARD_STATS` from each layer's `unit_sums` and row count.

    Example:

    >>> a = tf.constant([[0.0, 2.0], [1.0, 0.0]])
    >>> halves = [unit_sums(a[:1], "relu", 0.99), unit_sums(a[1:], "relu", 0.99)]
    >>> whole = stats_from_unit_sums([halves[0][0] + halves[1][0]], [halves[0][1] + halves[1][1]], ["relu"])
    >>> import numpy as np
    >>> bool(np.allclose(whole[0], forward_stats(a, "relu", 0.99), equal_nan=True))
    True
    """
    groups: dict[str, list[int]] = {}
    for i, act in enumerate(activations):
        kind = feature_kind(act)
        groups.setdefault(kind, []).append(i)
    parts, order = [], []
    for kind, members in groups.items():
        totals, sizes, dead = [], [], []
        for i in members:
            cols = sums[i]
            totals.append(tf.reduce_sum(cols, axis=1))
            units = float(cols.shape[1]) if cols.shape[1] is not None else tf.cast(tf.shape(cols)[1], tf.float32)
            sizes.append(rows[i] * units)
            if kind in RELU_LIKE:
                # Row 2 counts each unit's active samples: 1 - count > 0 only at 0.
                dead.append(tf.reduce_sum(tf.nn.relu(1.0 - cols[2])) / tf.cast(tf.shape(cols)[1], tf.float32))
        means = tf.stack(totals) / tf.stack(sizes)[:, None]  # (members, features)
        parts.append(statistics(kind, means, tf.stack(dead) if dead else None))
        order.extend(members)
    stats = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
    if order != sorted(order):
        stats = tf.gather(stats, [order.index(i) for i in range(len(order))])
    return stats


def _as_matrix(a: tf.Tensor) -> tf.Tensor:
    """The output as float32 (batch, units): one column per unit."""
    a = _f32(a)
    if a.shape.rank == 0:
        return tf.reshape(a, [1, 1])
    if a.shape.rank == 2:
        return a
    units = None
    if a.shape.rank is not None and a.shape[1:].is_fully_defined():
        units = int(a.shape[1:].num_elements())
    return tf.reshape(a, [tf.shape(a)[0], units if units is not None else -1])


def _column_sums(a: tf.Tensor, features: list[tf.Tensor]) -> tf.Tensor:
    """Sums over the batch of each (batch, units) feature, (features, units)."""
    if in_xla_context():
        # XLA compiles a row of ones times a (batch, units) matrix into a
        # slow strided loop on a CPU; its own reduction over the batch is faster.
        return tf.stack([tf.reduce_sum(f, axis=0) for f in features])
    ones = tf.ones([1, tf.shape(a)[0]], tf.float32)
    return tf.concat([tf.matmul(ones, f) for f in features], 0)


def batch_accuracy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """`gradscope.portable_stats.batch_accuracy` with TensorFlow's own argmax."""
    return _batch_accuracy(y_true, y_pred, argmax=lambda x: tf.argmax(x, -1, output_type=tf.int32))


def placed(shape: list[int], rows: list[int], values: tf.Tensor | None, base: tf.Tensor | None = None) -> tf.Tensor:
    """A tensor of ``shape`` with ``values`` at ``rows`` and NaN (or ``base``)
    elsewhere; no op at all when ``values`` already fill every row in order."""
    if base is None and rows == list(range(shape[0])):
        return values
    base = tf.fill(shape, _NAN) if base is None else base
    if not rows:
        return base
    return tf.tensor_scatter_nd_update(base, [[r] for r in rows], values)


