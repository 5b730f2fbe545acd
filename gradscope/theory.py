"""The lecture's analytic facts: activation derivatives and closed-form depth ratios.

Computed in float64 with numpy, so the numbers are the mathematical ones;
`float32_autodiff` shows what TensorFlow's float32 arithmetic makes of them.

Example:

>>> f"{derivative('tanh', 8.0):.3e}"
'4.501e-07'
>>> linear_backprop_ratio(n=256, sigma2=1 / 512, k=4)
0.25
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_POINTS = (0.0, 1.0, 2.0, 4.0, 8.0)
ACTIVATIONS = ("tanh", "sigmoid", "relu")


def derivative(activation: str, s: float | np.ndarray) -> np.ndarray:
    """f'(s) in float64 for tanh, sigmoid, relu (1 where s > 0) and linear."""
    s = np.asarray(s, dtype=np.float64)
    if activation == "tanh":
        return 1.0 / np.cosh(s) ** 2  # sech^2: exact even where tanh(s) rounds to 1
    if activation == "sigmoid":
        sig = 1.0 / (1.0 + np.exp(-s))
        return sig * (1.0 - sig)
    if activation == "relu":
        return (s > 0).astype(np.float64)
    if activation == "linear":
        return np.ones_like(s)
    raise ValueError(f"no closed-form derivative for {activation!r}; choose from tanh, sigmoid, relu, linear")


def derivative_table(
    points: Iterable[float] = DEFAULT_POINTS, activations: Sequence[str] = ACTIVATIONS
) -> list[dict[str, float]]:
    """One row per point s: ``{"s": s, "tanh": tanh'(s), ...}`` in float64."""
    return [{"s": float(s), **{a: float(derivative(a, s)) for a in activations}} for s in points]


def float32_autodiff(activation: str, points: Iterable[float]) -> list[tuple[float, float, float]]:
    """(s, f(s), f'(s)) as TensorFlow computes them in float32 with autodiff.

    For tanh at s = 8, float32 tanh rounds to exactly 1.0 and the gradient
    1 - tanh(s)^2 becomes exactly 0: saturation in its purest form.
    """
    import tensorflow as tf

    s = tf.constant(list(points), tf.float32)
    fn = {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu}[activation]
    with tf.GradientTape() as tape:
        tape.watch(s)
        y = fn(s)
    g = tape.gradient(y, s)
    return [(float(a), float(b), float(c)) for a, b, c in zip(s.numpy(), y.numpy(), g.numpy(), strict=False)]


def linear_backprop_ratio(n: int, sigma2: float, k: int) -> float:
    """RMS of d(loss)/d(h) k layers below, over its value at the top, for a deep
    linear net of width n with weights of variance sigma2: (n sigma2)^(k/2).

    Glorot & Bengio (2010), eq. 6: each layer multiplies the gradient's
    variance by n * Var(W).
    """
    return float((n * sigma2) ** (k / 2))
