"""Renderers of the training and validation record (`gradscope.evaluations.Evaluations`).

`generalisation_table` sets runs side by side (training and validation
accuracy, their gap, the best epoch); `curves_figure` draws each run's
training and validation curves in one figure. They read records only: no
model, no TensorFlow.

Example:

>>> from rich.console import Console
>>> from gradscope.evaluations import Evaluations
>>> e = Evaluations()
>>> e.add(8, 1, {"loss": 0.5, "accuracy": 0.80, "val_loss": 0.40, "val_accuracy": 0.78})
>>> e.add(16, 2, {"loss": 0.2, "accuracy": 0.97, "val_loss": 0.45, "val_accuracy": 0.80})
>>> Console(width=100, color_system=None).print(generalisation_table({"none": e}))
┏━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ run     ┃ train acc ┃ validation acc ┃ gap (train - val, pts) ┃ best epoch (lowest val loss) ┃
┡━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ none    │     97.0% │          80.0% │                   17.0 │                       1 of 2 │
└─────────┴───────────┴────────────────┴────────────────────────┴──────────────────────────────┘
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from gradscope.evaluations import Evaluations


def _percent(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "-"


def _points(x: float) -> str:
    return f"{100 * x:.1f}" if math.isfinite(x) else "-"


def _best(record: Evaluations) -> str:
    best = record.best_epoch()
    epochs = max(record.epochs) if len(record) else 0
    return "-" if best is None else f"{best} of {epochs}"


def generalisation_table(records: Mapping[str, Evaluations]) -> Table:
    """One row per run: training and validation accuracy at the last epoch, their gap and the best epoch.

    Args:
        records: ``{label: evaluations}``.
    """
    table = Table(title=None)
    table.add_column("run", min_width=7)
    for column in ("train acc", "validation acc", "gap (train - val, pts)", "best epoch (lowest val loss)"):
        table.add_column(column, justify="right")
    for label, record in records.items():
        final = record.final()
        table.add_row(label, _percent(final["accuracy"]), _percent(final["val_accuracy"]),
                      _points(final["accuracy_gap"]), _best(record))
    return table


def generalisation_line(record: Evaluations) -> str | None:
    """One sentence on the last epoch: accuracies, gap and best epoch; None without a validation evaluation.

    Example:

    >>> e = Evaluations()
    >>> e.add(8, 1, {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.85})
    >>> generalisation_line(e)
    'training accuracy 90.0%, validation 85.0% (gap 5.0 points); lowest validation loss at epoch 1 of 1'
    """
    final = record.final()
    if not math.isfinite(final["val_accuracy"]):
        return None
    return (f"training accuracy {_percent(final['accuracy'])}, validation {_percent(final['val_accuracy'])} "
            f"(gap {_points(final['accuracy_gap'])} points); lowest validation loss at epoch {_best(record)}")


def print_generalisation(record: Evaluations, console: Console) -> None:
    """Prints `generalisation_line`, when there is one."""
    line = generalisation_line(record)
    if line:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def print_ensemble(member_accuracy: Sequence[float], record: Evaluations, console: Console) -> None:
    """Each member's validation accuracy, then the ensemble's (its averaged prediction).

    Example:

    >>> e = Evaluations()
    >>> e.add(8, 1, {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.88})
    >>> print_ensemble([0.85, 0.86], e, Console(width=120, color_system=None))
    validation accuracy: member 1 85.0%, member 2 86.0%; ensemble (averaged prediction) 88.0%
    training accuracy 90.0%, validation 88.0% (gap 2.0 points); lowest validation loss at epoch 1 of 1
    """
    members = ", ".join(f"member {k} {_percent(a)}" for k, a in enumerate(member_accuracy, 1))
    ensemble = _percent(record.final()["val_accuracy"])
    console.print(f"validation accuracy: {members}; ensemble (averaged prediction) {ensemble}",
                  highlight=False, markup=False, soft_wrap=True)
    print_generalisation(record, console)


def curves_figure(records: Mapping[str, Evaluations]) -> Any:
    """A Figure of loss and accuracy over the epochs: each run's training curve solid, its validation curve dashed.

    Args:
        records: ``{label: evaluations}``, one colour each.

    Example:

    >>> e = Evaluations()
    >>> for epoch, (acc, val) in enumerate([(0.8, 0.78), (0.97, 0.80)], 1):
    ...     e.add(8 * epoch, epoch, {"loss": 1 - acc, "accuracy": acc, "val_loss": 1 - val, "val_accuracy": val})
    >>> loss_ax, acc_ax = curves_figure({"none": e}).axes
    >>> [line.get_label() for line in acc_ax.lines]
    ['none: training', 'none: validation']
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(ncols=2)
    colors = matplotlib.colormaps["tab10"]
    for k, (label, record) in enumerate(records.items()):
        epochs = np.asarray(record.epochs)[record.end_rows]
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, record.series(metric, epochs_only=True), color=colors(k % 10), label=f"{label}: training")
            ax.plot(epochs, record.series(f"val_{metric}", epochs_only=True), color=colors(k % 10), linestyle="--",
                    label=f"{label}: validation")
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: training (solid) and validation (dashed)")
        ax.grid(True, alpha=0.3)
        if records:
            ax.legend(fontsize="small")
    return fig


def plot_curves(records: Mapping[str, Evaluations], path: str | os.PathLike) -> Path:
    """Saves `curves_figure` as a PNG at ``path`` (making its folder); returns the path.

    Args:
        records: ``{label: evaluations}``.
        path: where to write the PNG.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(records)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.clear()
    return path
