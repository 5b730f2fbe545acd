"""In-graph statistics: tensors in, a few scalars out.

Everything here runs inside the compiled training step, so it is written with
`tf` ops only and reduces big tensors to scalars on the device. Nothing here
touches the host.

Example:

>>> import tensorflow as tf
>>> float(sq_norm(tf.constant([3.0, 4.0])))
25.0
"""

from __future__ import annotations

import tensorflow as tf

#: The order of the forward statistics in a recorded row.
FORWARD_STATS = ("act_mean", "act_std", "saturation", "dead", "dact_mean", "dact_rms", "nonfinite")

_NAN = float("nan")

# Activations whose derivative f'(s) can be read from the output a = f(s),
# so measuring it needs no second look at the pre-activation.
_DERIVATIVE_FROM_OUTPUT = {
    "linear": lambda a: tf.ones_like(a),
    "tanh": lambda a: 1.0 - tf.square(a),
    "sigmoid": lambda a: a * (1.0 - a),
    "relu": lambda a: tf.cast(a > 0, a.dtype),
    "relu6": lambda a: tf.cast((a > 0) & (a < 6), a.dtype),
    "elu": lambda a: tf.where(a > 0, tf.ones_like(a), a + 1.0),
    "softplus": lambda a: 1.0 - tf.exp(-a),
}
_RELU_LIKE = ("relu", "relu6")


def sq_norm(t: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    """Squared L2 norm as float32, of the dense tensor an IndexedSlices stands for."""
    if isinstance(t, tf.IndexedSlices):
        # Rows that share an index add up before they are squared (an
        # embedding row looked up twice in a batch gets one summed gradient).
        rows = tf.cast(t.dense_shape[0], tf.int32) if t.dense_shape is not None else tf.reduce_max(t.indices) + 1
        t = tf.math.unsorted_segment_sum(t.values, t.indices, rows)
    # l2_loss is sum(t^2) / 2 in one fused pass; square + reduce_sum is two.
    return 2.0 * tf.nn.l2_loss(_f32(t))


def mean_square(t: tf.Tensor) -> tf.Tensor:
    """Mean of squares, float32: the square of the RMS."""
    t = _f32(t)
    return 2.0 * tf.nn.l2_loss(t) / tf.cast(tf.size(t), tf.float32)


def _f32(t: tf.Tensor) -> tf.Tensor:
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def forward_stats(a: tf.Tensor, activation: str | None, saturation_threshold: float) -> tf.Tensor:
    """The `FORWARD_STATS` of one layer's output ``a`` (batch first), shape (7,).

    Every pass over ``a`` costs time in each training step, so the
    statistics are derived from as few reductions as possible: the sums of
    a, a^2 (and a^4 for tanh) give the mean, the standard deviation and, by
    algebra, the mean and RMS of tanh'(s) = 1 - a^2 and sigmoid'(s) = a - a^2.
    A statistic that does not apply to the activation (saturation of a ReLU,
    dead units of a tanh) is NaN rather than 0, so it is not mistaken for a
    measured value.
    """
    a = _f32(a)
    n = tf.cast(tf.size(a), tf.float32)
    a2 = tf.square(a)
    m1 = tf.reduce_sum(a) / n
    m2 = tf.reduce_sum(a2) / n
    std = tf.sqrt(tf.maximum(m2 - tf.square(m1), 0.0))
    nan = tf.constant(_NAN, tf.float32)
    saturation = dead = dact = dact_rms = nan
    if activation == "tanh":
        saturation = _share(a2 > saturation_threshold**2, n)
        m4 = 2.0 * tf.nn.l2_loss(a2) / n
        dact = 1.0 - m2
        dact_rms = tf.sqrt(tf.maximum(1.0 - 2.0 * m2 + m4, 0.0))
    elif activation == "sigmoid":
        saturation = _share(tf.abs(a - 0.5) > saturation_threshold - 0.5, n)
        d = a - a2
        dact = m1 - m2
        dact_rms = tf.sqrt(2.0 * tf.nn.l2_loss(d) / n)
    elif activation in _RELU_LIKE:
        # A unit is dead when it outputs 0 for every sample of the batch.
        units = tf.cast(tf.size(a) // tf.shape(a)[0], tf.float32)
        dead = _share(tf.reduce_max(a, axis=0) <= 0.0, units)
        active = a > 0 if activation == "relu" else (a > 0) & (a < 6)
        dact = _share(active, n)
        dact_rms = tf.sqrt(dact)  # f'(s) is 0 or 1
    elif activation == "linear":
        dact = dact_rms = tf.constant(1.0)
    elif activation in _DERIVATIVE_FROM_OUTPUT:
        d = _DERIVATIVE_FROM_OUTPUT[activation](a)
        dact = tf.reduce_sum(d) / n
        dact_rms = tf.sqrt(2.0 * tf.nn.l2_loss(d) / n)
    # 1 when any output is NaN or Inf: they make the sums non-finite, so no
    # extra pass is needed. (A finite sum that overflows counts too.)
    nonfinite = 1.0 - tf.cast(tf.math.is_finite(m1 + m2), tf.float32)
    return tf.stack([m1, std, saturation, dead, dact, dact_rms, nonfinite])


def _share(mask: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.math.count_nonzero(mask), tf.float32) / n


def histogram(a: tf.Tensor, activation: str | None, bins: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Counts of ``a`` in ``bins`` equal bins, and the (low, high) range used.

    tanh and sigmoid get their natural range so histograms of different
    moments line up; other activations use the batch's own min and max.
    Built from `unsorted_segment_sum` because it also compiles under XLA.
    """
    a = tf.reshape(tf.cast(a, tf.float32), [-1])
    if activation == "tanh":
        lo, hi = tf.constant(-1.0), tf.constant(1.0)
    elif activation == "sigmoid":
        lo, hi = tf.constant(0.0), tf.constant(1.0)
    else:
        # Min and max over the finite values only; masked with where (not
        # boolean_mask) to keep shapes static for XLA.
        finite = tf.math.is_finite(a)
        lo = tf.reduce_min(tf.where(finite, a, tf.float32.max))
        hi = tf.reduce_max(tf.where(finite, a, tf.float32.min))
        lo = tf.where(lo <= hi, lo, 0.0)
        hi = tf.where(hi >= lo, hi, 1.0)
        hi = tf.maximum(hi, lo + 1e-6)
    scaled = (a - lo) / (hi - lo) * bins
    idx = tf.clip_by_value(tf.cast(tf.floor(tf.where(tf.math.is_finite(scaled), scaled, 0.0)), tf.int32), 0, bins - 1)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(a), idx, bins)
    return counts, tf.stack([lo, hi])


def batch_accuracy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Share of correct predictions in the batch, float32; NaN if undefined.

    One-hot targets are compared by argmax, integer labels against the
    argmax, and single-output models by thresholding at 0.5.
    """
    if y_true is None or y_pred is None or not isinstance(y_pred, tf.Tensor):
        return tf.constant(_NAN, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if y_pred.shape.rank is None or y_pred.shape.rank < 1:
        return tf.constant(_NAN, tf.float32)
    width = y_pred.shape[-1]
    if width == 1:
        hit = tf.equal(tf.cast(y_pred > 0.5, tf.int64), tf.cast(tf.reshape(y_true, tf.shape(y_pred)), tf.int64))
    elif y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == width:
        hit = tf.equal(tf.argmax(y_pred, -1), tf.argmax(y_true, -1))
    elif y_true.shape.rank in (y_pred.shape.rank - 1, y_pred.shape.rank):
        labels = tf.reshape(tf.cast(y_true, tf.int64), tf.shape(y_pred)[:-1])
        hit = tf.equal(tf.argmax(y_pred, -1), labels)
    else:
        return tf.constant(_NAN, tf.float32)
    return tf.reduce_mean(tf.cast(hit, tf.float32))
