"""The rich renderers, rendered to text; they read records only."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from gradscope.diagnosis import diagnose
from gradscope.history import GradientHistory
from gradscope.render.terminal import (
    comparison_table,
    derivatives_table,
    fmt,
    layer_table,
    model_table,
    print_comparison,
    print_derivatives,
    print_summary,
)

ROOT = Path(__file__).resolve().parents[2]


def _console(width=160):
    return Console(file=io.StringIO(), width=width, color_system=None)


def _history(steps=60):
    h = GradientHistory(
        ["h1", "h2", "out"],
        layer_info=[{"name": "h1", "units": 64, "activation": "sigmoid", "params": 4160, "output_shape": "(None, 64)"},
                    {"name": "h2", "units": 32, "activation": "sigmoid", "params": 2080, "output_shape": "(None, 32)"},
                    {"name": "out", "units": 10, "activation": "tanh", "params": 330, "output_shape": "(None, 10)"}],
    )
    bp = np.tile([0.001, 0.02, 1.0], (steps, 1))
    sat = np.tile([0.5, 0.5, 0.0], (steps, 1))
    h.append(np.arange(steps), {"grad_norm": bp * 2, "backprop": bp, "saturation": sat},
             {"loss": np.linspace(1, 0.5, steps), "accuracy": np.full(steps, 0.42)})
    return h


def test_summary_names_layers_verdicts_rules_and_remedies():
    console = _console()
    h = _history()
    print_summary(h, diagnose(h), console=console)
    text = console.file.getvalue()
    assert "gradscope summary" in text
    row1 = next(line for line in text.splitlines() if " h1 " in line)
    assert "4,160" in row1 and "sigmoid" in row1 and "1.00e-03" in row1 and "vanishing" in row1
    row_out = next(line for line in text.splitlines() if " out " in line)
    assert "healthy" in row_out
    assert "6,570 trainable parameters" in text
    assert "layer 1 gets 1/1000 of the output layer's back-propagated gradient." in text
    assert "[vanishing]" in text and "[saturated]" in text  # rule names are not eaten as markup
    assert "Remedy: use ReLU in the hidden layers" in text
    assert "final training loss" in text and "accuracy 42.0%" in text


def test_layer_table_shows_ratio_to_output():
    console = _console()
    console.print(layer_table(_history(), row=-1))
    text = console.file.getvalue()
    line = next(line for line in text.splitlines() if " h2 " in line)
    assert "0.02" in line and "32" in line and "50%" in line


def test_fmt():
    assert fmt(4.5e-7) == "4.50e-07" and fmt(0.1234) == "0.123" and fmt(float("nan")) == "-"


def _cells(text, first):
    """The cells of the table row (or header) whose first non-empty cells are ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[\u2502\u2503]", line)[1:-1]]  # light and heavy (header) rules
        if [c for c in cells if c][: len(first)] == first:
            return cells
    raise AssertionError(f"no row starting {first} in\n{text}")


def test_model_table_lists_each_layers_parameters_and_the_total():
    record = {"name": "lecture_mlp", "total_params": 610, "layers": [
        {"name": "hidden_1", "output_shape": "(None, 8)", "activation": "tanh", "params": 520},
        {"name": "output", "output_shape": "(None, 10)", "activation": None, "params": 90}]}
    console = _console(80)
    console.print(model_table(record))
    text = console.file.getvalue()
    assert text.splitlines()[0].strip() == "model lecture_mlp"
    assert _cells(text, ["layer"]) == ["layer", "output shape", "activation", "params"]
    assert _cells(text, ["hidden_1"]) == ["hidden_1", "(None, 8)", "tanh", "520"]
    assert _cells(text, ["output"]) == ["output", "(None, 10)", "-", "90"]  # no activation: '-'
    assert text.splitlines()[-1].strip() == "total 610 parameters"
    big = {"name": "m", "total_params": 1_859_082, "layers": [
        {"name": "d", "output_shape": "(None, 1024)", "activation": "tanh", "params": 803_840}]}
    console = _console(80)
    console.print(model_table(big))
    assert "803,840" in console.file.getvalue() and "total 1,859,082 parameters" in console.file.getvalue()


def test_comparison_table_puts_each_configuration_beside_the_others():
    vanishing = _history()  # backprop 0.001, 0.02, 1: layer 1 gets 1/1000
    healthy = GradientHistory(["h1", "h2", "out"])
    healthy.append(np.arange(20), {"grad_norm": np.tile([0.25, 0.6, 1.0], (20, 1))}, {"loss": np.full(20, 0.125)})
    results = {"sigmoid/random_uniform": (vanishing, diagnose(vanishing)),
               "relu/he_normal": (healthy, diagnose(healthy))}
    console = _console(200)
    print_comparison(results, console)
    text = console.file.getvalue()
    assert text.splitlines()[0].strip() == "side by side (last step; ratio = verdict ratio to the output layer)"
    assert _cells(text, ["configuration"]) == [
        "configuration", "layer", "grad_norm", "backprop", "ratio", "saturated", "dead", "f'(s)", "verdict"]
    # grad_norm and backprop at the last step; the ratio is the verdict's (backprop, to the output).
    assert _cells(text, ["sigmoid/random_uniform"]) == [
        "sigmoid/random_uniform", "h1", "2.00e-03", "1.00e-03", "1.00e-03", "50%", "-", "-", "vanishing"]
    assert _cells(text, ["h2"])[1:6] == ["h2", "0.04", "0.02", "0.02", "50%"]
    # One [final] row per configuration ("[final]" not eaten as markup): the final loss (the
    # median of the last tenth of the steps: 1 - 0.5 * 56.5 / 59), the accuracy and the rules that fired.
    finals = [[c.strip() for c in line.split("\u2502")[1:-1]] for line in text.splitlines() if "[final]" in line]
    assert len(finals) == 2
    assert finals[0][:4] == ["", "[final]", "loss 0.5212", "acc 42.0%"] and finals[0][-1] == "vanishing, saturated"
    # The healthy run: no backprop recorded ('-'), ratios of grad_norm, no accuracy ('-').
    assert _cells(text, ["relu/he_normal"])[:6] == ["relu/he_normal", "h1", "0.25", "-", "0.25", "-"]
    assert finals[1][2:4] == ["loss 0.125", "-"] and finals[1][-1] == "healthy"
    # Then one sentence each, in the table's order.
    sentences = [line for line in text.splitlines() if line.endswith(".")]
    assert sentences == ["sigmoid/random_uniform: layer 1 gets 1/1000 of the output layer's back-propagated gradient.",
                         "relu/he_normal: layer 1 gets 1/4 of the output layer's gradient norm."]


def test_comparison_table_is_a_table_of_every_layer():
    h = _history()
    assert comparison_table({"a": (h, diagnose(h))}).row_count == 4  # 3 layers and [final]


def test_derivatives_table_with_and_without_the_float32_columns():
    rows = [{"s": 2.0, "tanh": 0.0706508, "sigmoid": 0.104994, "relu": 1.0},
            {"s": -0.5, "tanh": 0.786448, "sigmoid": 0.235004, "relu": 0.0}]
    float32 = [(2.0, 0.964027584, 0.0706508), (-0.5, -0.462117165, 0.786448)]
    console = _console(120)
    console.print(derivatives_table(rows, float32))
    text = console.file.getvalue()
    assert text.splitlines()[0].strip() == "activation derivatives f'(s), float64"
    assert _cells(text, ["s"]) == ["s", "tanh'(s)", "sigmoid'(s)", "ReLU'(s)", "tanh(s) float32",
                                   "tanh'(s) TF float32 autodiff"]
    assert _cells(text, ["2"]) == ["2", "7.07e-02", "1.05e-01", "1", "0.964027584", "7.07e-02"]
    assert _cells(text, ["-0.5"]) == ["-0.5", "7.86e-01", "2.35e-01", "0", "-0.462117165", "7.86e-01"]
    console = _console(120)
    console.print(derivatives_table(rows))
    assert _cells(console.file.getvalue(), ["s"]) == ["s", "tanh'(s)", "sigmoid'(s)", "ReLU'(s)"]


def test_print_derivatives_explains_the_chain_and_float32_rounding():
    rows = [{"s": 8.0, "tanh": 4.50140e-07, "sigmoid": 3.35e-04, "relu": 1.0}]
    console = _console(300)
    print_derivatives(rows, console, 0.0706508**5, float32=[(8.0, 1.0, 0.0)])
    text = console.file.getvalue()
    assert _cells(text, ["8"]) == ["8", "4.50e-07", "3.35e-04", "1", "1", "0"]  # an exact 0, not 0.00e+00
    assert ("five tanh layers at s = 2 pass 1.8e-06 of the gradient; ReLU passes 1 wherever it is active." in text)
    assert "rounds to exactly 1.0" in text
    # Where float32 tanh stays below 1 (or is not shown), the rounding note is left out.
    for float32 in ([(8.0, 0.99999, 1e-5)], None):
        console = _console(300)
        print_derivatives(rows, console, 1.8e-6, float32=float32)
        assert "rounds to exactly 1.0" not in console.file.getvalue()
        assert "of the gradient" in console.file.getvalue()


def test_terminal_imports_no_tensorflow():
    # A fresh interpreter on this tree's package: the renderers must work where TensorFlow is not installed.
    code = """
import sys
import numpy as np
import gradscope.render.terminal as terminal
from gradscope.diagnosis import diagnose
from gradscope.history import GradientHistory
from rich.console import Console
h = GradientHistory(["a", "b"])
h.append(range(5), {"grad_norm": np.ones((5, 2))})
console = Console(width=160)
terminal.print_summary(h, diagnose(h), console=console)
terminal.print_comparison({"x": (h, diagnose(h))}, console)
console.print(terminal.model_table({"name": "m", "total_params": 1, "layers": []}))
terminal.print_derivatives([{"s": 0.0, "tanh": 1.0, "sigmoid": 0.25, "relu": 0.0}], console, 1e-6)
assert terminal.__file__.startswith(sys.argv[1]), terminal.__file__
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_the_summary_does_not_call_an_early_recorded_step_final():
    h = GradientHistory(["h1", "out"], config={"last_step": 19})
    h.append([0], {"grad_norm": np.array([[0.5, 1.0]])}, {"loss": np.array([2.5]), "accuracy": np.array([0.1])})
    console = _console()
    print_summary(h, diagnose(h), console=console)
    text = console.file.getvalue()
    assert "final training loss" not in text
    assert "training loss at the last recorded steps (to step 0; training ran to step 19) 2.5, accuracy 10.0%" in text


def _deep_history(blocks=12, per_block=10, steps=40):
    """120 layers in 12 blocks of 10 (``block3_4``); the gradient of block 3 shrinks 1e-4 toward the input
    in layers 0-2 only, and block7_5 has half its units dead."""
    names = [f"block{b}_{i}" for b in range(blocks) for i in range(per_block)] + ["out"]
    grad = np.ones((steps, len(names)))
    for i, decades in ((30, 4), (31, 3), (32, 2)):
        grad[:, i] = 10.0 ** -decades
    dead = np.zeros((steps, len(names)))
    dead[:, 75] = 0.5
    h = GradientHistory(names, layer_info=[{"name": n, "units": 8, "params": 72, "activation": "relu"} for n in names])
    h.append(range(steps), {"grad_norm": grad, "dead": dead}, {"loss": np.full(steps, 0.5)})
    return h


def test_a_deep_live_table_shows_the_worst_layers_first_and_counts_the_hidden():
    h = _deep_history()
    console = _console(width=120)
    console.print(layer_table(h, max_layers=5))
    text = console.file.getvalue()
    shown = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    # Block 3's three worst, worst first, together; then the half-dead layer's block.
    assert shown[:4] == ["block3_0", "block3_1", "block3_2", "block7_5"]
    assert len(shown) == 5
    assert "116 of 121 layers hidden: the 5 worst are shown, worst first, grouped by block" in " ".join(text.split())
    # Up to the limit: every layer, in forward order, no hidden line.
    small = _console(width=120)
    small.print(layer_table(h, max_layers=None))
    rows = [line.split("│")[1].strip() for line in small.file.getvalue().splitlines() if line.startswith("│")]
    assert rows == h.layers and "hidden" not in small.file.getvalue()


def test_a_deep_summary_shows_the_flagged_layers_first():
    h = _deep_history()
    console = _console(width=220)
    print_summary(h, diagnose(h), console=console)
    text = console.file.getvalue()
    shown = [line.split("│")[2].strip() for line in text.splitlines() if line.startswith("│")]
    assert shown[:3] == ["block3_0", "block3_1", "block3_2"] and len(shown) == 30
    assert "91 of 121 layers hidden" in " ".join(text.split())
