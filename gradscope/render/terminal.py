"""rich renderers of records: the per-layer table and the end-of-run summary.

They read a `GradientHistory` (and a `Diagnosis`), never a model, and import
no TensorFlow. The view shown while training is in `gradscope.render.live`.

Example:

>>> from rich.console import Console
>>> print_summary(history, diagnose(history), console=Console(width=100))  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradscope.diagnosis import Diagnosis
from gradscope.history import GradientHistory

_VERDICT_STYLE = {"healthy": "green", "vanishing": "yellow", "exploding": "red", "non-finite": "bold red"}


def default_console() -> Console:
    """A console for standard output; off a terminal rich assumes 80
    columns, too narrow for the summary table, so use 140 there."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def fmt(x: float, digits: int = 3) -> str:
    """A compact number: '1.23e-05', '0.456', 'nan'."""
    if x is None or not isinstance(x, (int, float, np.floating)) or not math.isfinite(float(x)):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
    x = float(x)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def layer_table(history: GradientHistory, row: int = -1, title: str | None = None) -> Table:
    """Layer, units, grad_norm, back-propagated gradient and ratio to the output, at one row."""
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("layer", "units", "grad_norm", "backprop", "ratio to output", "saturation", "dead"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    if not len(history):
        return table
    grad = history["grad_norm"][row]
    bp = history.get("backprop")
    bp_row = bp[row] if bp is not None else np.full(len(history.layers), np.nan)
    ref = bp_row if np.isfinite(bp_row[-1]) and bp_row[-1] > 0 else grad
    sat = history.get("saturation")
    dead = history.get("dead")
    units = history.info("units")
    for li, name in enumerate(history.layers):
        ratio = ref[li] / ref[-1] if ref[-1] else float("nan")
        table.add_row(
            name,
            str(units[li] or "-"),
            fmt(grad[li]),
            fmt(bp_row[li]),
            fmt(ratio),
            pct(sat[row, li]) if sat is not None else "-",
            pct(dead[row, li]) if dead is not None else "-",
        )
    return table


def pct(x: float) -> str:
    """'42%', or '-' where the value was not measured."""
    return f"{x:.0%}" if math.isfinite(x) else "-"


def summary_table(history: GradientHistory, diagnosis: Diagnosis) -> Table:
    """Layer, shape, params, activation, first/last grad norm, ratio, verdict."""
    table = Table(title="gradscope summary", title_justify="left")
    for col in ("#", "layer", "shape", "params", "activation", "grad first", "grad last", "ratio to output", "sat.", "dead", "f'(s)", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "shape", "activation", "verdict") else "right")
    for li, (v, info) in enumerate(zip(diagnosis.layers, history.layer_info, strict=False)):
        style = _VERDICT_STYLE.get(v.verdict, "")
        table.add_row(
            str(li + 1),
            v.name,
            str(info.get("output_shape") or "-"),
            f"{info.get('params', 0):,}",
            str(v.activation or "-"),
            fmt(v.grad_first),
            fmt(v.grad_last),
            fmt(v.ratio),
            pct(v.saturation),
            pct(v.dead),
            fmt(v.dact_mean),
            Text(v.verdict, style=style),
        )
    total = sum(int(i.get("params") or 0) for i in history.layer_info)
    table.caption = (
        f"{total:,} trainable parameters; ratio = {diagnosis.measure} relative to the output layer, median over the "
        f"first or the last tenth of {len(history)} recorded steps, whichever is further from 1"
    )
    return table


def print_summary(history: GradientHistory, diagnosis: Diagnosis, console: Console | None = None) -> None:
    """Prints the summary table and the diagnosis in words."""
    console = console or default_console()
    console.print(summary_table(history, diagnosis))
    loss, acc = diagnosis.final_loss, diagnosis.final_accuracy
    if math.isfinite(loss):
        console.print(f"final training loss {fmt(loss, 4)}" + (f", accuracy {acc:.1%}" if math.isfinite(acc) else ""), highlight=False)
    console.print(Text("Diagnosis", style="bold"))
    for sentence in diagnosis.sentences():
        # markup=False: "[vanishing]" is the rule's name, not a rich style tag.
        console.print("  " + sentence, highlight=False, markup=False)


if __name__ == "__main__":  # a small demo without TensorFlow
    from gradscope.diagnosis import diagnose

    demo = GradientHistory(["dense", "dense_1", "dense_2"], layer_info=[{"units": 8}, {"units": 8}, {"units": 2}])
    steps = np.arange(50)
    bp = np.array([0.01, 0.1, 1.0]) * np.exp(-steps / 100)[:, None]
    demo.append(steps, {"grad_norm": bp * 3, "backprop": bp}, {"loss": np.exp(-steps / 30)})
    print_summary(demo, diagnose(demo))
