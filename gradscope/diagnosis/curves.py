"""The training and validation curves the overfitting and underfitting rules read: `FittingCurves`.

Example:

>>> from gradscope.evaluations import Evaluations
>>> e = Evaluations()
>>> e.add(8, 1, {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7})
>>> e.add(12, 1, {"loss": 0.4}, epoch_end=False)  # within an epoch, no validation: not a point of the curves
>>> curves = FittingCurves.of(e)
>>> len(curves), curves.val_accuracy.tolist()
(1, [0.7])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradscope.evaluations import Evaluations


@dataclass(frozen=True)
class FittingCurves:
    """The epoch-end rows of an evaluation record that have a validation loss, one array per metric."""

    epochs: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray

    @classmethod
    def of(cls, record: Evaluations) -> FittingCurves:
        """The curves of ``record`` (empty without a validation evaluation).

        Args:
            record: a history's ``evaluations``.
        """
        ends = record.end_rows
        columns = [np.asarray(record.epochs, np.int64)[ends]]
        columns += [record.series(m)[ends] for m in ("loss", "accuracy", "val_loss", "val_accuracy")]
        keep = np.isfinite(columns[3])
        return cls(*(c[keep] for c in columns))

    def __len__(self) -> int:
        return len(self.epochs)
