"""Tests of the matplotlib renderers: records in, PNG files out, no TensorFlow."""

from __future__ import annotations

import base64
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradscope.history import PLOTS_DIR, GradientHistory, load_run
from gradscope.render.plots import (
    HEATMAP_LAYERS,
    activation_histograms_figure,
    comparison_figure,
    default_moments,
    default_smoothing,
    depth_heatmap_figure,
    depth_profile_figure,
    grad_norms_figure,
    overview_figure,
    pick_series,
    plot_activation_histograms,
    plot_comparison,
    plot_depth_profile,
    plot_grad_norms,
    save_figure,
    save_run_plots,
    smooth,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def make_history(
    n_layers: int = 3, n_steps: int = 20, backprop: bool = True, histograms: bool = True
) -> GradientHistory:
    """Gradients shrink 10x per layer towards the input and drift slowly over steps."""
    layers = [f"dense_{i}" for i in range(n_layers)]
    info = [{"name": n, "class": "Dense", "units": 8, "activation": "tanh", "params": 72} for n in layers]
    h = GradientHistory(layers, layer_info=info, config={"name": "tanh-small"})
    depth = 10.0 ** (np.arange(n_layers) - (n_layers - 1))  # 1e-2, 1e-1, 1 for 3 layers
    drift = np.linspace(1.0, 0.5, n_steps)[:, None]
    series = {"grad_norm": drift * depth, "weight_norm": np.ones((n_steps, n_layers))}
    if backprop:
        series["backprop"] = 0.3 * drift * depth
    h.append(np.arange(n_steps), series, {"loss": np.linspace(2.0, 1.0, n_steps)})
    if histograms:
        centres = np.linspace(-1, 1, 40)
        near_zero = np.exp(-((centres / 0.05) ** 2)) * 100  # weights too small: activations at 0
        at_edges = np.exp(-(((np.abs(centres) - 1) / 0.05) ** 2)) * 100  # too large: at +/-1
        ranges = np.tile([-1.0, 1.0], (n_layers, 1))
        h.histograms["start"] = {"step": 0, "ranges": ranges, "counts": np.tile(near_zero, (n_layers, 1))}
        h.histograms["end"] = {"step": n_steps - 1, "ranges": ranges, "counts": np.tile(at_edges, (n_layers, 1))}
    return h


def assert_png(path: Path | None) -> None:
    assert path is not None and path.is_file()
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_default_moments_first_ten_fifty_last() -> None:
    assert default_moments(range(101)) == [0, 10, 50, 100]
    # Recorded every 5 steps: 10 % of 0..200 is step 20, half is step 100.
    assert default_moments(np.arange(0, 201, 5)) == [0, 20, 100, 200]
    # Percentages are of the step range, starting where the record starts.
    assert default_moments(np.arange(1000, 1101)) == [1000, 1010, 1050, 1100]


def test_default_moments_dedupes_short_runs() -> None:
    assert default_moments([0, 1]) == [0, 1]
    assert default_moments([7]) == [7]
    assert default_moments([]) == []


def test_pick_series_falls_back_to_grad_norm() -> None:
    assert pick_series(make_history(), "backprop") == "backprop"
    assert pick_series(make_history(backprop=False), "backprop") == "grad_norm"
    h = make_history(backprop=False)
    h.append([20], {"grad_norm": np.ones((1, 3)), "backprop": np.full((1, 3), np.nan)})
    assert pick_series(h, "backprop") == "grad_norm"  # present but never recorded


def test_plot_grad_norms(tmp_path: Path) -> None:
    out = plot_grad_norms(make_history(), tmp_path / "g.png")
    assert out == tmp_path / "g.png"
    assert_png(out)


def test_grad_norms_figure_draws_each_layers_series_on_a_log_axis() -> None:
    h = make_history(n_layers=4, n_steps=12)  # 12 steps: too few to smooth, the raw lines alone
    ax = grad_norms_figure(h).axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == h.layers
    for li, line in enumerate(ax.lines):
        np.testing.assert_array_equal(line.get_xdata(), h.steps)
        np.testing.assert_allclose(line.get_ydata(), h["grad_norm"][:, li])
        assert line.get_alpha() is None  # not faint: nothing is drawn over it
    assert ax.get_ylabel() == "weight gradient (L2 norm of dL/dW)"
    bp = grad_norms_figure(h, "backprop").axes[0]
    assert bp.get_ylabel() == "back-propagated gradient (RMS of dL/da)"
    assert bp.get_title() == "back-propagated gradient per layer \u2014 tanh-small"
    np.testing.assert_allclose(bp.lines[0].get_ydata(), h["backprop"][:, 0])


def tensorboard_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's scalar smoothing, written out point by point as its chart code does it."""
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)  # passed through, and not counted
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight**count))
    return out


def noisy_history(n_layers: int = 3, n_steps: int = 100) -> GradientHistory:
    """Per-step noise around a gradient that shrinks 10x per layer towards the input."""
    rng = np.random.default_rng(7)
    h = GradientHistory([f"dense_{i}" for i in range(n_layers)])
    depth = 10.0 ** (np.arange(n_layers) - (n_layers - 1))
    values = depth * np.exp(rng.normal(0, 0.5, (n_steps, n_layers)))
    h.append(np.arange(n_steps), {"grad_norm": values, "backprop": 0.3 * values})
    return h


def test_smooth_is_tensorboards_debiased_moving_average() -> None:
    rng = np.random.default_rng(3)
    values = rng.exponential(size=(40, 3))
    values[5, 1] = np.nan  # a layer not measured at one step
    values[9, 2] = np.inf
    for weight in (0.0, 0.6, 0.95):
        got = smooth(values, weight)
        for col in range(3):
            np.testing.assert_allclose(got[:, col], tensorboard_ema(values[:, col].tolist(), weight))
    # Debiased: the first point is the first value, not pulled towards the starting 0.
    assert smooth(np.array([5.0, 5.0, 5.0]), 0.9).tolist() == pytest.approx([5.0, 5.0, 5.0])
    with pytest.raises(ValueError, match=r"smoothing weight must be in \[0, 1\)"):
        smooth(values, 1.0)


def test_default_smoothing_grows_with_the_run() -> None:
    assert [default_smoothing(n) for n in (1, 20, 21, 40, 100, 1000, 10**6)] == [0.0, 0.0, 0.05, 0.5, 0.8, 0.98, 0.99]


def test_grad_norms_figure_draws_a_smoothed_line_over_the_faint_raw_series() -> None:
    h = noisy_history(n_steps=100)
    ax = grad_norms_figure(h, "backprop").axes[0]
    weight = default_smoothing(100)
    # Per layer: the raw line, faint and out of the legend, then the smoothed line over it.
    assert [line.get_label() for line in ax.lines] == [
        label for name in h.layers for label in (f"_raw {name}", name)
    ]
    for li in range(3):
        raw, smoothed = ax.lines[2 * li], ax.lines[2 * li + 1]
        np.testing.assert_allclose(raw.get_ydata(), h["backprop"][:, li])
        np.testing.assert_allclose(smoothed.get_ydata(), tensorboard_ema(h["backprop"][:, li].tolist(), weight))
        np.testing.assert_array_equal(smoothed.get_xdata(), h.steps)
        assert raw.get_alpha() < 0.5 and smoothed.get_alpha() is None
        assert raw.get_color() == smoothed.get_color()
        # Smoothing removes noise: the smoothed line moves less from step to step.
        assert np.std(np.diff(np.log(smoothed.get_ydata()))) < 0.5 * np.std(np.diff(np.log(raw.get_ydata())))
    # The legend names the layers, then says how the lines were drawn.
    assert legend_texts(ax) == [*h.layers, "smoothed (moving average, weight 0.80)", "faint: raw, every recorded step"]
    # An explicit weight is used, and said.
    ax = grad_norms_figure(h, smoothing=0.5).axes[0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), tensorboard_ema(h["grad_norm"][:, 0].tolist(), 0.5))
    assert "smoothed (moving average, weight 0.50)" in legend_texts(ax)
    # 25 to 99 layers: a colour bar names the layers, the legend only says how they are drawn.
    ax = grad_norms_figure(noisy_history(n_layers=30)).axes[0]
    assert legend_texts(ax) == ["smoothed (moving average, weight 0.80)", "faint: raw, every recorded step"]
    assert len(ax.lines) == 60


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_comparison_figure_smooths_each_runs_first_layer_over_the_steps() -> None:
    runs = {"tanh": noisy_history(n_steps=100), "relu": noisy_history(n_layers=5, n_steps=60)}
    _, step_ax = comparison_figure(runs, smoothing=0.9).axes
    assert [line.get_label() for line in step_ax.lines] == ["_raw tanh: dense_0", "tanh: dense_0",
                                                           "_raw relu: dense_0", "relu: dense_0"]
    np.testing.assert_allclose(step_ax.lines[2].get_ydata(), runs["relu"]["backprop"][:, 0])
    np.testing.assert_allclose(step_ax.lines[3].get_ydata(),
                               tensorboard_ema(runs["relu"]["backprop"][:, 0].tolist(), 0.9))
    assert step_ax.get_ylabel() == "back-propagated gradient (RMS of dL/da)"
    assert legend_texts(step_ax) == ["tanh: dense_0", "relu: dense_0", "smoothed (moving average, weight 0.90)",
                                     "faint: raw, every recorded step"]


def heatmap_of(ax):
    (mesh,) = ax.collections
    return mesh


def test_depth_heatmap_draws_the_history_layer_by_step_on_a_log_colour_scale() -> None:
    from matplotlib.colors import LogNorm

    h = make_history(n_layers=4, n_steps=21, histograms=False)
    h.append([21, 22], {"grad_norm": np.ones((2, 4)), "backprop": np.array([[np.nan, 0.0, np.inf, 1.0]] * 2)})
    fig = depth_heatmap_figure(h)
    ax, bar = fig.axes
    mesh = heatmap_of(ax)
    # Rows are layers (input first, drawn at the bottom), columns the recorded steps.
    shown = np.ma.getdata(mesh.get_array()).astype(float)
    masked = np.ma.getmaskarray(mesh.get_array())
    expected = h["backprop"].T
    drawable = np.isfinite(expected) & (expected > 0)
    np.testing.assert_array_equal(masked, ~drawable)  # NaN, 0 and inf: grey, not a colour
    np.testing.assert_allclose(shown[drawable], expected[drawable])
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.norm.vmin == pytest.approx(np.min(expected[drawable]))
    assert mesh.norm.vmax == pytest.approx(np.max(expected[drawable]))
    # The constructed vanishing gradient: the input layer's row is the darkest (smallest) band.
    assert np.argmin(np.nanmean(np.where(drawable, expected, np.nan), axis=1)) == 0
    assert ax.get_ylim() == (0.5, 4.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == h.layers
    assert ax.get_ylabel() == "layer (input at the bottom)" and ax.get_xlabel() == "step"
    assert bar.get_ylabel() == "back-propagated gradient (RMS of dL/da), log scale"
    # Each column is centred on its step, halfway to its neighbours.
    np.testing.assert_allclose(mesh.get_coordinates()[0, :, 0], np.arange(-0.5, 23.0))
    # A run without back-propagated gradients shows grad_norm.
    fallback = heatmap_of(depth_heatmap_figure(make_history(backprop=False)).axes[0])
    np.testing.assert_allclose(fallback.get_array(), make_history()["grad_norm"].T)


def test_from_a_hundred_layers_the_per_layer_plot_is_a_heat_map_not_lines() -> None:
    assert HEATMAP_LAYERS == 100
    h = make_history(n_layers=150, n_steps=30, histograms=False)
    ax = grad_norms_figure(h).axes[0]
    assert not ax.lines  # not 150 lines
    np.testing.assert_allclose(heatmap_of(ax).get_array(), h["grad_norm"].T)
    # Names are thinned out to about 20, input at the bottom.
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "dense_0" and 15 <= len(labels) <= 25
    assert grad_norms_figure(make_history(n_layers=99, histograms=False)).axes[0].lines


def test_overview_figure_draws_steps_depth_and_heat_map_of_one_series() -> None:
    h = noisy_history(n_layers=4, n_steps=60)
    fig = overview_figure(h)
    steps_ax, depth_ax, heat_ax = fig.axes[:3]
    assert [ax.get_title() for ax in (steps_ax, depth_ax, heat_ax)] == [
        "over the steps", "against depth", "layer by layer over the steps",
    ]
    weight = default_smoothing(60)
    np.testing.assert_allclose(steps_ax.lines[1].get_ydata(), tensorboard_ema(h["backprop"][:, 0].tolist(), weight))
    assert [line.get_label() for line in depth_ax.lines] == [f"step {m}" for m in default_moments(h.steps)]
    np.testing.assert_allclose(depth_ax.lines[-1].get_ydata(), h["backprop"][-1])
    np.testing.assert_allclose(heatmap_of(heat_ax).get_array(), h["backprop"].T)
    assert steps_ax.get_ylabel() == depth_ax.get_ylabel() == "back-propagated gradient (RMS of dL/da)"
    assert fig.get_suptitle().startswith("back-propagated gradient (RMS of dL/da): dark = small")
    # Many layers: the heat map replaces the lines over the steps.
    big = overview_figure(make_history(n_layers=120, histograms=False), "grad_norm")
    assert [ax.get_title() for ax in big.axes[:2]] == ["against depth", "layer by layer over the steps"]


@pytest.mark.slow
def test_save_figure_keeps_the_figure(tmp_path: Path) -> None:
    fig = overview_figure(make_history())
    assert_png(save_figure(fig, tmp_path / "sub" / "o.png"))
    assert len(fig.axes) == 4  # three panels and the heat map's colour bar, still there to show


def test_a_figure_shows_inline_in_ipython() -> None:
    # An in-process IPython shell: with no pyplot imported it would print "<Figure size ...>".
    # (A real Jupyter kernel shows it too: see the notebook's test in tests/test_examples.py.)
    import builtins

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history database, no thread
    names = set(vars(builtins))
    shell = InteractiveShell.instance(config=config)
    try:
        fig = grad_norms_figure(make_history())
        data, _ = shell.display_formatter.format(fig)
        assert base64.b64decode(data["image/png"])[:8] == PNG_MAGIC
    finally:
        InteractiveShell.clear_instance()
        # IPython leaves __IPYTHON__ and display behind: later tests must not think they run in IPython.
        for name in set(vars(builtins)) - names:
            delattr(builtins, name)


def test_depth_profile_figure_draws_grad_norm_and_backprop_against_depth() -> None:
    h = make_history(n_layers=4, n_steps=21)
    fig = depth_profile_figure(h)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "weight gradient (L2 norm of dL/dW)", "back-propagated gradient (RMS of dL/da)",
    ]
    moments = default_moments(h.steps)  # steps 0, 2, 10, 20
    for ax, name in zip(fig.axes, ["grad_norm", "backprop"], strict=True):
        series = h[name]
        assert ax.get_yscale() == "log"
        assert [line.get_label() for line in ax.lines] == [f"step {m}" for m in moments]
        for line, step in zip(ax.lines, moments, strict=False):
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])  # input first
            np.testing.assert_allclose(line.get_ydata(), series[step])
            assert np.all(np.diff(line.get_ydata()) > 0)  # the constructed vanishing: falls to the input
    # Moments are steps; the nearest recorded row is drawn, each row once.
    ax = depth_profile_figure(h, "grad_norm", moments=[3, 3, 500]).axes[0]
    assert [line.get_label() for line in ax.lines] == ["step 3", "step 20"]
    # A run without back-propagated gradients gets one grad_norm panel, not two.
    assert [ax.get_title() for ax in depth_profile_figure(make_history(backprop=False)).axes] == [
        "weight gradient against depth"
    ]


def test_comparison_figure_draws_each_runs_last_step_and_first_layer() -> None:
    runs = {"tanh": make_history(n_layers=3), "relu": make_history(n_layers=5, backprop=False)}
    depth_ax, step_ax = comparison_figure(runs).axes
    assert [line.get_label() for line in depth_ax.lines] == ["tanh", "relu (grad_norm)"]
    np.testing.assert_allclose(depth_ax.lines[0].get_ydata(), runs["tanh"]["backprop"][-1])
    np.testing.assert_allclose(depth_ax.lines[1].get_ydata(), runs["relu"]["grad_norm"][-1])
    np.testing.assert_allclose(step_ax.lines[0].get_ydata(), runs["tanh"]["backprop"][:, 0])
    assert depth_ax.get_yscale() == step_ax.get_yscale() == "log"


def test_activation_histograms_figure_shows_shares_piling_at_zero_then_at_the_edges() -> None:
    h = make_history(n_layers=2)
    fig = activation_histograms_figure(h)
    axes = np.array(fig.axes).reshape(2, 2)  # rows are layers, columns start and end
    for layer in range(2):
        start, end = (np.array([p.get_height() for p in axes[layer, c].patches]) for c in (0, 1))
        centres = np.array([p.get_x() + p.get_width() / 2 for p in axes[layer, 0].patches])
        assert start.sum() == pytest.approx(1.0) and end.sum() == pytest.approx(1.0)
        assert abs(centres[start.argmax()]) < 0.1  # weights too small: outputs at 0
        assert abs(centres[end.argmax()]) > 0.9  # too large: outputs at +-1
    assert activation_histograms_figure(make_history(histograms=False)) is None


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_grad_norms_figure_with_many_layers_has_a_colour_bar_not_a_legend() -> None:
    from matplotlib import colormaps

    h = make_history(n_layers=30, histograms=False)
    ax, bar = grad_norms_figure(h).axes
    assert ax.get_legend() is None  # 30 entries would hide the plot
    assert bar.get_ylim() == (1.0, 30.0)  # the bar counts layers 1..30
    assert bar.get_ylabel() == "layer: 1 = dense_0 ... 30 = dense_29"
    assert len(ax.lines) == 30
    for li, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_ydata(), h["grad_norm"][:, li])
    # The lines' colours run along the bar's colormap: input dark, output light.
    np.testing.assert_allclose(ax.lines[0].get_color(), colormaps["viridis"](0.0))
    np.testing.assert_allclose(ax.lines[14].get_color(), colormaps["viridis"](14 / 29))
    np.testing.assert_allclose(ax.lines[-1].get_color(), colormaps["viridis"](1.0))
    # Up to 24 layers a legend names each; from 25 the bar takes over.
    (few,) = grad_norms_figure(make_history(n_layers=24, histograms=False)).axes
    assert [t.get_text() for t in few.get_legend().get_texts()] == [f"dense_{i}" for i in range(24)]
    assert len(grad_norms_figure(make_history(n_layers=25, histograms=False)).axes) == 2


def test_depth_profile_figure_without_backprop_draws_grad_norm_at_the_asked_moments() -> None:
    h = make_history(backprop=False)
    (ax,) = depth_profile_figure(h, moments=[3, 3, 19, 500]).axes
    assert ax.get_ylabel() == "weight gradient (L2 norm of dL/dW)" and ax.get_yscale() == "log"
    # Step 500 is past the end: its nearest row is step 19, drawn once.
    assert [line.get_label() for line in ax.lines] == ["step 3", "step 19"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), h["grad_norm"][3])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), h["grad_norm"][19])
    assert [t.get_text() for t in ax.get_xticklabels()] == h.layers
    assert ax.get_xlim() == (0.5, 3.5)


def test_plot_depth_profile_saves_a_png(tmp_path: Path) -> None:
    out = plot_depth_profile(make_history(), tmp_path / "sub" / "d.png", moments=[0, 19])
    assert out == tmp_path / "sub" / "d.png"  # missing folders are made
    assert_png(out)


def test_plot_activation_histograms(tmp_path: Path) -> None:
    assert_png(plot_activation_histograms(make_history(), tmp_path / "a.png"))
    assert plot_activation_histograms(make_history(histograms=False), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_activation_histograms_figure_with_only_the_start_says_the_end_was_not_recorded() -> None:
    h = make_history()
    del h.histograms["end"]
    axes = np.array(activation_histograms_figure(h).axes).reshape(3, 2)
    assert axes[0, 0].get_title() == "start (step 0)" and axes[0, 1].get_title() == "end: not recorded"
    for layer in range(3):
        start = np.array([p.get_height() for p in axes[layer, 0].patches])
        assert len(start) == 40 and start.sum() == pytest.approx(1.0)
        assert not axes[layer, 1].patches and texts(axes[layer, 1]) == ["no data"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["dense_0\ntanh", "dense_1\ntanh", "dense_2\ntanh"]


def test_plot_comparison(tmp_path: Path) -> None:
    runs = {"tanh": make_history(), "relu+he": make_history(n_layers=5, backprop=False)}
    assert_png(plot_comparison(runs, tmp_path / "c.png"))


@pytest.mark.slow
def test_nan_and_inf_still_render(tmp_path: Path) -> None:
    h = make_history(histograms=False)
    bad = make_history().get("grad_norm").copy()
    bad[5:, :] = np.inf  # exploded
    bad[:, 0] = np.nan  # a layer with no weights
    bad[2, 1] = 0.0  # log scale cannot show zero
    h.append(np.arange(20, 40), {"grad_norm": bad, "backprop": np.full((20, 3), np.nan), "weight_norm": bad})
    h.histograms["start"] = {"step": 0, "ranges": np.array([[np.nan, np.nan], [0, 1], [0, 1]]),
                             "counts": np.array([[1.0, 2.0], [np.nan, 3.0], [0.0, 0.0]])}
    # Saving is part of the test: Agg must cope with what is left after NaN, inf and 0 are dropped.
    for fn in (plot_grad_norms, plot_depth_profile, plot_activation_histograms):
        assert_png(fn(h, tmp_path / f"{fn.__name__}.png"))
    assert_png(plot_comparison({"bad": h, "good": make_history()}, tmp_path / "cmp.png"))

    # What is drawn: what a log axis can show, with gaps where it cannot.
    ax = grad_norms_figure(h).axes[0]
    assert ax.get_yscale() == "log"
    raw = {line.get_label(): line.get_ydata() for line in ax.lines}
    assert np.isnan(raw["_raw dense_0"][20:]).all() and np.isnan(raw["dense_0"][20:]).all()  # weightless: nothing
    shown = np.isfinite(raw["_raw dense_1"])
    assert np.flatnonzero(~shown).tolist() == [22, *range(25, 40)]  # the zero, then inf from step 25 on
    np.testing.assert_allclose(raw["_raw dense_1"][shown], h["grad_norm"][shown, 1])
    # The smoothed line has the same gaps, and skips them: the zero does not drag it down.
    assert np.flatnonzero(~np.isfinite(raw["dense_1"])).tolist() == [22, *range(25, 40)]
    assert raw["dense_1"][23] == pytest.approx(smooth(np.delete(h["grad_norm"][:24, 1], 22), 0.5)[22])
    # A moment with no finite value says so rather than vanishing silently.
    for ax in depth_profile_figure(h).axes:
        assert [line.get_label() for line in ax.lines] == ["step 0", "step 4", "step 19", "step 39 (no finite value)"]
    axes = np.array(activation_histograms_figure(h).axes).reshape(3, 2)
    assert texts(axes[0, 0]) == ["no data"] and texts(axes[2, 0]) == ["no data"]  # NaN range; no counts
    assert [p.get_height() for p in axes[1, 0].patches] == [0.0, 1.0]  # the NaN bin counts as empty
    # The blown-up run is compared at its last row with a finite value, not its last row.
    depth_ax, _ = comparison_figure({"bad": h, "good": make_history()}).axes
    np.testing.assert_allclose(depth_ax.lines[0].get_ydata(), h["backprop"][19])


def test_all_nan_and_empty_histories_render(tmp_path: Path) -> None:
    h = GradientHistory(["a", "b"])
    h.append([0, 1], {"grad_norm": np.full((2, 2), np.nan)})
    assert_png(plot_grad_norms(h, tmp_path / "nan.png"))
    assert_png(plot_depth_profile(h, tmp_path / "nan_d.png"))
    # Nothing to show on a log axis: a linear axis that says so, and no empty legend.
    for ax in (grad_norms_figure(h).axes[0], depth_profile_figure(h).axes[0]):
        assert texts(ax) == ["no finite positive grad_norm"]
        assert ax.get_yscale() == "linear" and ax.get_legend() is None
    empty = GradientHistory(["a"])
    names = [p.name for p in save_run_plots(empty, tmp_path / "empty")]
    assert names == ["grad_norms.png", "depth_profile.png"]
    assert not grad_norms_figure(empty).axes[0].lines


@pytest.mark.slow
def test_save_run_plots(tmp_path: Path) -> None:
    h = make_history()
    h.save(tmp_path)
    paths = save_run_plots(load_run(tmp_path), tmp_path)  # histograms survive the round trip
    assert [p.name for p in paths] == [
        "grad_norms.png", "backprop_norms.png", "depth_profile.png", "activation_histograms.png",
    ]
    assert all(p.parent == tmp_path / PLOTS_DIR for p in paths)
    for p in paths:
        assert_png(p)
    names = [p.name for p in save_run_plots(make_history(backprop=False, histograms=False), tmp_path / "b")]
    assert names == ["grad_norms.png", "depth_profile.png"]


@pytest.mark.slow
def test_no_tensorflow_and_no_pyplot(tmp_path: Path) -> None:
    # A fresh interpreter on this tree's package, which must not import TensorFlow
    # for a saved run to be drawn again where TensorFlow is not installed.
    code = f"""
import sys
import numpy as np
import gradscope.render.plots as plots
from gradscope.history import GradientHistory
assert plots.__file__.startswith({str(ROOT)!r}), plots.__file__
h = GradientHistory(["a", "b"])
h.append([0, 1, 2], {{"grad_norm": np.ones((3, 2))}})
plots.save_run_plots(h, {str(tmp_path)!r})
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert_png(tmp_path / PLOTS_DIR / "grad_norms.png")
