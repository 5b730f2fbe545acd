"""matplotlib plots of a `GradientHistory`: norms over steps, depth profiles, histograms.

They read a record, never a model, and import no TensorFlow. Figures are drawn
on `matplotlib.figure.Figure` with an Agg canvas directly (no pyplot), so the
user's interactive backend and pyplot's figure list are left untouched.

Each plot has a ``*_figure`` function that returns the matplotlib Figure (to
show, restyle or test) and a ``plot_*`` function that saves it as a PNG.

Example:

>>> import tempfile
>>> import numpy as np
>>> from gradscope.history import GradientHistory
>>> h = GradientHistory(["dense", "dense_1"])
>>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1))})
>>> with tempfile.TemporaryDirectory() as folder:
...     [str(p.relative_to(folder)) for p in save_run_plots(h, folder)]
['plots/grad_norms.png', 'plots/depth_profile.png']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradscope.history import PLOTS_DIR, GradientHistory

_SIZE = (8.0, 5.0)
_DPI = 100
_MAX_LEGEND = 24  # beyond this many layers a colour bar replaces the legend


def _mpl() -> tuple[Any, Any, Any]:
    """Figure, FigureCanvasAgg and the colormap registry, imported on first use
    (matplotlib takes a while to import, and a report without plots needs none of it)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg, matplotlib.colormaps


def _new_figure(size: tuple[float, float] = _SIZE, **kwargs: Any) -> tuple[Any, Any]:
    Figure, FigureCanvasAgg, _ = _mpl()
    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)  # attaches itself to fig; savefig then renders with Agg
    return fig, fig.subplots(**kwargs)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    fig.clear()  # no pyplot holds a reference, so this frees the artists now
    return path


def _positive(a: np.ndarray) -> np.ndarray:
    """NaN where a log axis cannot show the value (NaN, inf, zero, negative)."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def _log_or_empty(ax: Any, has_data: bool, what: str) -> None:
    # A log axis without one positive value warns and picks odd limits;
    # say plainly that there is nothing to show instead.
    if has_data:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, f"no finite positive {what}", ha="center", va="center", transform=ax.transAxes)


def _title(history: GradientHistory, text: str) -> str:
    name = history.config.get("name")
    return f"{text} \u2014 {name}" if name else text


def pick_series(history: GradientHistory, series: str) -> str:
    """``series`` if the run recorded it with any value, else ``"grad_norm"``.

    Args:
        history: the record.
        series: the per-layer series wanted, e.g. ``"backprop"``.

    Example: a model whose layers expose no output gradient has no ``backprop``:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"])
    >>> h.append([0], {"grad_norm": np.ones((1, 1))})
    >>> pick_series(h, "backprop")
    'grad_norm'
    """
    values = history.get(series)
    if values is not None and values.size and not np.isnan(values).all():
        return series
    return "grad_norm" if "grad_norm" in history else series


def default_moments(steps: Sequence[int] | np.ndarray) -> list[int]:
    """Recorded steps nearest the first step, 10 %, 50 % and the last step, deduplicated.

    Percentages are of the step range, not of the row count, so a run
    recorded every N steps still gets the same moments.

    Args:
        steps: the recorded steps, ascending.

    Example:

    >>> default_moments(range(101))
    [0, 10, 50, 100]
    """
    steps = np.asarray(steps, np.int64)
    if not steps.size:
        return []
    first, last = float(steps[0]), float(steps[-1])
    out: list[int] = []
    for share in (0.0, 0.1, 0.5, 1.0):
        step = int(steps[np.argmin(np.abs(steps - (first + share * (last - first))))])
        if step not in out:
            out.append(step)
    return out


def grad_norms_figure(history: GradientHistory, series: str = "grad_norm") -> Any:
    """A Figure of every layer's ``series`` over the steps, log scale, input layer dark to output light.

    One line per layer, in ``history.layers`` order, so ``fig.axes[0].lines[i]``
    is layer ``i``. `plot_grad_norms` saves it.

    Args:
        history: the record.
        series: the per-layer series to draw.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> ax = grad_norms_figure(h).axes[0]
    >>> ax.get_yscale(), [line.get_label() for line in ax.lines]
    ('log', ['dense', 'dense_1'])
    """
    _, _, colormaps = _mpl()
    fig, ax = _new_figure()
    values = history.get(series)
    n_layers = len(history.layers)
    cmap = colormaps["viridis"]
    colors = [cmap(i / max(n_layers - 1, 1)) for i in range(n_layers)]
    has_data = False
    if values is not None and len(history):
        y = _positive(values)
        has_data = bool(np.isfinite(y).any())
        marker = "." if len(history) < 30 else None  # a lone step would be invisible as a line
        for li, name in enumerate(history.layers):
            ax.plot(history.steps, y[:, li], color=colors[li], label=name, marker=marker, linewidth=1.2)
    _log_or_empty(ax, has_data, series)
    ax.set_xlabel("step")
    ax.set_ylabel(series)
    ax.set_title(_title(history, f"{series} per layer"))
    ax.grid(True, which="major", alpha=0.3)
    if has_data and n_layers <= _MAX_LEGEND:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), title="layer (input first)")
    elif has_data:
        # Dozens of legend entries would hide the plot; the colour order says enough.
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(1, n_layers), cmap), ax=ax)
        bar.set_label(f"layer: 1 = {history.layers[0]} ... {n_layers} = {history.layers[-1]}")
    return fig


def plot_grad_norms(history: GradientHistory, path: str | os.PathLike, series: str = "grad_norm") -> Path:
    """Saves `grad_norms_figure` as a PNG at ``path`` (making its folder); returns the path.

    Args:
        history: the record.
        path: where to write the PNG.
        series: the per-layer series to draw.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     plot_grad_norms(h, f"{folder}/backprop.png", series="backprop").stat().st_size > 0
    True
    """
    return _save(grad_norms_figure(history, series), path)


def _row_of(steps: np.ndarray, step: int) -> int:
    return int(np.argmin(np.abs(steps - step)))


def _depth_axis(ax: Any, names: Sequence[str]) -> None:
    ax.set_xticks(range(1, len(names) + 1))
    # Long names collide when there are many layers: rotate, and thin them out.
    every = max(1, len(names) // 20)
    labels = [n if i % every == 0 else "" for i, n in enumerate(names)]
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize="small")
    ax.set_xlabel("layer (input \u2192 output)")


def _depth_series(history: GradientHistory, series: str | Sequence[str]) -> list[str]:
    """The series to draw against depth, each once, falling back to grad_norm."""
    out: list[str] = []
    for name in [series] if isinstance(series, str) else series:
        name = pick_series(history, name)
        if name not in out:
            out.append(name)
    return out


def _draw_depth(ax: Any, history: GradientHistory, series: str, rows: list[int]) -> None:
    _, _, colormaps = _mpl()
    values = history.get(series)
    steps = history.steps
    has_data = False
    if values is not None and len(history):
        cmap = colormaps["plasma"]
        x = np.arange(1, len(history.layers) + 1)
        for k, row in enumerate(rows):
            y = _positive(values[row])
            ok = np.isfinite(y)  # join the finite points so a weightless layer leaves no gap
            has_data |= bool(ok.any())
            # Say so when a moment has nothing to draw (e.g. the run blew up to inf/NaN).
            label = f"step {int(steps[row])}" + ("" if ok.any() else " (no finite value)")
            ax.plot(x[ok], y[ok], marker="o", color=cmap(0.85 * k / max(len(rows) - 1, 1)), label=label)
    _log_or_empty(ax, has_data, series)
    _depth_axis(ax, history.layers)
    ax.set_xlim(0.5, len(history.layers) + 0.5)
    ax.set_ylabel(series)
    ax.set_title(f"{series} against depth")
    ax.grid(True, which="major", alpha=0.3)
    if has_data:
        ax.legend(fontsize="small")


def depth_profile_figure(
    history: GradientHistory,
    series: str | Sequence[str] = ("grad_norm", "backprop"),
    moments: Sequence[int] | None = None,
) -> Any:
    """A Figure of each of ``series`` against depth at a few steps, log scale, one panel per series.

    The default draws the kernel-gradient norm (``grad_norm``) and the
    back-propagated gradient (``backprop``) side by side: the second can shrink
    towards the input while the first stays flat (Glorot & Bengio, 2010), so
    both are shown. A series the run did not record falls back to grad_norm,
    drawn once. A vanishing gradient is a line falling towards the input
    (left); an exploding one rises. ``moments`` are steps (default
    `default_moments`); the nearest recorded row is used, so panel ``p``'s
    ``lines[k]`` is the history's row nearest ``moments[k]``.

    Args:
        history: the record.
        series: the per-layer series to draw, one panel each.
        moments: the steps to draw (default: `default_moments`).

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> fig = depth_profile_figure(h, moments=[0, 500])
    >>> [ax.get_ylabel() for ax in fig.axes], [line.get_label() for line in fig.axes[0].lines]
    (['grad_norm', 'backprop'], ['step 0', 'step 4'])
    """
    names = _depth_series(history, series) or ["grad_norm"]
    rows: list[int] = []  # the nearest recorded row of each moment, each once
    if len(history):
        for step in default_moments(history.steps) if moments is None else moments:
            row = _row_of(history.steps, step)
            if row not in rows:
                rows.append(row)
    width = _SIZE[0] if len(names) == 1 else 6.5 * len(names)
    fig, axes = _new_figure((width, _SIZE[1]), ncols=len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        _draw_depth(ax, history, name, rows)
    fig.suptitle(_title(history, "gradient against depth"))
    return fig


def plot_depth_profile(
    history: GradientHistory,
    path: str | os.PathLike,
    series: str | Sequence[str] = ("grad_norm", "backprop"),
    moments: Sequence[int] | None = None,
) -> Path:
    """Saves `depth_profile_figure` as a PNG at ``path`` (making its folder); returns the path.

    Args:
        history: the record.
        path: where to write the PNG.
        series: the per-layer series to draw, one panel each.
        moments: the steps to draw (default: `default_moments`).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     plot_depth_profile(h, f"{folder}/depth.png", moments=[0, 4]).name
    'depth.png'
    """
    return _save(depth_profile_figure(history, series, moments), path)


def activation_histograms_figure(history: GradientHistory) -> Any | None:
    """A Figure of activation histograms at the start and end of training, one row per layer.

    Weights too small pile tanh activations at 0; too large pile them at +/-1.
    Returns None when the run recorded no histograms.

    Args:
        history: the record; its ``histograms["start"]`` and ``["end"]`` are drawn.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"])
    >>> h.histograms["start"] = {"step": 0, "ranges": np.array([[-1.0, 1.0]]), "counts": np.array([[1.0, 3.0]])}
    >>> fig = activation_histograms_figure(h)
    >>> [float(p.get_height()) for p in fig.axes[0].patches], fig.axes[1].get_title()
    ([0.25, 0.75], 'end: not recorded')
    """
    moments = [m for m in ("start", "end") if m in history.histograms]
    if not moments:
        return None
    n_rows = max(len(np.asarray(history.histograms[m]["counts"])) for m in moments)
    fig, axes = _new_figure((_SIZE[0], max(_SIZE[1], 1.1 * n_rows + 1.0)), nrows=max(n_rows, 1), ncols=2, squeeze=False)
    from matplotlib.ticker import MaxNLocator

    activations = history.info("activation")
    for col, moment in enumerate(("start", "end")):
        h = history.histograms.get(moment)
        axes[0, col].set_title(f"{moment} (step {h['step']})" if h else f"{moment}: not recorded")
        for li in range(n_rows):
            ax = axes[li, col]
            if col == 0:
                name = history.layers[li] if li < len(history.layers) else f"layer {li + 1}"
                act = activations[li] if li < len(activations) else None
                ax.set_ylabel(f"{name}\n{act}" if act else name, fontsize="small", rotation=0, ha="right", va="center")
            ax.tick_params(labelsize="x-small")
            ax.xaxis.set_major_locator(MaxNLocator(5))  # small panels: few ticks, no collisions
            counts = np.asarray(h["counts"], np.float64)[li] if h and li < len(h["counts"]) else None
            lo, hi = np.asarray(h["ranges"], np.float64)[li] if counts is not None else (np.nan, np.nan)
            total = np.nansum(counts[np.isfinite(counts)]) if counts is not None else 0.0
            if counts is None or not (np.isfinite(lo) and np.isfinite(hi) and hi > lo and total > 0):
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize="small")
                continue
            width = (hi - lo) / len(counts)
            # Shares, not counts, so layers of different widths compare directly.
            share = np.nan_to_num(counts, nan=0.0, posinf=0.0) / total
            ax.bar(lo + width * (np.arange(len(counts)) + 0.5), share, width=width, color="tab:blue")
            ax.set_xlim(lo, hi)
    fig.suptitle(_title(history, "activation histograms: share of outputs per bin"))
    return fig


def plot_activation_histograms(history: GradientHistory, path: str | os.PathLike) -> Path | None:
    """Saves `activation_histograms_figure` as a PNG at ``path``; None (and no file) without histograms.

    Args:
        history: the record.
        path: where to write the PNG.

    Example:

    >>> from gradscope.history import GradientHistory
    >>> print(plot_activation_histograms(GradientHistory(["dense"]), "never_written.png"))
    None
    """
    fig = activation_histograms_figure(history)
    return None if fig is None else _save(fig, path)


def comparison_figure(histories: dict[str, GradientHistory], series: str = "backprop") -> Any:
    """A Figure of several runs side by side: ``series`` against depth at the last
    step, and the first layer's ``series`` over steps. Falls back to grad_norm per run.

    Args:
        histories: ``{label: history}``, one line each.
        series: the per-layer series to compare.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> flat = GradientHistory(["dense", "dense_1"])
    >>> flat.append(range(5), {"grad_norm": np.ones((5, 2))})
    >>> depth_ax, step_ax = comparison_figure({"tanh": h, "relu+he": flat}).axes
    >>> [line.get_label() for line in depth_ax.lines]
    ['tanh', 'relu+he (grad_norm)']
    """
    _, _, colormaps = _mpl()
    fig, (depth_ax, step_ax) = _new_figure((12.0, 5.0), ncols=2)
    colors = colormaps["tab10"]
    used: set[str] = set()
    has_data = False
    for k, (label, history) in enumerate(histories.items()):
        name = pick_series(history, series)
        values = history.get(name)
        if values is None or not len(history):
            continue
        used.add(name)
        y = _positive(values)
        tag = label if name == series else f"{label} ({name})"
        # The last row with anything to show: a run that blew up ends in NaN rows.
        rows = np.flatnonzero(np.isfinite(y).any(axis=1))
        cols = np.flatnonzero(np.isfinite(y).any(axis=0))
        if not rows.size:
            continue
        has_data = True
        last, first_layer = y[rows[-1]], cols[0]
        ok = np.isfinite(last)
        depth_ax.plot(np.arange(1, y.shape[1] + 1)[ok], last[ok], marker="o", color=colors(k % 10), label=tag)
        step_ax.plot(history.steps, y[:, first_layer], color=colors(k % 10),
                     label=f"{tag}: {history.layers[first_layer]}")
    ylabel = " / ".join(sorted(used)) or series
    for ax in (depth_ax, step_ax):
        _log_or_empty(ax, has_data, ylabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if has_data:
            ax.legend(fontsize="small")
    depth_ax.set_xlabel("layer index (input \u2192 output)")
    depth_ax.set_title("against depth, last step")
    step_ax.set_xlabel("step")
    step_ax.set_title("first layer over steps")
    return fig


def plot_comparison(histories: dict[str, GradientHistory], path: str | os.PathLike, series: str = "backprop") -> Path:
    """Saves `comparison_figure` as a PNG at ``path`` (making its folder); returns the path.

    Args:
        histories: ``{label: history}``, one line each.
        path: where to write the PNG.
        series: the per-layer series to compare.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     plot_comparison({"tanh": h}, f"{folder}/comparison.png").name
    'comparison.png'
    """
    return _save(comparison_figure(histories, series), path)


def save_run_plots(history: GradientHistory, folder: str | os.PathLike) -> list[Path]:
    """Writes the standard plots of a run into ``folder/plots/``; returns their paths.

    grad_norms.png and depth_profile.png always; backprop_norms.png when the
    run recorded the back-propagated gradient, activation_histograms.png when
    it recorded histograms.

    Args:
        history: the record.
        folder: the run folder.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [p.name for p in save_run_plots(h, folder)]
    ['grad_norms.png', 'backprop_norms.png', 'depth_profile.png']
    """
    out = Path(folder) / PLOTS_DIR
    paths = [plot_grad_norms(history, out / "grad_norms.png")]
    if "backprop" in history and pick_series(history, "backprop") == "backprop":
        paths.append(plot_grad_norms(history, out / "backprop_norms.png", series="backprop"))
    paths.append(plot_depth_profile(history, out / "depth_profile.png"))
    hist = plot_activation_histograms(history, out / "activation_histograms.png")
    if hist is not None:
        paths.append(hist)
    return paths
