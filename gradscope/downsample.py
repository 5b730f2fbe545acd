"""A long run in a few rows: the median, minimum and maximum of each bucket of steps.

`downsample` reads a history one block at a time (a streamed run's chunks,
say), so a run of any length is summarised in the memory of one bucket and
the result. The rows ``0 .. n - 1`` are cut into ``buckets`` runs of
consecutive rows, as equal as they can be (bucket ``b`` holds rows
``b * n // buckets`` to ``(b + 1) * n // buckets - 1``). Each bucket gives one
row: its last step, and for each series and column

* the median of the bucket's values (NaN, "not measured", left out), except
  that a bucket holding +/-Inf shows it, and the ``nonfinite`` flag shows
  its maximum, so a non-finite value is never averaged away;
* the minimum and the maximum, in ``history.spread.low`` and ``.high``
  (per-layer series and scalars; the variable series keep the median only).

Example:

>>> import numpy as np
>>> from gradscope.history import GradientHistory
>>> h = GradientHistory(["dense"])
>>> h.append(range(6), {"grad_norm": np.array([[1.0], [5.0], [3.0], [2.0], [9.0], [4.0]])})
>>> small = downsample(h.blocks(), len(h), buckets=2, like=h)
>>> small.steps.tolist(), small["grad_norm"].ravel().tolist(), small.spread.low["grad_norm"].ravel().tolist()
([2, 5], [3.0, 4.0], [1.0, 2.0])
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from gradscope.history import GradientHistory, Spread

# The series whose bucket shows its maximum: a flag of "something went bad".
_MAX_SERIES = ("layer/nonfinite",)
_SPREAD_PREFIXES = ("layer/", "scalar/")


def downsample(blocks: Iterable[dict[str, np.ndarray]], rows: int, buckets: int,
               like: GradientHistory) -> GradientHistory:
    """The history of ``rows`` rows, given as ``blocks``, down-sampled to ``buckets`` rows.

    Args:
        blocks: the rows in order, in blocks named as in ``history.npz``
            (``steps``, ``layer/grad_norm``, ...), e.g. `GradientHistory.blocks`.
        rows: how many rows the blocks hold in all.
        buckets: rows of the result (at most ``rows``).
        like: the history the layers, variables, facts, config and histograms come from.

    Returns:
        A `GradientHistory` of the bucket medians, with ``spread`` set.
    """
    if rows <= 0:
        empty = _empty(like)
        empty.spread = Spread(_empty(like), _empty(like), np.zeros(0, np.int64), 0)
        return empty
    buckets = max(min(int(buckets), int(rows)), 1)
    edges = np.arange(buckets + 1, dtype=np.int64) * rows // buckets
    mid, low, high = (_empty(like) for _ in range(3))
    pending: list[dict[str, np.ndarray]] = []
    held, bucket = 0, 0
    for block in blocks:
        pending.append(block)
        held += len(block["steps"])
        # Every bucket complete with what is held is reduced now, so at most
        # one bucket and one block are in memory.
        while bucket < buckets and held >= edges[bucket + 1] - edges[bucket]:
            size = int(edges[bucket + 1] - edges[bucket])
            rows_of_bucket, pending = _take(pending, size)
            held -= size
            _reduce(rows_of_bucket, mid, low, high)
            bucket += 1
    mid.spread = Spread(low, high, np.diff(edges), rows)
    return mid


def _empty(like: GradientHistory) -> GradientHistory:
    h = GradientHistory(like.layers, variables=like.variables, layer_info=like.layer_info, config=like.config)
    h.histograms = like.histograms
    h.evaluations = like.evaluations
    return h


def _take(pending: list[dict[str, np.ndarray]], size: int) -> tuple[dict[str, np.ndarray],
                                                                     list[dict[str, np.ndarray]]]:
    """The first ``size`` rows of the pending blocks, joined, and the blocks left."""
    taken, left, need = [], [], size
    for block in pending:
        n = len(block["steps"])
        if need >= n:
            taken.append(block)
            need -= n
        elif need > 0:
            taken.append({k: v[:need] for k, v in block.items()})
            left.append({k: v[need:] for k, v in block.items()})
            need = 0
        else:
            left.append(block)
    keys = {k for b in taken for k in b}
    joined = {}
    for key in keys:
        # A series missing from a block (not recorded yet) is NaN there.
        ref = next(b[key] for b in taken if key in b)
        joined[key] = np.concatenate([b[key] if key in b else np.full((len(b["steps"]),) + ref.shape[1:], np.nan)
                                      for b in taken])
    return joined, left


def _reduce(rows: dict[str, np.ndarray], mid: GradientHistory, low: GradientHistory, high: GradientHistory) -> None:
    step = rows["steps"][-1:]
    out_mid, out_low, out_high = {"steps": step}, {"steps": step}, {"steps": step}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: not measured in this bucket
        for key, values in rows.items():
            if key == "steps":
                continue
            lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
            if key in _MAX_SERIES:
                m = hi
            else:
                m = np.nanmedian(values, axis=0)
                m = np.where(np.isposinf(hi), np.inf, np.where(np.isneginf(lo), -np.inf, m))
            out_mid[key] = m[None]
            if key.startswith(_SPREAD_PREFIXES):
                out_low[key], out_high[key] = lo[None], hi[None]
    mid.append_arrays(out_mid)
    low.append_arrays(out_low)
    high.append_arrays(out_high)
