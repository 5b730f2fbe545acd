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
    t = tf.cast(t, tf.float32)
    return tf.reduce_sum(tf.square(t))


def mean_square(t: tf.Tensor) -> tf.Tensor:
    """Mean of squares, float32: the square of the RMS."""
    return tf.reduce_mean(tf.square(tf.cast(t, tf.float32)))


def forward_stats(a: tf.Tensor, activation: str | None, saturation_threshold: float) -> tf.Tensor:
    """The `FORWARD_STATS` of one layer's output ``a`` (batch first), shape (7,).

    A statistic that does not apply to the activation (saturation of a ReLU,
    dead units of a tanh) is NaN rather than 0, so it is not mistaken for a
    measured value.
    """
    a = tf.cast(a, tf.float32)
    mean = tf.reduce_mean(a)
    std = tf.math.reduce_std(a)
    nan = tf.constant(_NAN, tf.float32)
    if activation == "tanh":
        saturation = tf.reduce_mean(tf.cast(tf.abs(a) > saturation_threshold, tf.float32))
    elif activation == "sigmoid":
        low = 1.0 - saturation_threshold
        tails = (a < low) | (a > saturation_threshold)
        saturation = tf.reduce_mean(tf.cast(tails, tf.float32))
    else:
        saturation = nan
    if activation in _RELU_LIKE:
        # A unit is dead when it outputs 0 for every sample of the batch.
        dead_units = tf.reduce_all(a <= 0.0, axis=0)
        dead = tf.reduce_mean(tf.cast(dead_units, tf.float32))
    else:
        dead = nan
    derivative = _DERIVATIVE_FROM_OUTPUT.get(activation or "")
    if derivative is not None:
        d = derivative(a)
        dact, dact_rms = tf.reduce_mean(d), tf.sqrt(tf.reduce_mean(tf.square(d)))
    else:
        dact = dact_rms = nan
    # Share of NaN/Inf outputs: finite itself, so "measured, and bad" stays
    # distinguishable from "not measured" (NaN).
    nonfinite = 1.0 - tf.reduce_mean(tf.cast(tf.math.is_finite(a), tf.float32))
    return tf.stack([mean, std, saturation, dead, dact, dact_rms, nonfinite])


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
