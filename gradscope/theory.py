"""The lecture's analytic facts: activation derivatives, closed-form depth ratios, and the variance argument of
Glorot & Bengio (2010) and He et al. (2015) at initialisation (`layer_profile`; docs/papers.md).

Computed in float64 with numpy, so the numbers are the mathematical ones;
`float32_autodiff` shows what TensorFlow's float32 arithmetic makes of them.

Example:

>>> f"{derivative('tanh', 8.0):.3e}"
'4.501e-07'
>>> linear_backprop_ratio(n=256, sigma2=1 / 512, k=4)
0.25
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

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

    For tanh at s = 8, TensorFlow's float32 tanh returns exactly 1.0 (its
    approximation does so from s of about 7.9 on, although the float32
    nearest tanh(8) is 0.99999976), and the gradient 1 - tanh(s)^2 becomes
    exactly 0: saturation in its purest form.
    """
    return tf_autodiff(activation, points, "float32")


def tf_autodiff(activation: str, points: Iterable[float], dtype: str) -> list[tuple[float, float, float]]:
    """(s, f(s), f'(s)) as TensorFlow computes them in ``dtype`` with autodiff.

    Args:
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        points: the points s.
        dtype: ``"float32"`` or ``"float64"``.

    Example:

    >>> [f"{g:.4g}" for _, _, g in tf_autodiff("tanh", [0.0, 8.0], "float64")]
    ['1', '4.501e-07']
    """
    import tensorflow as tf

    s = tf.constant(list(points), dtype)
    fn = {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu}[activation]
    with tf.GradientTape() as tape:
        tape.watch(s)
        y = fn(s)
    g = tape.gradient(y, s)
    return [(float(a), float(b), float(c)) for a, b, c in zip(s.numpy(), y.numpy(), g.numpy(), strict=True)]


def linear_backprop_ratio(n: int, sigma2: float, k: int) -> float:
    """RMS of d(loss)/d(h) k layers below, over its value at the top, for a deep
    linear net of width n with weights of variance sigma2: (n sigma2)^(k/2).

    Glorot & Bengio (2010), eq. 6: each layer multiplies the gradient's
    variance by n * Var(W).
    """
    return float((n * sigma2) ** (k / 2))


# -- signal propagation at initialisation -------------------------------------------------
# Glorot & Bengio (2010) follow the variances of activations and gradients
# through a net at initialisation in the linear regime, f'(s) = 1 (their eqs.
# 5-7); He et al. (2015, section 2.2) keep f'(s) in the product, where ReLU
# contributes E[f'(s)^2] = 1/2. Taking each pre-activation s as Gaussian,
# N(0, q), gives E[f'(s)^2] for tanh as well, so one recursion covers both
# papers: forward, q_l = n_{l-1} Var(W_l) E[f(s_{l-1})^2]; backward, the
# gradient's variance is multiplied by n_{l+1} Var(W_{l+1}) E[f'(s_{l+1})^2]
# per layer.

#: Initializers whose weight variance is known in closed form, as a function of (fan_in, fan_out).
#: ``standard`` is Glorot & Bengio's eq. 1, U[-1/sqrt(n), 1/sqrt(n)]: Var(W) = 1/(3 n).
WEIGHT_VARIANCES = {
    "standard": lambda fan_in, fan_out: 1.0 / (3.0 * fan_in),
    "glorot_uniform": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
    "glorot_normal": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
    "he_normal": lambda fan_in, fan_out: 2.0 / fan_in,
    "he_uniform": lambda fan_in, fan_out: 2.0 / fan_in,
    "lecun_normal": lambda fan_in, fan_out: 1.0 / fan_in,
    "lecun_uniform": lambda fan_in, fan_out: 1.0 / fan_in,
    "random_uniform": lambda fan_in, fan_out: 0.05**2 / 3.0,  # Keras' U(-0.05, 0.05)
    "random_normal": lambda fan_in, fan_out: 0.05**2,  # Keras' N(0, 0.05^2)
}

# Gauss-Hermite nodes for E[g(z)], z ~ N(0, 1): exact for polynomials of degree up to 2 * 120 - 1, and
# accurate to about 1e-12 for the smooth tanh terms here.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(120)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def weight_variance(init: str, fan_in: int, fan_out: int) -> float:
    """Var(W) of a kernel drawn by the initializer ``init`` (a name in `WEIGHT_VARIANCES`).

    Args:
        init: the initializer's name, e.g. ``"standard"`` or ``"he_normal"``.
        fan_in: the layer's inputs.
        fan_out: the layer's outputs.

    Example:

    >>> weight_variance("standard", 1000, 1000) * 1000  # Glorot & Bengio eq. 15: n Var(W) = 1/3
    0.3333333333333333
    >>> weight_variance("glorot_uniform", 512, 512) * 512, weight_variance("he_normal", 512, 512) * 512
    (1.0, 2.0)
    """
    try:
        return float(WEIGHT_VARIANCES[init](fan_in, fan_out))
    except KeyError:
        raise ValueError(f"no closed-form weight variance for {init!r}; choose from "
                         f"{', '.join(WEIGHT_VARIANCES)}") from None


def gaussian_mean(fn: Callable[[np.ndarray], np.ndarray], q: float) -> float:
    """E[fn(s)] for s ~ N(0, q), by Gauss-Hermite quadrature.

    Args:
        fn: a numpy function of an array.
        q: the variance of s (0 or more).

    Example:

    >>> round(gaussian_mean(np.square, 2.5), 12)
    2.5
    """
    return float(np.sum(_WEIGHTS * fn(np.sqrt(max(q, 0.0)) * _NODES)))


def mean_square_derivative(activation: str, q: float) -> float:
    """E[f'(s)^2] for s ~ N(0, q): 1/2 for ReLU whatever q (He et al. 2015, section 2.2), 1 for linear.

    Args:
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        q: the pre-activation's variance.

    Example:

    >>> mean_square_derivative("relu", 7.0), round(mean_square_derivative("tanh", 0.0), 12)
    (0.5, 1.0)
    """
    if activation == "relu":
        return 0.5  # f'(s) is 1 on the half of a symmetric s above 0, else 0
    if activation == "linear":
        return 1.0
    return gaussian_mean(lambda s: derivative(activation, s) ** 2, q)


def mean_square_activation(activation: str, q: float) -> float:
    """E[f(s)^2] for s ~ N(0, q): q/2 for ReLU, q for linear, by quadrature for tanh.

    Args:
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        q: the pre-activation's variance.

    Example:

    >>> mean_square_activation("relu", 3.0), round(mean_square_activation("tanh", 1e-6) / 1e-6, 4)
    (1.5, 1.0)
    """
    if activation == "relu":
        return q / 2.0
    if activation == "linear":
        return q
    if activation == "tanh":
        return gaussian_mean(lambda s: np.tanh(s) ** 2, q)
    raise ValueError(f"no Gaussian closed form for {activation!r}; choose from tanh, relu, linear")


def backprop_factor(n_var_w: float, derivative_mean_square: float = 1.0) -> float:
    """The factor one layer multiplies the back-propagated gradient's RMS by, toward the input:
    sqrt(n Var(W) E[f'(s)^2]), n the layer's fan-out.

    Glorot & Bengio (2010) eq. 6 in the linear regime (E[f'^2] = 1); He et al. (2015) eq. 12 with ReLU's 1/2.

    Args:
        n_var_w: n Var(W) of the layer above, with n its fan-out.
        derivative_mean_square: E[f'(s)^2] of that layer. Defaults to `1.0`, the linear regime.

    Example:

    >>> round(backprop_factor(1 / 3), 4)  # the standard init, Glorot & Bengio eq. 15
    0.5774
    >>> round(backprop_factor(1.0, 0.5), 4), backprop_factor(2.0, 0.5)  # ReLU under Glorot, under He
    (0.7071, 1.0)
    """
    return float(np.sqrt(n_var_w * derivative_mean_square))


def layer_profile(widths: Sequence[int], init: str, activation: str, input_mean_square: float) -> dict[str, np.ndarray]:
    """What the variance argument predicts for each hidden layer of an MLP at initialisation, zero biases.

    Args:
        widths: the input size, then each hidden layer's width.
        init: the initializer of every kernel (a name in `WEIGHT_VARIANCES`).
        activation: the hidden layers' activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        input_mean_square: E[x^2] of the inputs, averaged over their features (the one
            fact about the data the forward pass needs: He et al.'s E[x^2] of eq. 7).

    Returns:
        Arrays of one value per hidden layer, input side first: ``q`` (Var(s), eq. 5 with E[f(s)^2] in place of
        the linear regime's Var(s)), ``act_rms`` (the RMS of the layer's output), ``derivative_rms`` (the RMS of
        f'(s)), ``factor`` (the back-propagated gradient's factor from the layer above to this one; NaN for the
        top layer, which has none here), ``backprop`` (the RMS of d(loss)/d(output), relative to the top hidden
        layer's: the product of the factors, eq. 6) and ``weight_grad`` (the RMS of one sample's d(loss)/d(W)
        per kernel entry, relative to the top hidden layer's: eq. 7, flat in eq. 14 when all layers are alike).

    Example:

    >>> p = layer_profile([1000] * 6, "standard", "linear", 1.0)
    >>> [round(float(f), 4) for f in p["factor"][:-1]]  # 1/sqrt(3) per layer, eq. 15 in eq. 6
    [0.5774, 0.5774, 0.5774, 0.5774]
    >>> [round(float(w), 6) for w in p["weight_grad"]]  # flat, eq. 14
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    hidden = list(widths[1:])
    n_var = [weight_variance(init, a, b) for a, b in zip(widths, widths[1:], strict=False)]
    q, inputs_ms = [], []
    mean_square = float(input_mean_square)
    for fan_in, var in zip(widths, n_var, strict=False):
        inputs_ms.append(mean_square)
        q.append(fan_in * var * mean_square)
        mean_square = mean_square_activation(activation, q[-1])
    d2 = np.array([mean_square_derivative(activation, v) for v in q])
    # From the output of layer l to that of layer l - 1: through f' of layer l and the kernel of layer l,
    # whose fan-out is layer l's width.
    factor = np.full(len(hidden), np.nan)
    for layer in range(len(hidden) - 1):
        factor[layer] = backprop_factor(hidden[layer + 1] * n_var[layer + 1], d2[layer + 1])
    backprop = np.ones(len(hidden))
    for layer in range(len(hidden) - 2, -1, -1):
        backprop[layer] = backprop[layer + 1] * factor[layer]
    # One sample's d(loss)/d(W_l)[i, j] = input_i * f'(s_j) * d(loss)/d(output_j).
    weight_grad = np.sqrt(np.array(inputs_ms) * d2) * backprop
    return {
        "q": np.array(q),
        "act_rms": np.sqrt([mean_square_activation(activation, v) for v in q]),
        "derivative_rms": np.sqrt(d2),
        "factor": factor,
        "backprop": backprop,
        "weight_grad": weight_grad / weight_grad[-1],
    }


def per_layer_factor(profile: Sequence[float] | np.ndarray) -> float:
    """The geometric mean of the layer-to-layer factors of a per-layer profile: (first / last)^(1 / (layers - 1)).

    Measured per-layer factors scatter by a few percent at finite width; their geometric mean is the
    slope of the profile on a log scale, which the closed forms predict.

    Args:
        profile: one value per layer, in depth order (at least two).

    Example:

    >>> round(per_layer_factor([1 / 9, 1 / 3, 1.0]), 6)
    0.333333
    """
    values = np.asarray(profile, dtype=np.float64)
    return float((values[0] / values[-1]) ** (1.0 / (len(values) - 1)))
