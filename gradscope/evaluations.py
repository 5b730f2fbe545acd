"""Loss and accuracy on the training and the validation data, at moments of training: `Evaluations`.

A plain record (numpy only, no TensorFlow), kept on a `GradientHistory` as
``history.evaluations`` and saved in the run folder as ``evaluations.json``.
Each row is one evaluation: the end of an epoch, or, on long epochs, every
``evaluate_every`` steps within one (`GradientMonitor(evaluate_every=...)`).

* ``train_loss``, ``train_accuracy``: as the training logs give them, the
  mean over the epoch's batches so far, with dropout and augmentation on.
* ``val_loss``, ``val_accuracy``: on the validation data (``fit``'s
  ``val_*`` logs, or `gradscope.train`'s evaluation); NaN where none was made.
* the gap, a series of its own: `loss_gap` (validation loss minus training
  loss) and `accuracy_gap` (training accuracy minus validation accuracy).

Example:

>>> e = Evaluations()
>>> e.add(step=10, epoch=1, logs={"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7})
>>> e.add(step=20, epoch=2, logs={"loss": 0.3, "accuracy": 0.9, "val_loss": 0.7, "val_accuracy": 0.72})
>>> e.loss_gap.round(3).tolist(), e.accuracy_gap.round(3).tolist()
([0.1, 0.4], [0.1, 0.18])
>>> e.best_epoch()
1
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

EVALUATIONS_FILE = "evaluations.json"
EVALUATIONS_FORMAT = "gradscope-evaluations"

#: The numbers of one evaluation, as Keras names them in its logs.
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class Evaluations:
    """Training and validation loss and accuracy, one row per evaluation."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.epoch_end: list[bool] = []
        self.values: dict[str, list[float]] = {m: [] for m in METRICS}

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Evaluations(rows={len(self)}, epochs={sum(self.epoch_end)})"

    def add(self, step: int, epoch: int, logs: Mapping[str, Any], epoch_end: bool = True) -> None:
        """Adds one evaluation from a Keras logs dict; missing or non-numeric metrics are NaN.

        Args:
            step: the number of training steps done.
            epoch: the epoch, counted from 1.
            logs: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (others are ignored).
            epoch_end: the row ends an epoch (else it was made within one).
        """
        self.steps.append(int(step))
        self.epochs.append(int(epoch))
        self.epoch_end.append(bool(epoch_end))
        for metric in METRICS:
            self.values[metric].append(_number(logs.get(metric)))

    # -- reading ---------------------------------------------------------------------
    def series(self, metric: str, epochs_only: bool = False) -> np.ndarray:
        """One metric (``"loss"``, ``"val_accuracy"``, ...) as a float64 array.

        Args:
            metric: one of `METRICS`.
            epochs_only: only the rows that end an epoch.
        """
        values = np.asarray(self.values[metric], np.float64)
        return values[self.end_rows] if epochs_only else values

    @property
    def end_rows(self) -> np.ndarray:
        """A boolean mask of the rows that end an epoch."""
        return np.asarray(self.epoch_end, bool)

    @property
    def loss_gap(self) -> np.ndarray:
        """Validation loss minus training loss, per row."""
        return self.series("val_loss") - self.series("loss")

    @property
    def accuracy_gap(self) -> np.ndarray:
        """Training accuracy minus validation accuracy, per row."""
        return self.series("accuracy") - self.series("val_accuracy")

    def best_epoch(self) -> int | None:
        """The epoch whose end had the lowest validation loss (where early stopping would stop); None without one."""
        val = self.series("val_loss", epochs_only=True)
        if not np.isfinite(val).any():
            return None
        epochs = np.asarray(self.epochs)[self.end_rows]
        return int(epochs[int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))])

    def final(self) -> dict[str, float]:
        """The last epoch end's numbers, with the gaps: ``{"loss": ..., "accuracy_gap": ...}``; NaN where absent."""
        rows = np.flatnonzero(self.end_rows)
        out = {m: float("nan") for m in (*METRICS, "loss_gap", "accuracy_gap")}
        if len(rows):
            last = rows[-1]
            out.update({m: self.values[m][last] for m in METRICS})
            out["loss_gap"] = float(self.loss_gap[last])
            out["accuracy_gap"] = float(self.accuracy_gap[last])
        return out

    # -- the run folder ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": EVALUATIONS_FORMAT, "steps": self.steps, "epochs": self.epochs,
                "epoch_end": self.epoch_end, **{m: _json_floats(v) for m, v in self.values.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike = EVALUATIONS_FILE) -> Evaluations:
        """The record from `to_json`'s dict; `ValueError` naming ``where`` when it is malformed."""
        if not isinstance(data, dict) or data.get("format", EVALUATIONS_FORMAT) != EVALUATIONS_FORMAT:
            raise ValueError(f"{where}: not a {EVALUATIONS_FORMAT} file")
        record = cls()
        n = len(data.get("steps", []) or [])
        for key in ("steps", "epochs", "epoch_end", *METRICS):
            column = data.get(key, [])
            if not isinstance(column, list) or len(column) != n:
                raise ValueError(f"{where}: {key!r} must be a list of {n} values")
        try:
            record.steps = [int(s) for s in data["steps"]] if n else []
            record.epochs = [int(s) for s in data["epochs"]] if n else []
            record.epoch_end = [bool(s) for s in data["epoch_end"]] if n else []
            record.values = {m: [float("nan") if v is None else float(v) for v in data.get(m, [])] for m in METRICS}
        except (TypeError, ValueError):
            raise ValueError(f"{where}: the columns must hold numbers") from None
        return record

    def save(self, folder: str | os.PathLike) -> None:
        """Writes ``evaluations.json`` into ``folder`` (all or nothing); nothing when the record is empty."""
        from gradscope.history import atomic_write  # history imports this module

        if len(self):
            atomic_write(Path(folder) / EVALUATIONS_FILE, lambda f: f.write(json.dumps(self.to_json()) + "\n"))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Evaluations:
        """Reads ``evaluations.json`` from a run folder; an empty record when there is none.

        Raises:
            gradscope.history.RunFolderError: the file is unreadable or malformed.
        """
        from gradscope.history import RunFolderError

        path = Path(folder) / EVALUATIONS_FILE
        if not path.exists():
            return cls()
        try:
            return cls.from_json(json.loads(path.read_bytes()), path)
        except (OSError, ValueError, RecursionError) as exc:
            raise RunFolderError(path, str(exc).removeprefix(f"{path}: ")) from None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _json_floats(values: list[float]) -> list[float | None]:
    # JSON has no NaN: null means "not evaluated".
    return [v if math.isfinite(v) else None for v in values]
