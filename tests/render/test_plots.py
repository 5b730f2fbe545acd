"""Tests of the matplotlib renderers: records in, PNG files out, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradscope.history import PLOTS_DIR, GradientHistory, load_run
from gradscope.render import plots
from gradscope.render.plots import (
    activation_histograms_figure,
    comparison_figure,
    default_moments,
    depth_profile_figure,
    grad_norms_figure,
    pick_series,
    plot_activation_histograms,
    plot_comparison,
    plot_depth_profile,
    plot_grad_norms,
    save_run_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def make_history(n_layers: int = 3, n_steps: int = 20, backprop: bool = True, histograms: bool = True) -> GradientHistory:
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
    h = make_history(n_layers=4, n_steps=12)
    ax = grad_norms_figure(h).axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == h.layers
    for li, line in enumerate(ax.lines):
        np.testing.assert_array_equal(line.get_xdata(), h.steps)
        np.testing.assert_allclose(line.get_ydata(), h["grad_norm"][:, li])
    bp = grad_norms_figure(h, "backprop").axes[0]
    assert bp.get_ylabel() == "backprop"
    np.testing.assert_allclose(bp.lines[0].get_ydata(), h["backprop"][:, 0])


def test_depth_profile_figure_draws_grad_norm_and_backprop_against_depth() -> None:
    h = make_history(n_layers=4, n_steps=21)
    fig = depth_profile_figure(h)
    assert [ax.get_ylabel() for ax in fig.axes] == ["grad_norm", "backprop"]
    moments = default_moments(h.steps)  # steps 0, 2, 10, 20
    for ax in fig.axes:
        series = h[ax.get_ylabel()]
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
    assert [ax.get_ylabel() for ax in depth_profile_figure(make_history(backprop=False)).axes] == ["grad_norm"]


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


def test_plot_grad_norms_many_layers_uses_colour_bar(tmp_path: Path) -> None:
    assert_png(plot_grad_norms(make_history(n_layers=30, histograms=False), tmp_path / "g30.png"))


def test_plot_depth_profile_default_and_fallback(tmp_path: Path) -> None:
    assert_png(plot_depth_profile(make_history(), tmp_path / "d.png"))
    assert_png(plot_depth_profile(make_history(backprop=False), tmp_path / "d_fallback.png"))
    assert_png(plot_depth_profile(make_history(), tmp_path / "d_moments.png", moments=[3, 3, 19, 500]))


def test_plot_activation_histograms(tmp_path: Path) -> None:
    assert_png(plot_activation_histograms(make_history(), tmp_path / "a.png"))
    assert plot_activation_histograms(make_history(histograms=False), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_plot_activation_histograms_only_start(tmp_path: Path) -> None:
    h = make_history()
    del h.histograms["end"]
    assert_png(plot_activation_histograms(h, tmp_path / "a_start.png"))


def test_plot_comparison(tmp_path: Path) -> None:
    runs = {"tanh": make_history(), "relu+he": make_history(n_layers=5, backprop=False)}
    assert_png(plot_comparison(runs, tmp_path / "c.png"))


def test_nan_and_inf_still_render(tmp_path: Path) -> None:
    h = make_history(histograms=False)
    bad = make_history().get("grad_norm").copy()
    bad[5:, :] = np.inf  # exploded
    bad[:, 0] = np.nan  # a layer with no weights
    bad[2, 1] = 0.0  # log scale cannot show zero
    h.append(np.arange(20, 40), {"grad_norm": bad, "backprop": np.full((20, 3), np.nan), "weight_norm": bad})
    h.histograms["start"] = {"step": 0, "ranges": np.array([[np.nan, np.nan], [0, 1], [0, 1]]),
                             "counts": np.array([[1.0, 2.0], [np.nan, 3.0], [0.0, 0.0]])}
    for fn in (plot_grad_norms, plot_depth_profile, plot_activation_histograms):
        assert_png(fn(h, tmp_path / f"{fn.__name__}.png"))
    assert_png(plot_comparison({"bad": h, "good": make_history()}, tmp_path / "cmp.png"))


def test_all_nan_and_empty_histories_render(tmp_path: Path) -> None:
    h = GradientHistory(["a", "b"])
    h.append([0, 1], {"grad_norm": np.full((2, 2), np.nan)})
    assert_png(plot_grad_norms(h, tmp_path / "nan.png"))
    assert_png(plot_depth_profile(h, tmp_path / "nan_d.png"))
    empty = GradientHistory(["a"])
    assert len(save_run_plots(empty, tmp_path / "empty")) == 2  # grad_norms, depth_profile


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


def test_plots_dir_matches_history() -> None:
    assert plots.PLOTS_DIR == PLOTS_DIR


def test_no_tensorflow_and_no_pyplot(tmp_path: Path) -> None:
    # Load history.py and plots.py by file path, so the check holds even if
    # gradscope/__init__.py starts importing TensorFlow one day.
    code = f"""
import importlib.util, sys
import numpy as np

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

history = load("gs_history", {str(ROOT / 'gradscope' / 'history.py')!r})
plots = load("gs_plots", {str(ROOT / 'gradscope' / 'render' / 'plots.py')!r})
h = history.GradientHistory(["a", "b"])
h.append([0, 1, 2], {{"grad_norm": np.ones((3, 2))}})
plots.save_run_plots(h, {str(tmp_path)!r})
assert "gradscope" not in sys.modules, "plots.py imported the gradscope package"
assert "tensorflow" not in sys.modules, "tensorflow was imported"
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert_png(tmp_path / PLOTS_DIR / "grad_norms.png")
