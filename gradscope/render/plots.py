"""matplotlib plots of a `GradientHistory`: norms over steps, depth profiles, heat maps, histograms.

They read a record, never a model, and import no TensorFlow. Figures are drawn
on `matplotlib.figure.Figure` with an Agg canvas directly (no pyplot), so the
user's interactive backend and pyplot's figure list are left untouched. In a
Jupyter notebook a returned Figure shows inline all the same.

Each plot has a ``*_figure`` function that returns the matplotlib Figure (to
show, restyle or test) and a ``plot_*`` function that saves it as a PNG.
Series over the steps are drawn as TensorBoard draws scalars: the raw values
faint, a smoothed line over them (`smooth`). From `HEATMAP_LAYERS` layers on,
a heat map (layer x step) replaces the one-line-per-layer plots.

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

import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradscope.history import PLOTS_DIR, GradientHistory

_SIZE = (8.0, 5.0)
_DPI = 100
_MAX_LEGEND = 24  # beyond this many layers a colour bar replaces the legend
_MAX_OVERVIEW_LEGEND = 12  # the overview's panels are smaller: a colour bar from 13 layers
_RAW_ALPHA = 0.25  # the raw series under a smoothed line: faint, as in TensorBoard

#: From this many layers on, per-layer series over the steps are drawn as a heat
#: map (layer x step) instead of one line per layer.
HEATMAP_LAYERS = 100

#: The axis text of each per-layer series, in words a student knows.
SERIES_LABELS = {
    "grad_norm": "weight gradient (L2 norm of dL/dW)",
    "backprop": "back-propagated gradient (RMS of dL/da)",
    "weight_norm": "weights (L2 norm of W)",
    "update_ratio": "update size relative to the weights (|\u0394W| / |W|)",
    "act_mean": "mean output of the layer",
    "act_std": "spread of the layer's output (standard deviation)",
    "saturation": "share of outputs in tanh's or sigmoid's flat tails",
    "dead": "share of dead units (output 0 for every sample)",
    "dact_mean": "mean activation derivative f'(s)",
    "dact_rms": "RMS of the activation derivative f'(s)",
    "nonfinite": "layer output holds NaN or Inf (1) or not (0)",
}


def series_label(series: str) -> str:
    """What a per-layer series measures, in words, for an axis; the name itself when unknown.

    Args:
        series: the series' name in the history, e.g. ``"backprop"``.

    Example:

    >>> series_label("backprop"), series_label("my_series")
    ('back-propagated gradient (RMS of dL/da)', 'my_series')
    """
    return SERIES_LABELS.get(series, series)


def _short_label(series: str) -> str:
    # "back-propagated gradient (RMS of dL/da)" -> "back-propagated gradient", for titles.
    return series_label(series).split(" (")[0]


def default_smoothing(rows: int) -> float:
    """The smoothing weight used for ``rows`` points: none below 20, then about a 20th of the run.

    The weight ``w`` averages over about ``1 / (1 - w)`` points, so a long run
    is smoothed over more steps than a short one. At most 0.99.

    Args:
        rows: the number of recorded steps drawn.

    Example:

    >>> default_smoothing(12), default_smoothing(100), default_smoothing(10_000)
    (0.0, 0.8, 0.99)
    """
    if rows <= 20:
        return 0.0
    return min(0.99, round(1.0 - 20.0 / rows, 2))


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's scalar smoothing: an exponential moving average, debiased, along axis 0.

    Each point becomes ``last / (1 - weight**k)`` with
    ``last = weight * last + (1 - weight) * value`` (``last`` starting at 0) and
    ``k`` the finite values seen so far; the division removes the pull
    towards the starting 0. Non-finite values are passed through and skipped,
    as TensorBoard does. Columns (layers) are smoothed independently.

    Args:
        values: ``(steps,)`` or ``(steps, layers)``.
        weight: in ``[0, 1)``; 0 leaves the values as they are.

    Example:

    >>> smooth(np.array([1.0, 3.0, np.nan, 3.0]), 0.5).tolist()
    [1.0, 2.333..., nan, 2.714...]
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1); got {weight!r}")
    y = np.asarray(values, np.float64)
    out = y.copy()
    if weight == 0.0 or not y.size:
        return out
    last = np.zeros(y.shape[1:])
    seen = np.zeros(y.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, row in enumerate(y):
            ok = np.isfinite(row)
            last = np.where(ok, weight * last + (1.0 - weight) * np.where(ok, row, 0.0), last)
            seen = seen + ok
            out[i] = np.where(ok, last / (1.0 - weight**seen), row)
    return out


def _show_inline_in_notebooks() -> None:
    """Lets IPython draw a returned Figure as a PNG when nothing else has.

    These figures bypass pyplot, so the inline backend's display hook never
    sees them, and until pyplot is imported IPython knows no way to draw a
    Figure: it would print ``<Figure size ...>``. Register the PNG printer
    IPython's inline backend uses, unless some format is registered already
    (``%matplotlib inline``, ``%config InlineBackend.figure_formats``).
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or getattr(shell, "display_formatter", None) is None:
        return
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    for formatter in formatters.values():
        try:
            formatter.lookup_by_type(Figure)
            return
        except KeyError:
            continue
    formatters["image/png"].for_type(Figure, functools.partial(print_figure, fmt="png", base64=True))


def _mpl() -> tuple[Any, Any, Any]:
    """Figure, FigureCanvasAgg and the colormap registry, imported on first use
    (matplotlib takes a while to import, and a report without plots needs none of it)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg, matplotlib.colormaps


def _new_figure(size: tuple[float, float] = _SIZE, **kwargs: Any) -> tuple[Any, Any]:
    Figure, FigureCanvasAgg, _ = _mpl()
    _show_inline_in_notebooks()
    # Constrained layout lays the figure out whenever it is drawn: saved, or shown inline in a notebook.
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; savefig then renders with Agg
    return fig, (fig.subplot_mosaic(kwargs["mosaic"]) if "mosaic" in kwargs else fig.subplots(**kwargs))


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Saves a Figure as a PNG at ``path`` (making its folder); returns the path. The Figure is kept.

    Args:
        fig: a Figure, e.g. from `overview_figure`.
        path: where to write the PNG.

    Example:

    >>> import tempfile
    >>> from gradscope.history import GradientHistory
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_figure(grad_norms_figure(GradientHistory(["dense"])), f"{folder}/sub/g.png").name
    'g.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # a Figure made elsewhere
        fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return path


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = save_figure(fig, path)
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


def _layer_colours(n_layers: int) -> list[Any]:
    """viridis from the input layer (dark) to the output layer (light)."""
    _, _, colormaps = _mpl()
    cmap = colormaps["viridis"]
    return [cmap(i / max(n_layers - 1, 1)) for i in range(n_layers)]


def _legend(ax: Any, weight: float, name_lines: bool = True, **kwargs: Any) -> Any:
    """The axes' legend: its labelled lines (unless a colour bar names them), then, when smoothed, two
    grey entries that say how the lines were drawn. One legend, so it never sits on top of another.
    None when there is nothing to say."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels() if name_lines else ([], [])
    if weight > 0 and ax.lines:
        handles += [Line2D([], [], color="0.3", linewidth=1.6),
                    Line2D([], [], color="0.3", linewidth=1.0, alpha=_RAW_ALPHA)]
        labels += [f"smoothed (moving average, weight {weight:.2f})", "faint: raw, every recorded step"]
    return ax.legend(handles, labels, **kwargs) if handles else None


def _draw_over_steps(
    ax: Any, steps: np.ndarray, y: np.ndarray, colour: Any, label: str, weight: float, marker: str | None = None
) -> None:
    """One series over the steps: faint raw values and a smoothed line over them (or raw only, weight 0)."""
    if weight == 0.0:
        ax.plot(steps, y, color=colour, label=label, marker=marker, linewidth=1.2)
        return
    # The raw line's label starts with "_": matplotlib leaves it out of legends.
    ax.plot(steps, y, color=colour, label=f"_raw {label}", marker=marker, linewidth=1.0, alpha=_RAW_ALPHA)
    ax.plot(steps, smooth(y, weight), color=colour, label=label, linewidth=1.6)


def grad_norms_figure(history: GradientHistory, series: str = "grad_norm", smoothing: float | None = None) -> Any:
    """A Figure of every layer's ``series`` over the steps, log scale, input layer dark to output light.

    Each layer gets a faint line of its raw per-step values and, over it, a
    line smoothed as TensorBoard smooths scalars (`smooth`), both in
    ``history.layers`` order: ``fig.axes[0].lines`` holds, per layer, the raw
    line (label ``"_raw <layer>"``) then the smoothed one (label ``<layer>``).
    Without smoothing (short runs, or ``smoothing=0``) there is one line per
    layer, its raw values. From `HEATMAP_LAYERS` layers on, the figure is
    `depth_heatmap_figure` instead. `plot_grad_norms` saves it.

    Args:
        history: the record.
        series: the per-layer series to draw.
        smoothing: the smoothing weight in ``[0, 1)``. Defaults to `None`, `default_smoothing`.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> ax = grad_norms_figure(h).axes[0]
    >>> ax.get_yscale(), [line.get_label() for line in ax.lines], ax.get_ylabel()
    ('log', ['dense', 'dense_1'], 'weight gradient (L2 norm of dL/dW)')
    """
    n_layers = len(history.layers)
    if n_layers >= HEATMAP_LAYERS:
        return depth_heatmap_figure(history, series)
    fig, ax = _new_figure()
    weight = default_smoothing(len(history)) if smoothing is None else float(smoothing)
    has_data = _draw_layers_over_steps(ax, history, series, weight)
    ax.set_title(_title(history, f"{_short_label(series)} per layer"))
    if has_data and n_layers <= _MAX_LEGEND:
        _legend(ax, weight, fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5),
                title="layer (input first)")
    elif has_data:
        # Dozens of legend entries would hide the plot; the colour order says enough.
        _layer_colour_bar(ax, history.layers)
        _legend(ax, weight, name_lines=False, fontsize="small")
    return fig


def _draw_layers_over_steps(ax: Any, history: GradientHistory, series: str, weight: float) -> bool:
    """Every layer's ``series`` over the steps on a log axis; returns whether anything was drawn."""
    values = history.get(series)
    colours = _layer_colours(len(history.layers))
    has_data = False
    if values is not None and len(history):
        y = _positive(values)
        has_data = bool(np.isfinite(y).any())
        marker = "." if len(history) < 30 else None  # a lone step would be invisible as a line
        for li, name in enumerate(history.layers):
            _draw_over_steps(ax, history.steps, y[:, li], colours[li], name, weight, marker)
    _log_or_empty(ax, has_data, series)
    ax.set_xlabel("step")
    ax.set_ylabel(series_label(series))
    ax.grid(True, which="major", alpha=0.3)
    return has_data


def _layer_colour_bar(ax: Any, names: Sequence[str]) -> Any:
    """A colour bar that names the layers' colours: 1 = the input layer ... N = the output layer."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _, _, colormaps = _mpl()
    bar = ax.figure.colorbar(ScalarMappable(Normalize(1, len(names)), colormaps["viridis"]), ax=ax)
    bar.set_label(f"layer: 1 = {names[0]} ... {len(names)} = {names[-1]}")
    return bar


def _step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each recorded step, halfway to its neighbours, so uneven records stay true."""
    steps = np.asarray(steps, np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[steps[0] - (mid[0] - steps[0])], mid, [steps[-1] + (steps[-1] - mid[-1])]])


def _layer_axis(ax: Any, names: Sequence[str]) -> None:
    # Layer i sits at height i + 1, input at the bottom; many names are thinned out.
    every = max(1, len(names) // 20)
    ticks = list(range(0, len(names), every))
    ax.set_yticks([i + 1 for i in ticks])
    ax.set_yticklabels([names[i] for i in ticks], fontsize="small")
    ax.set_ylabel("layer (input at the bottom)")


def _draw_heatmap(ax: Any, history: GradientHistory, series: str) -> Any | None:
    """``series`` as a layer x step heat map on a log colour scale; returns the QuadMesh, or None."""
    _, _, colormaps = _mpl()
    from matplotlib.colors import LogNorm

    values = history.get(series)
    data = _positive(values).T if values is not None and len(history) else np.full((len(history.layers), 0), np.nan)
    ax.set_xlabel("step")
    _layer_axis(ax, history.layers)
    if not np.isfinite(data).any():
        ax.text(0.5, 0.5, f"no finite positive {series}", ha="center", va="center", transform=ax.transAxes)
        return None
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if low == high:  # one value everywhere: a log scale needs a range around it
        low, high = low / 2, high * 2
    # Steps where a layer has nothing to show (NaN, inf, 0) are grey, not a colour.
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(_step_edges(history.steps), np.arange(len(history.layers) + 1) + 0.5,
                         np.ma.masked_invalid(data), norm=LogNorm(low, high), cmap=cmap, shading="flat",
                         rasterized=True)
    ax.set_ylim(0.5, len(history.layers) + 0.5)
    bar = ax.figure.colorbar(mesh, ax=ax)
    bar.set_label(f"{series_label(series)}, log scale")
    return mesh


def depth_heatmap_figure(history: GradientHistory, series: str = "backprop") -> Any:
    """A Figure of ``series`` as a heat map, layer x step, on a log colour scale.

    Each row is a layer (input at the bottom), each column a recorded step.
    Small values are dark: a vanishing gradient is a dark band at the bottom,
    an exploding one a bright band. It stays readable for hundreds of layers,
    where one line per layer would not. ``fig.axes[0].collections[0]`` is the
    mesh; its array is ``history[series]`` transposed, masked where a log scale
    cannot show a value. A series the run did not record falls back to grad_norm.

    Args:
        history: the record.
        series: the per-layer series to draw.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> ax = depth_heatmap_figure(h).axes[0]
    >>> ax.collections[0].get_array().shape, type(ax.collections[0].norm).__name__
    ((2, 5), 'LogNorm')
    """
    series = pick_series(history, series)
    fig, ax = _new_figure()
    _draw_heatmap(ax, history, series)
    ax.set_title(_title(history, f"{_short_label(series)}, layer by layer over the steps"))
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
            marker = "o" if len(x) < HEATMAP_LAYERS else None  # hundreds of dots would merge into a smear
            ax.plot(x[ok], y[ok], marker=marker, color=cmap(0.85 * k / max(len(rows) - 1, 1)), label=label)
    _log_or_empty(ax, has_data, series)
    _depth_axis(ax, history.layers)
    ax.set_xlim(0.5, len(history.layers) + 0.5)
    ax.set_ylabel(series_label(series))
    ax.set_title(f"{_short_label(series)} against depth")
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
    >>> [ax.get_title() for ax in fig.axes], [line.get_label() for line in fig.axes[0].lines]
    (['weight gradient against depth', 'back-propagated gradient against depth'], ['step 0', 'step 4'])
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


def comparison_figure(
    histories: dict[str, GradientHistory], series: str = "backprop", smoothing: float | None = None
) -> Any:
    """A Figure of several runs side by side: ``series`` against depth at the last
    step, and the first layer's ``series`` over steps. Falls back to grad_norm per run.

    The step panel draws each run's raw values faint and a smoothed line over
    them, as `grad_norms_figure` does (raw line then smoothed line per run).

    Args:
        histories: ``{label: history}``, one line each.
        series: the per-layer series to compare.
        smoothing: the smoothing weight of the step panel. Defaults to `None`, `default_smoothing`.

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
    longest = max((len(h) for h in histories.values()), default=0)
    weight = default_smoothing(longest) if smoothing is None else float(smoothing)
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
        _draw_over_steps(step_ax, history.steps, y[:, first_layer], colors(k % 10),
                         f"{tag}: {history.layers[first_layer]}", weight)
    ylabel = " / ".join(series_label(name) for name in sorted(used)) or series_label(series)
    for ax in (depth_ax, step_ax):
        _log_or_empty(ax, has_data, " / ".join(sorted(used)) or series)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    if has_data:
        depth_ax.legend(fontsize="small")
        _legend(step_ax, weight, fontsize="small")
    names = {tuple(h.layers) for h in histories.values()}
    if len(names) == 1:  # the same network: name its layers
        _depth_axis(depth_ax, list(names.pop()))
    else:
        from matplotlib.ticker import MaxNLocator

        depth_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def overview_figure(history: GradientHistory, series: str = "backprop", smoothing: float | None = None) -> Any:
    """One Figure to look at first: ``series`` over the steps, against depth, and as a heat map.

    Top left, each layer over the steps (smoothed over the faint raw values;
    left out from `HEATMAP_LAYERS` layers on, where the heat map says it);
    top right, against depth at a few moments (`default_moments`); below,
    the layer x step heat map. A series the run did not record falls back
    to grad_norm. ``GradientMonitor.plot()`` returns this figure; in a
    notebook it shows inline.

    Args:
        history: the record.
        series: the per-layer series to draw. Defaults to `"backprop"`, the
            gradient that reaches each layer's output.
        smoothing: the smoothing weight over the steps. Defaults to `None`, `default_smoothing`.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(5), {"grad_norm": np.tile([0.01, 1.0], (5, 1)), "backprop": np.tile([0.002, 0.1], (5, 1))})
    >>> [ax.get_title() for ax in overview_figure(h).axes[:3]]
    ['over the steps', 'against depth', 'layer by layer over the steps']
    """
    series = pick_series(history, series)
    weight = default_smoothing(len(history)) if smoothing is None else float(smoothing)
    many = len(history.layers) >= HEATMAP_LAYERS
    mosaic = [["depth"], ["heat"]] if many else [["steps", "depth"], ["heat", "heat"]]
    fig, axes = _new_figure((12.0, 8.0), mosaic=mosaic)
    if not many:
        ax = axes["steps"]
        if _draw_layers_over_steps(ax, history, series, weight):
            if len(history.layers) <= _MAX_OVERVIEW_LEGEND:
                _legend(ax, weight, fontsize="x-small", title="layer", title_fontsize="x-small")
            else:
                _layer_colour_bar(ax, history.layers)
                _legend(ax, weight, name_lines=False, fontsize="x-small")
        ax.set_title("over the steps")
    rows = [_row_of(history.steps, step) for step in default_moments(history.steps)]
    _draw_depth(axes["depth"], history, series, sorted(set(rows)))
    axes["depth"].set_title("against depth")
    _draw_heatmap(axes["heat"], history, series)
    axes["heat"].set_title("layer by layer over the steps")
    fig.suptitle(_title(history, f"{series_label(series)}: dark = small, a band at the bottom = vanishing"))
    return fig


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
