"""The statistics both backends compute inside the step, written once with `keras.ops`.

A layer's output becomes the 7 `FORWARD_STATS` through elementwise features
(a, a^2, an "is saturated" 0/1, ...) whose batch means the algebra in
`statistics` turns into mean, std, saturation, dead share and the mean
activation derivative. TensorFlow's step (`gradscope.stats`) sums the
features over the batch its own fastest way and then calls `statistics`;
the JAX step (`gradscope.jax_step`) calls `forward_stats` here as it is.
The histogram, the batch accuracy and the squared norm are here too.

Everything here is traced into the compiled step: `keras.ops` on the active
backend's tensors, nothing on the host.

Example:

>>> import numpy as np
>>> s = forward_stats(np.array([[0.0, 0.995], [0.5, -1.0]], np.float32), "tanh", 0.99)
>>> {name: round(float(v), 3) for name, v in zip(FORWARD_STATS[:3], s)}
{'act_mean': 0.124, 'act_std': 0.738, 'saturation': 0.5}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

#: The order of the forward statistics in a recorded row.
FORWARD_STATS = ("act_mean", "act_std", "saturation", "dead", "dact_mean", "dact_rms", "nonfinite")

_NAN = float("nan")
RELU_LIKE = ("relu", "relu6")


def at_least(x: Any, bound: float) -> Any:
    """1.0 where ``x >= bound`` (x in [0, 1]), else 0.0, by arithmetic: no
    comparison and cast, two ops fewer in every step."""
    if bound <= 0.0:
        return ops.ones_like(x)
    scaled = ops.floor(x * (1.0 / bound))
    # floor(x / bound) is 0 or 1 as long as x < 2 * bound; clip otherwise.
    return scaled if bound > 0.5 else ops.minimum(scaled, 1.0)


def _tanh_features(a: Any, t: float) -> list[Any]:
    a2 = ops.square(a)
    return [a, a2, ops.square(a2), at_least(a2, t * t)]


def _sigmoid_features(a: Any, t: float) -> list[Any]:
    a2 = ops.square(a)
    # (2a - 1)^2 >= (2t - 1)^2 exactly when a >= t or a <= 1 - t.
    return [a, a2, ops.square(a - a2), at_least(ops.square(2.0 * a - 1.0), (2.0 * t - 1.0) ** 2)]


def _relu_features(a: Any, t: float) -> list[Any]:
    return [a, ops.square(a), ops.relu(ops.sign(a))]  # the last: 1 where a > 0


def _relu6_features(a: Any, t: float) -> list[Any]:
    active = ops.relu(ops.sign(a))
    # ... and a < 6: floor(a / 6) is 1 at a = 6 (relu6 never exceeds it).
    return [a, ops.square(a), active - ops.minimum(ops.floor(a / 6.0), 1.0) * active]


# Activations (besides tanh, sigmoid and the ReLUs, which have their own
# algebra) whose derivative f'(s) can be read from the output a = f(s), so
# measuring it needs no second look at the pre-activation.
_DERIVATIVE_FROM_OUTPUT: dict[str, Callable[[Any], Any]] = {
    "elu": lambda a: ops.where(a > 0, ops.ones_like(a), a + 1.0),
    "softplus": lambda a: 1.0 - ops.exp(-a),
}


def _derivative_features(activation: str) -> Callable[[Any, float], list[Any]]:
    def features(a: Any, t: float) -> list[Any]:
        d = _DERIVATIVE_FROM_OUTPUT[activation](a)
        return [a, ops.square(a), d, ops.square(d)]

    return features


#: The elementwise features each activation's statistics are built from;
#: the first two are always a and a^2. None: any other activation.
FEATURES: dict[str | None, Callable[[Any, float], list[Any]]] = {
    "tanh": _tanh_features,
    "sigmoid": _sigmoid_features,
    "relu": _relu_features,
    "relu6": _relu6_features,
    "elu": _derivative_features("elu"),
    "softplus": _derivative_features("softplus"),
    "linear": lambda a, t: [a, ops.square(a)],
    None: lambda a, t: [a, ops.square(a)],
}


def feature_kind(activation: str | None) -> str | None:
    """The key of `FEATURES` for an activation name (None: no algebra of its own)."""
    return activation if activation in FEATURES else None


def statistics(kind: str | None, m: Any, dead: Any | None) -> Any:
    """The (layers, 7) `FORWARD_STATS` from the (layers, features) batch means
    of the features of layers that share activation ``kind``.

    Args:
        kind: a `feature_kind`.
        m: the means, one row per layer, one column per feature.
        dead: the share of dead units per layer (ReLUs), or None.
    """
    m1, m2 = m[:, 0], m[:, 1]
    nan = ops.full_like(m1, _NAN)
    saturation = dead_share = dact = dact_rms = nan
    if kind == "tanh":
        saturation = m[:, 3]
        dact = 1.0 - m2  # mean of 1 - a^2
        dact_rms = ops.sqrt(ops.maximum(1.0 - 2.0 * m2 + m[:, 2], 0.0))  # (1 - a^2)^2 = 1 - 2a^2 + a^4
    elif kind == "sigmoid":
        saturation = m[:, 3]
        dact = m1 - m2  # mean of a - a^2
        dact_rms = ops.sqrt(m[:, 2])
    elif kind in RELU_LIKE:
        dact = m[:, 2]
        dact_rms = ops.sqrt(dact)  # f'(s) is 0 or 1
        dead_share = dead
    elif kind == "linear":
        dact = dact_rms = ops.ones_like(m1)
    elif kind is not None:
        dact, dact_rms = m[:, 2], ops.sqrt(m[:, 3])
    # 1 where any output is NaN or Inf: they make the sums non-finite, so no
    # extra pass is needed. (A finite sum that overflows counts too.)
    finite = ops.isfinite(m1 + m2)
    if dead_share is not None:
        dead_share = ops.where(finite, dead_share, nan)
    nonfinite = 1.0 - ops.cast(finite, "float32")
    std = ops.sqrt(ops.maximum(m2 - ops.square(m1), 0.0))
    return ops.stack([m1, std, saturation, dead_share, dact, dact_rms, nonfinite], axis=1)


def as_matrix(a: Any) -> Any:
    """The output as float32 (batch, units): one column per unit (static shapes)."""
    a = ops.cast(a, "float32")
    if len(a.shape) == 0:
        return ops.reshape(a, (1, 1))
    return a if len(a.shape) == 2 else ops.reshape(a, (a.shape[0], -1))


def forward_stats(a: Any, activation: str | None, saturation_threshold: float) -> Any:
    """The `FORWARD_STATS` of one layer's output ``a`` (batch first, static shape), shape (7,).

    A statistic that does not apply to the activation (saturation of a ReLU,
    dead units of a tanh) is NaN rather than 0, so it is not mistaken for a
    measured value. A unit is saturated when |a| >= the threshold (to float
    rounding), dead when it outputs 0 for every sample of the batch.

    Args:
        a: the layer's output.
        activation: its activation name, or None.
        saturation_threshold: |a| at or above which a tanh unit counts as saturated.
    """
    a = as_matrix(a)
    kind = feature_kind(activation)
    features = FEATURES[kind](a, saturation_threshold)
    rows, units = a.shape
    # Each feature straight to its mean: reductions of one input that XLA
    # fuses into one pass (sums per unit first would be a pass more).
    means = ops.stack([ops.sum(f) for f in features]) / float(rows * units)
    dead = None
    if kind in RELU_LIKE:
        # Each unit's count of active samples: 1 - count > 0 only at 0.
        dead = ops.reshape(ops.sum(ops.relu(1.0 - ops.sum(features[2], axis=0))) / float(units), (1,))
    return statistics(kind, ops.reshape(means, (1, -1)), dead)[0]


def histogram(a: Any, activation: str | None, bins: int) -> tuple[Any, Any]:
    """Counts of ``a`` in ``bins`` equal bins, and the (low, high) range used.

    tanh and sigmoid get their natural range so histograms of different
    moments line up; other activations use the batch's own finite min and max.

    Example:

    >>> import numpy as np
    >>> counts, bounds = histogram(np.array([-0.9, 0.1, 0.2, 0.9], np.float32), "tanh", 4)
    >>> np.asarray(counts).tolist(), np.asarray(bounds).tolist()
    ([1.0, 0.0, 2.0, 1.0], [-1.0, 1.0])
    """
    a = ops.reshape(ops.cast(a, "float32"), (-1,))
    if activation == "tanh":
        lo, hi = ops.convert_to_tensor(-1.0), ops.convert_to_tensor(1.0)
    elif activation == "sigmoid":
        lo, hi = ops.convert_to_tensor(0.0), ops.convert_to_tensor(1.0)
    else:
        finite = ops.isfinite(a)
        big = 3.4e38
        lo = ops.min(ops.where(finite, a, big))
        hi = ops.max(ops.where(finite, a, -big))
        lo, hi = ops.where(lo <= hi, lo, 0.0), ops.where(hi >= lo, hi, 1.0)
        hi = ops.maximum(hi, lo + 1e-6)
    scaled = (a - lo) / (hi - lo) * bins
    idx = ops.clip(ops.cast(ops.floor(ops.where(ops.isfinite(scaled), scaled, 0.0)), "int32"), 0, bins - 1)
    counts = ops.segment_sum(ops.ones_like(a), idx, num_segments=bins)
    return counts, ops.stack([lo, hi])


def batch_accuracy(y_true: Any, y_pred: Any, argmax: Callable[[Any], Any] | None = None) -> Any:
    """Share of correct predictions in the batch, float32; NaN if undefined.

    One-hot targets are compared by argmax, integer labels against the
    argmax, and single-output models by thresholding at 0.5.

    Args:
        y_true: the targets.
        y_pred: the predictions.
        argmax: ``x -> int32 argmax over the last axis``. Defaults to `None`,
            `keras.ops.argmax`; TensorFlow's step passes its own, which skips
            keras' handling of -0.0 (8 ops more in every step).

    Example:

    >>> import numpy as np
    >>> float(batch_accuracy(np.array([1, 0]), np.array([[0.2, 0.8], [0.3, 0.7]], np.float32)))
    0.5
    """
    if y_true is None or y_pred is None or not hasattr(y_pred, "shape") or not _rank(y_pred):
        return ops.convert_to_tensor(_NAN, "float32")
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.convert_to_tensor(y_true)
    rank, width = _rank(y_pred), y_pred.shape[-1]
    argmax = argmax or (lambda x: ops.cast(ops.argmax(x, -1), "int32"))
    if width == 1:
        hit = ops.equal(ops.cast(y_pred > 0.5, "int32"), ops.cast(ops.reshape(y_true, ops.shape(y_pred)), "int32"))
    elif _rank(y_true) == rank and y_true.shape[-1] == width:
        hit = ops.equal(argmax(y_pred), argmax(y_true))
    elif _rank(y_true) in (rank - 1, rank):
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        hit = ops.equal(argmax(y_pred), labels)
    else:
        return ops.convert_to_tensor(_NAN, "float32")
    return ops.mean(ops.cast(hit, "float32"))


def finite_or_inf(x: Any) -> Any:
    """+inf where ``x`` is NaN or Inf: in the record, NaN means "not measured".

    Example:

    >>> import numpy as np
    >>> np.asarray(finite_or_inf(np.array([1.0, np.nan, -np.inf], np.float32))).tolist()
    [1.0, inf, inf]
    """
    return ops.where(ops.isfinite(x), x, float("inf"))


def _rank(x: Any) -> int | None:
    """The number of dimensions of ``x``, or None when unknown (a TensorFlow graph tensor)."""
    try:
        return len(x.shape)
    except (TypeError, ValueError):
        return None


def sq_norm(t: Any) -> Any:
    """The squared L2 norm of ``t`` as a float32 scalar."""
    return ops.sum(ops.square(ops.cast(t, "float32")))
