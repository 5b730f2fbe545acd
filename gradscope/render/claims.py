"""A reproduction's table and figures, drawn from its record only (no TensorFlow).

`reproduction_table` sets each claim's theory beside its measurement, with a
mark where they agree within the stated tolerance; `reproduction_figure`
draws one figure's profiles with the theory's line on the same axes.

Example:

>>> import io
>>> from gradscope.reproduction import Claim, Reproduction
>>> record = Reproduction("demo", "a demo", [Claim("5 layers", "factor", "sqrt(1/3)", 0.577, 0.575)])
>>> console = Console(width=120, color_system=None, record=True, file=io.StringIO())
>>> console.print(reproduction_table(record))
>>> "demo: a demo (1 of 1 claims agree)" in console.export_text(clear=False)
True
>>> [line.split("│")[4:6] for line in console.export_text().splitlines() if "5 layers" in line]
[[' 0.575          ', ' ✓ 0.35% off    ']]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradscope.reproduction import Figure, Reproduction

#: The height at which a measured 0 is drawn on a log axis (it has no place there), as a share of the lowest value.
_ZERO_FLOOR = 0.1


def reproduction_table(record: Reproduction) -> Table:
    """One row per claim: set-up, quantity, theory with its formula, measured, and the agreement mark.

    Args:
        record: the reproduction.
    """
    table = Table(title=f"{record.name}: {record.title} ({record.agreed} of {len(record.claims)} claims agree)",
                  show_lines=True, expand=True)
    table.add_column("set-up", ratio=3)
    table.add_column("quantity", ratio=3)
    table.add_column("theory (formula)", ratio=4)
    table.add_column("measured", ratio=2)
    table.add_column("agree", ratio=2)
    for claim in record.claims:
        mark = "✓" if claim.agrees else "✗"
        # Text, not markup: formulas hold brackets, E[f'(s)^2], that rich would read as style tags.
        cells = [claim.setup, claim.quantity, f"{claim.shown_theory()} ({claim.formula})", claim.shown_measured(),
                 f"{mark} {claim.deviation_text} ({claim.tolerance_text})"]
        table.add_row(*(Text(cell) for cell in cells))
    return table


def print_reproduction(record: Reproduction, console: Console) -> None:
    """Prints the table, the set-up's facts and the run's settings.

    Args:
        record: the reproduction.
        console: where to print.
    """
    console.print(reproduction_table(record))
    for note in record.notes:
        console.print(f"  {note}", highlight=False, markup=False)
    config = record.config
    if config:
        size = "--full" if config.get("full") else "defaults"
        console.print(f"  {size}, seed {config.get('seed')}; took {config.get('wall_seconds')} s "
                      f"({config.get('cpu_seconds')} s of CPU)", highlight=False, markup=False)


def reproduction_figure(spec: Figure) -> Any:
    """A matplotlib Figure of one figure's series: measured as markers on a solid line, the theory dashed.

    Args:
        spec: the figure's record.

    Example:

    >>> from gradscope.reproduction import Series
    >>> fig = reproduction_figure(Figure("f", "t", "layer", "factor", [Series("a", [1, 2], [0.3, 1.0], [1 / 3, 1])]))
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['a, measured', 'a, theory']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(10, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = np.array([v for s in spec.series for v in [*s.measured, *(s.theory or [])]], dtype=np.float64)
    positive = values[np.isfinite(values) & (values > 0)]
    floor = float(positive.min()) * _ZERO_FLOOR if spec.log_y and len(positive) else 0.0
    colours = [f"C{k}" for k in range(len(spec.series))]
    for series, colour in zip(spec.series, colours, strict=True):
        measured = np.asarray(series.measured, dtype=np.float64)
        if spec.log_y:
            measured = np.where(measured > 0, measured, floor)  # a measured 0 sits on the bottom edge
        marker = "o" if len(series.x) <= 60 else None  # a line over the steps needs none
        ax.plot(series.x, measured, marker=marker, markersize=3.5, color=colour, label=f"{series.label}, measured")
        if series.theory is not None:
            line = np.asarray(series.theory, dtype=np.float64)
            if spec.log_y:
                line = np.where(line > 0, line, floor)
            ax.plot(series.x, line, linestyle="--", color=colour, alpha=0.8, label=f"{series.label}, theory")
    if spec.log_y:
        ax.set_yscale("log")
    if spec.xlabel.startswith("hidden layer"):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(spec.title, fontsize=10)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a line
    return fig


def plot_reproduction(record: Reproduction, folder: str | os.PathLike) -> list[Path]:
    """Draws every figure of a reproduction as ``folder/<name>.png``; returns the paths.

    Args:
        record: the reproduction.
        folder: the folder for the PNGs (made if missing).
    """
    from gradscope.render.plots import save_figure

    paths = []
    for spec in record.figures:
        fig = reproduction_figure(spec)
        paths.append(save_figure(fig, Path(folder) / f"{spec.name}.png"))
        fig.clear()
    return paths
