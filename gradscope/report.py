"""A run folder, written and shown again: the one place that combines the
record, the diagnosis and the renderers. No TensorFlow is imported here, so
``gradscope report RUN_DIR`` works on a saved run anywhere.

Run folder layout (see the README):

    run.json        layers, variables, layer facts, config (JSON)
    history.npz     steps, per-layer series, scalars, variable series (numpy)
    summary.json    the diagnosis: per-layer verdicts, findings, sentences
    plots/*.png     gradient norms over steps, depth profile, histograms

Example:

>>> import io, tempfile
>>> import numpy as np
>>> from rich.console import Console
>>> history = GradientHistory(["dense", "dense_1"])
>>> history.append(range(3), {"grad_norm": np.ones((3, 2))})
>>> with tempfile.TemporaryDirectory() as folder:
...     diagnosis = show_run(save_run(history, folder), console=Console(file=io.StringIO()))
>>> diagnosis.measure
'grad_norm'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gradscope.diagnosis import Diagnosis, diagnose
from gradscope.history import GradientHistory, load_run


def save_run(history: GradientHistory, folder: str | os.PathLike, plots: bool = True) -> Path:
    """Saves history, diagnosis and plots into ``folder``; returns the folder.

    Args:
        history: the record.
        folder: the run folder (made if missing).
        plots: draw the PNG plots into ``folder/plots/`` too.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 2))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     sorted(p.name for p in save_run(h, folder).iterdir())
    ['history.npz', 'plots', 'run.json', 'summary.json']
    """
    diagnosis = diagnose(history)
    folder = history.save(folder, summary=diagnosis.to_dict())
    if plots:
        from gradscope.render.plots import save_run_plots

        save_run_plots(history, folder)
    return folder


def show_run(folder: str | os.PathLike, console: Any = None, plots: bool = True) -> Diagnosis:
    """Loads a run folder, prints its summary table and verdict,
    and (re)draws its plots; returns the diagnosis.

    Args:
        folder: a run folder written by `save_run`.
        console: where to print (default: `gradscope.render.terminal.default_console`).
        plots: redraw the PNG plots.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from rich.console import Console
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 2))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     folder = save_run(h, folder, plots=False)
    ...     diagnosis = show_run(folder, console=Console(width=160, color_system=None), plots=False)
    run ...: 3 recorded steps, 2 layers
    gradscope summary
    ...
    Diagnosis
    ...
    >>> diagnosis.healthy
    True
    """
    from gradscope.render.terminal import default_console, print_summary

    history = load_run(folder)
    console = console or default_console()
    diagnosis = diagnose(history)
    console.print(f"run {folder}: {len(history)} recorded steps, {len(history.layers)} layers", highlight=False)
    print_summary(history, diagnosis, console=console)
    if plots:
        from gradscope.render.plots import save_run_plots

        paths = save_run_plots(history, folder)
        console.print("plots: " + ", ".join(str(p) for p in paths), highlight=False, soft_wrap=True)
    return diagnosis
