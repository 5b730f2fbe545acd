"""The layout of one recorded row, defined once, and the rows fetched from the device.

Both backends' steps write a row per recorded step in `RowLayout`'s order
(TensorFlow's `gradscope.recorder`, JAX's `gradscope.jax_step`); on the host
the block of fetched rows is split back by the same layout into `Rows`,
which turn themselves into the history's series. No TensorFlow here.

Example:

>>> import numpy as np
>>> layout = RowLayout(layers=1, variables=1)
>>> rows = layout.split(np.arange(layout.width, dtype=np.float32)[None], np.array([7]))
>>> rows.steps.tolist(), rows.grad_sq.tolist()
([7], [[8.0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
from keras import ops

from gradscope.portable_stats import FORWARD_STATS

SCALARS = ("loss", "accuracy", "loss_scale")


@dataclass(frozen=True)
class RowLayout:
    """Where each quantity sits in a recorded row: the one definition.

    Args:
        layers: how many layers are watched.
        variables: how many variables are watched.

    Example:

    >>> layout = RowLayout(layers=2, variables=4)
    >>> [name for name, _ in layout.parts]
    ['forward', 'backprop_sq', 'grad_sq', 'weight_sq', 'update_sq', 'scalars']
    >>> layout.width  # 2 layers x 7 forward statistics + 2 + 3 x 4 variables + 3 scalars
    31
    """

    layers: int
    variables: int

    @property
    def parts(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``(name, shape of one row's part)`` in row order; the names are `Rows`' fields."""
        L, V = self.layers, self.variables
        return (
            ("forward", (L, len(FORWARD_STATS))),  # per layer, one column per FORWARD_STATS entry
            ("backprop_sq", (L,)),  # mean square of d(loss)/d(output)
            ("grad_sq", (V,)),  # squared norm of each variable's gradient
            ("weight_sq", (V,)),  # ... of each variable after the update
            ("update_sq", (V,)),  # ... of each variable's update
            ("scalars", (len(SCALARS),)),  # SCALARS
        )

    @property
    def width(self) -> int:
        return sum(prod(shape) for _, shape in self.parts)

    def concat(self, parts: dict[str, Any]) -> Any:
        """One row from its parts (in the compiled step, on either backend)."""
        # Flatten only what is not flat already: every op costs in every step.
        flat = [t if len(t.shape) == 1 else ops.reshape(t, (-1,)) for t in (parts[name] for name, _ in self.parts)]
        return ops.concatenate(flat, axis=0)

    def split(self, block: np.ndarray, steps: np.ndarray) -> Rows:
        """`Rows` from a block of fetched rows ``(n, width)``."""
        n = len(block)
        cuts = np.cumsum([prod(shape) for _, shape in self.parts])[:-1]
        pieces = np.split(block.astype(np.float64), cuts, axis=1)
        fields = {name: piece.reshape((n, *shape)) for (name, shape), piece in zip(self.parts, pieces, strict=True)}
        return Rows(steps=steps.astype(np.int64), **fields)


@dataclass
class Rows:
    """Rows fetched from the device: the raw record of a stretch of steps."""

    steps: np.ndarray  # (n,) int64, global step of each row
    forward: np.ndarray  # (n, layers, len(FORWARD_STATS))
    backprop_sq: np.ndarray  # (n, layers)
    grad_sq: np.ndarray  # (n, variables)
    weight_sq: np.ndarray  # (n, variables)
    update_sq: np.ndarray  # (n, variables)
    scalars: np.ndarray  # (n, len(SCALARS))
    lost: int = 0  # rows overwritten in the ring before they were fetched

    def __len__(self) -> int:
        return len(self.steps)

    def history_parts(self, var_layer: Sequence[int], epoch: int) -> dict[str, Any]:
        """The arguments of `GradientHistory.append` for these rows.

        Args:
            var_layer: the layer index of each watched variable.
            epoch: the epoch the rows belong to.
        """
        n, layers = len(self), self.forward.shape[1]
        owner = np.asarray(var_layer)

        def per_layer(values: np.ndarray) -> np.ndarray:
            return np.stack([values[:, owner == li].sum(axis=1) for li in range(layers)], axis=1).reshape(n, layers)

        grad, weight, update = (np.sqrt(per_layer(v)) for v in (self.grad_sq, self.weight_sq, self.update_sq))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(weight > 0, update / weight, np.nan)
        series = {"grad_norm": grad, "weight_norm": weight, "update_ratio": ratio,
                  "backprop": np.sqrt(self.backprop_sq)}
        series.update({name: self.forward[:, :, k] for k, name in enumerate(FORWARD_STATS)})
        scalars = {name: self.scalars[:, k] for k, name in enumerate(SCALARS)}
        scalars["epoch"] = np.full(n, float(epoch))
        variables = {"grad_norm": np.sqrt(self.grad_sq), "weight_norm": np.sqrt(self.weight_sq),
                     "update_norm": np.sqrt(self.update_sq)}
        return {"steps": self.steps, "series": series, "scalars": scalars, "variable_series": variables}
