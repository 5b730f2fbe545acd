"""The rich renderers, rendered to text; they read records only."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from gradscope.diagnosis import diagnose
from gradscope.history import GradientHistory
from gradscope.render.terminal import fmt, layer_table, print_summary


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
    h.append(np.arange(steps), {"grad_norm": bp * 2, "backprop": bp, "saturation": np.tile([0.5, 0.5, 0.0], (steps, 1))},
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
