"""A reproduction's table and figures, drawn from a record built by hand: text and lines checked."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from gradscope.render.claims import plot_reproduction, print_reproduction, reproduction_figure
from gradscope.reproduction import Claim, Figure, Reproduction, Series


def record() -> Reproduction:
    claims = [Claim("5 tanh layers, standard init", "factor per layer", "sqrt(n Var W * E[tanh'(s)^2])", 0.577, 0.575),
              Claim("21 ReLU layers", "factor per layer", "sqrt(1/2)", 0.707, 0.80),
              Claim("30 ReLU layers, Glorot", "training", "0.707^29", theory_text="stalls",
                    measured_text="accuracy 11%; findings: vanishing", holds=True)]
    figure = Figure("backprop", "title", "hidden layer (1 = nearest the input)", "rms",
                    [Series("standard", [1.0, 2.0, 3.0], [0.33, 0.0, 1.0], [1 / 3, 0.577, 1.0]),
                     Series("steps", [1.0, 2.0, 3.0], [0.5, 0.6, 0.7])])
    return Reproduction("glorot2010", "Glorot & Bengio", claims, [figure], ["inputs: digits"],
                        {"full": False, "seed": 0, "wall_seconds": 4.2, "cpu_seconds": 5.0})


def text_of(rec: Reproduction) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_reproduction(rec, console)
    return console.file.getvalue()


def test_table_sets_theory_beside_measured_with_a_mark_and_the_tolerance():
    text = text_of(record())
    assert "glorot2010: Glorot & Bengio (2 of 3 claims agree)" in text
    for header in ("set-up", "quantity", "theory (formula)", "measured", "agree"):
        assert header in text
    rows = [line for line in text.splitlines() if "│" in line]
    standard = next(line for line in rows if "standard init" in line)
    # The formula's brackets are shown as they are, not read as markup.
    assert "0.577 (sqrt(n Var W * E[tanh'(s)^2]))" in standard and "0.575" in standard
    assert "✓ 0.35% off (within 5%)" in standard
    assert "✗ 13% off (within 5%)" in next(line for line in rows if "21 ReLU" in line)
    assert "✓ as claimed" in next(line for line in rows if "30 ReLU" in line) and "stated)" in text
    assert "inputs: digits" in text and "defaults, seed 0; took 4.2 s (5.0 s of CPU)" in text


def test_figure_draws_measured_and_theory_on_the_same_axes():
    fig = reproduction_figure(record().figures[0])
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["standard, measured", "standard, theory", "steps, measured"]
    assert lines["standard, theory"].get_linestyle() == "--"
    assert ax.get_yscale() == "log"
    # A measured 0 has no place on a log axis: it is drawn at the bottom edge, a tenth of the lowest value.
    assert lines["standard, measured"].get_ydata()[1] == np.float64(0.033)
    assert list(lines["standard, theory"].get_ydata()) == [1 / 3, 0.577, 1.0]


def test_plot_reproduction_writes_one_png_per_figure(tmp_path):
    paths = plot_reproduction(record(), tmp_path / "plots")
    assert [p.name for p in paths] == ["backprop.png"] and paths[0].stat().st_size > 1000
