"""Measures over the record: ratios to the output layer, weight gains, the first and last tenth.

The central measure is the *ratio to the output layer*: the RMS of the
back-propagated gradient d(loss)/d(output of layer l), divided by the same at
the output layer, as a median over the first and over the last tenth of the
recorded steps (see `depth_ratios`). It is the quantity that shrinks toward
the input in Glorot & Bengio (2010). Runs that did not record it (a model
without tappable layers) fall back to the ratio of weight gradient norms.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from gradscope.history import GradientHistory


def median(a: np.ndarray) -> np.ndarray:
    """The median over the rows, ignoring NaN (not measured); NaN where a column has no value or there are no rows.

    Args:
        a: `(rows, ...)` array.

    Example:

    >>> import numpy as np
    >>> median(np.array([[1.0, np.nan], [3.0, np.nan]]))
    array([ 2., nan])
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=0) if len(a) else np.full(a.shape[1:], np.nan)


def tenth(rows: int) -> int:
    """Rows in the first (and in the last) tenth of a record: at least one.

    Args:
        rows: the number of rows in the record.

    Example:

    >>> tenth(95), tenth(5)
    (9, 1)
    """
    return max(1, rows // 10)


def depth_ratios(series: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each layer's series relative to the output layer (or to its `reference` layer): (verdict, early, late).

    Early and late are medians over the first and the last tenth of the
    rows (at least one row each). The verdict ratio is, per layer, whichever
    of the two lies further from 1 on a log scale: a net that starts
    vanishing and one that drifts into it are both caught.

    Args:
        series: `(steps, layers)` array, the output layer last.
        reference: for each layer, the index of the layer it is compared with. Defaults to `None`: the output
            layer for every layer.

    Returns:
        Three arrays of one value per layer: the verdict ratio, the early and the late ratio.

    Example:

    >>> import numpy as np
    >>> worst, early, late = depth_ratios(np.array([[0.5, 1.0]] * 10 + [[0.01, 1.0]] * 10))
    >>> print(early[0], late[0], worst[0])
    0.5 0.01 0.01
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = series / (series[:, -1:] if reference is None else series[:, reference])
    k = tenth(len(rel))
    early, late = median(rel[:k]), median(rel[-k:])
    with np.errstate(divide="ignore", invalid="ignore"):
        pick_late = np.abs(np.log(late)) > np.abs(np.log(early))
    worst = np.where(np.isfinite(late) & (pick_late | ~np.isfinite(early)), late, early)
    return worst, early, late


def trunk_reference(history: GradientHistory) -> np.ndarray:
    """The layer each layer's gradient is compared with: the output layer, or,
    for a layer with spatial or sequence outputs (a convolution, an attention
    block), the last such layer, where the trunk ends before pooling. Under
    several optimizers, each one's layers are compared among themselves.

    Pooling over positions divides the gradient among them (a global
    average over 16x16 positions hands each 1/256 of it), so comparing a
    convolution's per-element gradient with the output layer's would call
    every convolutional net vanishing.

    Args:
        history: the record; it reads ``output_shape`` from `layer_info`.

    Example:

    >>> from gradscope.history import GradientHistory
    >>> shapes = ["(None, 8, 8, 4)", "(None, 8, 8, 4)", "(None, 10)"]
    >>> info = [{"output_shape": shape} for shape in shapes]
    >>> trunk_reference(GradientHistory(["conv", "conv_1", "out"], layer_info=info)).tolist()
    [1, 1, 2]
    """
    n = len(history.layers)
    reference = np.full(n, n - 1)
    infos = list(history.layer_info) + [{}] * (n - len(history.layer_info))
    # Networks trained by optimizers of their own (a GAN's generator and
    # discriminator) each have their own output layer: their last.
    groups: dict[Any, list[int]] = {}
    for i, info in enumerate(infos):
        groups.setdefault(info.get("optimizer"), []).append(i)
    for members in groups.values():
        reference[members] = members[-1]
        trunk = [i for i in members if str(infos[i].get("output_shape") or "").count(",") >= 2]
        # A trunk of one layer (an embedding before an RNN) has nothing to be
        # compared with inside it: it keeps the output layer.
        if len(trunk) > 1 and trunk[-1] != members[-1]:
            reference[trunk] = trunk[-1]
    return reference


def weight_gains(history: GradientHistory) -> tuple[np.ndarray, np.ndarray]:
    """Forward gain sqrt(fan_in Var(W)) and backward gain sqrt(fan_out Var(W)) of each kernel, at the start.

    ||W||^2 = size * Var(W) for zero-mean weights, where the size is
    ``layer_info["kernel_size"]`` (fan_in * fan_out for a dense kernel, and
    the default when it is not recorded; a convolution's fans count its
    receptive field, its size only once). The norm is
    the kernel's before the first update (``layer_info["initial_kernel_norm"]``,
    which the recording takes when it begins); runs saved without it fall
    back to the first recorded kernel norm, read after the first update. NaN
    for layers without a 2-D+ kernel or never measured.

    Args:
        history: the record; it needs ``fan_in``/``fan_out`` in `layer_info`.

    Returns:
        Two arrays of one gain per layer: forward, backward.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> info = [{"fan_in": 16, "fan_out": 4, "initial_kernel_norm": 4.0}]
    >>> h = GradientHistory(["dense"], variables=["dense/kernel"], layer_info=info)
    >>> h.append([0], {"grad_norm": np.ones((1, 1))}, variable_series={"weight_norm": np.array([[400.0]])})
    >>> forward, backward = weight_gains(h)  # the weights before the first update, not after it
    >>> print(forward[0], backward[0])
    2.0 1.0
    """
    fwd = np.full(len(history.layers), np.nan)
    bwd = np.full(len(history.layers), np.nan)
    wn = history.variable_series.get("weight_norm")
    for li, (name, info) in enumerate(zip(history.layers, history.layer_info, strict=False)):
        if not (info.get("fan_in") and info.get("fan_out")):
            continue
        norm = info.get("initial_kernel_norm")
        key = f"{name}/kernel"
        if norm is None and wn is not None and len(history) and key in history.variables:
            column = wn[:, history.variables.index(key)]
            measured = column[~np.isnan(column)]  # NaN: a step that did not measure weights
            norm = measured[0] if len(measured) else None
        if norm is not None:
            # ||W||^2 = size * Var(W); a dense kernel's size is fan_in * fan_out,
            # a convolution's is that over its receptive field.
            size = info.get("kernel_size") or info["fan_in"] * info["fan_out"]
            fwd[li] = norm * math.sqrt(info["fan_in"] / size)
            bwd[li] = norm * math.sqrt(info["fan_out"] / size)
    return fwd, bwd
    for li, (name, info) in enumerate(zip(history.layers, history.layer_info, strict=False)):
        key = f"{name}/kernel"
        if key in history.variables and info.get("fan_in") and info.get("fan_out"):
            column = wn[:, history.variables.index(key)]
            measured = column[~np.isnan(column)]  # NaN: a step that did not measure weights
            if len(measured):
                fwd[li] = measured[0] / math.sqrt(info["fan_out"])
                bwd[li] = measured[0] / math.sqrt(info["fan_in"])
    return fwd, bwd


def weight_growth(history: GradientHistory) -> np.ndarray:
    """How many times each kernel's norm grew from the start to its last measurement.

    The start is the norm before the first update where the run has it
    (``layer_info["initial_kernel_norm"]``), else the first recorded norm.
    +inf where the last norm is non-finite; NaN for layers without a kernel.

    Args:
        history: the record.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"], variables=["dense/kernel"], layer_info=[{"initial_kernel_norm": 2.0}])
    >>> h.append([0, 1], {"grad_norm": np.ones((2, 1))}, variable_series={"weight_norm": np.array([[3.0], [500.0]])})
    >>> weight_growth(h).tolist()
    [250.0]
    """
    growth = np.full(len(history.layers), np.nan)
    wn = history.variable_series.get("weight_norm")
    if wn is None or not len(history):
        return growth
    for li, (name, info) in enumerate(zip(history.layers, history.layer_info, strict=False)):
        key = f"{name}/kernel"
        if key not in history.variables:
            continue
        column = wn[:, history.variables.index(key)]
        measured = column[~np.isnan(column)]  # NaN: not measured that step; +inf: non-finite
        start = info.get("initial_kernel_norm")
        start = measured[0] if start is None and len(measured) else start
        if len(measured) and start:
            growth[li] = measured[-1] / start
    return growth
