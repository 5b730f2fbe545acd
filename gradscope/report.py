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

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gradscope.diagnosis import Diagnosis, diagnose
from gradscope.history import PLOTS_DIR, GradientHistory, RunFolderError, load_overview, load_run, same_folder
from gradscope.reproduction import Reproduction, load_reproduction, save_reproduction
from gradscope.run_folder import SaveError, describe_os_error, rescue_history, write_run_folder

#: The sub-folder of a reproduction folder that holds its recorded runs.
RUNS_DIR = "runs"


def save_run(
    history: GradientHistory,
    folder: str | os.PathLike,
    plots: bool = True,
    overwrite: bool = False,
    rescue: bool = True,
) -> Path:
    """Saves history, diagnosis and plots as the run folder ``folder``, all or nothing; returns the folder.

    The folder is built beside ``folder`` and renamed into place
    (`gradscope.run_folder.write_run_folder`): a reader sees the old run or
    the new one, and a failed save leaves an old run there untouched. A
    missing or empty ``folder`` is written; one holding anything is replaced
    only with ``overwrite``, and then nothing of the old one stays (no stale
    plots). When saving fails, the record is kept instead in a new folder in
    the system's temporary folder (`gradscope.run_folder.rescue_history`)
    and the error says where.

    Args:
        history: the record.
        folder: the run folder.
        plots: draw the PNG plots into ``folder/plots/`` too.
        overwrite: replace ``folder`` when it is not empty (an earlier run).
        rescue: on failure, keep the record in ``<tmp>/gradscope-rescued-XXXX``.

    Raises:
        SaveError: the run folder could not be written, for any reason
            (``str(error)`` is one line: what failed, where, and where the
            record was kept: ``error.rescued``, None if that failed too).
            KeyboardInterrupt and other BaseExceptions propagate as they are,
            after the clean-up.
        ValueError: the history is empty (nothing to diagnose or keep).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 2))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     sorted(p.name for p in save_run(h, folder).iterdir())
    ['history.npz', 'plots', 'run.json', 'summary.json']
    """
    try:
        if history.stream is not None and same_folder(folder, history.stream.folder):
            # Streamed there already: finished in place, the chunks stay.
            write_run(history, folder, plots=plots)
            return Path(folder)
        return write_run_folder(folder, lambda tmp: write_run(history, tmp, plots=plots), overwrite=overwrite)
    except Exception as exc:
        if not len(history) and not isinstance(exc, SaveError):
            raise  # nothing recorded (diagnose says so): nothing to keep
        # A finished run must survive whatever went wrong, a bug in a plot
        # included: every failure is a SaveError, after the rescue.
        error = exc if isinstance(exc, SaveError) else SaveError(folder, describe_os_error(exc))
        if rescue and len(history):
            try:
                # A streamed record is in its folder already, chunk by chunk.
                error.rescued = history.stream.folder if history.stream is not None else rescue_history(history)
            except Exception as again:
                error.rescue_failure = describe_os_error(again)
        if error is exc:
            raise
        raise error from exc


def write_run(history: GradientHistory, folder: str | os.PathLike, plots: bool = True) -> None:
    """Writes the record, ``summary.json`` and the plots into ``folder``, in place.

    `save_run` calls it on a fresh folder; call it yourself to fill a folder
    that `gradscope.run_folder.write_run_folder` moves into place, e.g. one
    run of a comparison.

    Args:
        history: the record.
        folder: the folder to write into (made if missing).
        plots: draw the PNG plots into ``folder/plots/`` too.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_run(h, folder, plots=False)
    ...     sorted(p.name for p in Path(folder).iterdir())
    ['history.npz', 'run.json', 'summary.json']
    """
    view = history.overview()  # a long run: down-sampled, read a chunk at a time
    diagnosis = diagnose(view)
    history.save(folder, summary=diagnosis.to_dict())
    if plots:
        from gradscope.render.plots import save_run_plots

        save_run_plots(view, folder)


def show_run(
    folder: str | os.PathLike, console: Any = None, plots: bool = True, tensorboard: str | os.PathLike | None = None
) -> Diagnosis:
    """Loads a run folder, prints its summary table and verdict,
    and (re)draws its plots; returns the diagnosis.

    Args:
        folder: a run folder written by `save_run`.
        console: where to print (default: `gradscope.render.terminal.default_console`).
        plots: redraw the PNG plots.
        tensorboard: also export the record as TensorBoard event files into
            this folder (`export_tensorboard`). Defaults to `None`, no export.

    Raises:
        RunFolderError: the run folder cannot be read, or ``tensorboard`` written.

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
    from gradscope.render.evaluations import print_generalisation
    from gradscope.render.terminal import default_console, print_summary

    history = load_overview(folder)
    console = console or default_console()
    diagnosis = diagnose(history)
    steps = f"{len(history)} recorded steps"
    if history.spread is not None:
        steps = f"{history.spread.rows} recorded steps, down-sampled to {len(history)}"
    console.print(f"run {folder}: {steps}, {len(history.layers)} layers",
                  highlight=False, markup=False, soft_wrap=True)
    print_summary(history, diagnosis, console=console)
    if tensorboard is not None:
        # Every step, even of a run the summary reads down-sampled.
        export_tensorboard(history if history.spread is None else load_run(folder), diagnosis, tensorboard, console)
    print_generalisation(history.evaluations, console)
    if plots:
        try:
            paths = redraw_plots(history, folder)
        except OSError as exc:
            # The summary is shown; a run folder we may not write to (or a
            # full disk) only costs the fresh plots.
            console.print(f"plots not redrawn: {describe_os_error(exc)} ({exc.filename or folder})",
                          highlight=False, markup=False, soft_wrap=True)
        else:
            console.print("plots: " + ", ".join(str(p) for p in paths), highlight=False, markup=False, soft_wrap=True)
    return diagnosis


def export_tensorboard(history: GradientHistory, diagnosis: Diagnosis, logdir: str | os.PathLike,
                       console: Any = None) -> Path:
    """Writes a record as a TensorBoard event file into ``logdir`` and says where; returns the file.

    The file holds what ``GradientMonitor(tensorboard=...)`` writes while
    training (`gradscope.render.tensorboard.export_run`).

    Args:
        history: the record.
        diagnosis: its diagnosis, written as the text summary ``verdict``.
        logdir: the folder to write into (made if missing).
        console: where to say it. Defaults to `None`, nowhere.

    Raises:
        RunFolderError: ``logdir`` cannot be written (one line saying why).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 1))})
    >>> export_tensorboard(h, diagnose(h), tempfile.mkdtemp()).parent.is_dir()
    True
    """
    from gradscope.render.tensorboard import export_run

    try:
        path = export_run(history, diagnosis, logdir)
    except OSError as exc:
        raise RunFolderError(logdir, f"cannot write TensorBoard files ({describe_os_error(exc)})") from None
    if console is not None:
        console.print(f"TensorBoard: {len(history)} steps written to {path}", highlight=False, markup=False,
                      soft_wrap=True)
    return path


def redraw_plots(history: GradientHistory, folder: str | os.PathLike) -> list[Path]:
    """Draws a run's plots again into ``folder/plots/``, each PNG replaced whole; returns their paths.

    The plots are drawn in a temporary folder inside ``folder`` and renamed
    over the old ones, so a failure (a full disk) leaves every old PNG
    readable, never a truncated one.

    Args:
        history: the record.
        folder: the run folder.

    Raises:
        OSError: the plots could not be drawn or moved (old plots stay).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [p.name for p in redraw_plots(h, folder)]
    ['grad_norms.png', 'depth_profile.png']
    """
    from gradscope.render.plots import save_run_plots

    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".plots.tmp-"))
    try:
        drawn = save_run_plots(history, tmp)
        plots = folder / PLOTS_DIR
        plots.mkdir(exist_ok=True)
        paths = []
        for path in drawn:
            os.replace(path, plots / path.name)
            paths.append(plots / path.name)
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_reproduction_folder(record: Reproduction, folder: str | os.PathLike, plots: bool = True,
                             overwrite: bool = False) -> Path:
    """Saves a reproduction as a folder, all or nothing: ``reproduction.json``, ``plots/<figure>.png``, and each
    recorded run as a run folder, ``runs/<name>/``.

    Args:
        record: what ``gradscope reproduce`` measured.
        folder: the folder.
        plots: draw the figures too. Defaults to `True`.
        overwrite: replace ``folder`` when it is not empty. Defaults to `False`.

    Raises:
        SaveError: the folder could not be written (one line saying why).

    Example:

    >>> import tempfile
    >>> from gradscope.reproduction import Claim
    >>> record = Reproduction("demo", "a demo", [Claim("set-up", "x", "1", 1.0, 1.0)])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     sorted(p.name for p in save_reproduction_folder(record, Path(folder) / "r").iterdir())
    ['reproduction.json']
    """
    from gradscope.render.claims import plot_reproduction

    def fill(tmp: Path) -> None:
        for name, history in record.histories.items():
            write_run(history, tmp / RUNS_DIR / name, plots=False)  # `gradscope report` draws them when asked
        save_reproduction(dataclasses.replace(record, runs=list(record.histories)), tmp)
        if plots:
            plot_reproduction(record, tmp / PLOTS_DIR)

    return write_run_folder(folder, fill, overwrite=overwrite)


def show_reproduction(folder: str | os.PathLike, console: Any = None, plots: bool = True) -> Reproduction:
    """`gradscope report` for a folder ``gradscope reproduce`` wrote: the same table, the figures redrawn.

    Args:
        folder: the folder.
        console: where to print (default: `gradscope.render.terminal.default_console`).
        plots: redraw the figures into ``folder/plots/``. Defaults to `True`.

    Raises:
        RunFolderError: the folder holds no readable reproduction.

    Example:

    >>> import tempfile
    >>> from rich.console import Console
    >>> from gradscope.reproduction import Claim
    >>> record = Reproduction("demo", "a demo", [Claim("set-up", "x", "1", 1.0, 1.0)])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = save_reproduction_folder(record, Path(folder) / "r", plots=False)
    ...     _ = show_reproduction(Path(folder) / "r", Console(width=100, color_system=None), plots=False)
    reproduction ...
                                   demo: a demo (1 of 1 claims agree)
    ...
    """
    from gradscope.render.claims import plot_reproduction, print_reproduction
    from gradscope.render.terminal import default_console

    record = load_reproduction(folder)
    console = console or default_console()
    console.print(f"reproduction {folder}", highlight=False, markup=False, soft_wrap=True)
    print_reproduction(record, console)
    if plots:
        try:
            paths = plot_reproduction(record, Path(folder) / PLOTS_DIR)
        except OSError as exc:
            console.print(f"plots not redrawn: {describe_os_error(exc)} ({exc.filename or folder})",
                          highlight=False, markup=False, soft_wrap=True)
        else:
            console.print("plots: " + ", ".join(str(p) for p in paths), highlight=False, markup=False, soft_wrap=True)
    print_recorded_runs(record, folder, console)
    return record


def print_recorded_runs(record: Reproduction, folder: str | os.PathLike, console: Any) -> None:
    """Says where a reproduction's recorded runs are, and how to see one, in one line.

    Args:
        record: the reproduction.
        folder: its folder.
        console: where to print.
    """
    from gradscope.experiments import shell_command

    runs = record.runs or list(record.histories)  # saved, or just measured
    if runs:
        example = Path(folder) / RUNS_DIR / runs[-1]
        console.print(f"{len(runs)} recorded runs in {Path(folder) / RUNS_DIR}: {', '.join(runs)} "
                      f"(each one's table and verdict: {shell_command('gradscope', 'report', example)})",
                      highlight=False, markup=False,
                      soft_wrap=True)
