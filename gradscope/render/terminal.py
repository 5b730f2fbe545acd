"""rich renderers: the live per-layer view while training, and the summary.

They read a `GradientHistory` (and a `Diagnosis`), never a model, and import
no TensorFlow. On a terminal the live view is a progress bar plus a table
refreshed a few times a second; elsewhere (CI, pipes) it prints plain lines.

Example:

>>> from rich.console import Console
>>> print_summary(history, diagnose(history), console=Console(width=100))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
from rich.console import Console, Group
from rich.live import Live
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


class LiveView:
    """What the person watches while a model trains.

    Args:
        history: the history being filled; the view reads its last row.
        params: Keras' callback params (``epochs``, ``batch_size``), with
            ``total_steps``, the steps of this fit (the monitor adds it).
        console: where to draw. Defaults to a new `Console()`.
        keras_bar: Keras' own progress bar is on, so draw a table per epoch
            instead of a live display that would fight it.
        get_time: the clock, injectable for tests.
    """

    refresh_seconds = 0.25
    line_seconds = 5.0

    def __init__(
        self,
        history: GradientHistory,
        params: dict[str, Any],
        console: Console | None = None,
        keras_bar: bool = False,
        get_time: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history = history
        self.params = params
        self.console = console or default_console()
        self.keras_bar = keras_bar
        self.get_time = get_time
        self.live = self.console.is_terminal and not keras_bar
        self._live: Live | None = None
        self._start = get_time()
        self._first_row = len(history)
        self._last_line = -float("inf")
        self._epoch = 0
        #: Training steps done in this fit; the monitor sets it (rows can be
        #: fewer than steps when it records every N-th step).
        self.steps_done: int | None = None

    def start(self) -> None:
        self._start = self.get_time()
        self._first_row = len(self.history)
        if self.live:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()

    def stop(self) -> None:
        if not self.live and not self.keras_bar:
            self._plain_line(force=True)  # the final state, whatever the clock says
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _done(self) -> int:
        return self.steps_done if self.steps_done is not None else len(self.history) - self._first_row


    def status(self) -> str:
        """'epoch 1/3  step 120/400  loss 0.0812  acc 41.2%  2,930 samples/s  ETA 0:09'."""
        h = self.history
        done, total = self._done(), self.params.get("total_steps")
        elapsed = max(self.get_time() - self._start, 1e-9)
        parts = [f"epoch {self._epoch + 1}/{self.params.get('epochs', '?')}"]
        parts.append(f"step {done}/{total}" if total else f"step {done}")
        if len(h):
            loss = h.scalars.get("loss")
            acc = h.scalars.get("accuracy")
            if loss is not None and math.isfinite(loss[-1]):
                parts.append(f"loss {fmt(loss[-1], 4)}")
            if acc is not None and math.isfinite(acc[-1]):
                parts.append(f"acc {acc[-1]:.1%}")
        batch = self.params.get("batch_size")
        if batch and done:
            parts.append(f"{done * batch / elapsed:,.0f} samples/s")
        if total and done:
            remaining = elapsed / done * max(total - done, 0)
            parts.append(f"ETA {int(remaining // 60)}:{int(remaining % 60):02d}")
        return "  ".join(parts)

    def _render(self) -> Group:
        h = self.history
        total, done = self.params.get("total_steps"), self._done()
        bar = ""
        if total:
            width = 30
            filled = int(width * min(done / total, 1.0))
            bar = "[" + "#" * filled + "-" * (width - filled) + "] "
        return Group(Text(bar + self.status()), layer_table(h))

    def update(self, epoch: int, batch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._live is not None:
            self._live.update(self._render())
        elif not self.keras_bar:
            self._plain_line()

    def epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._live is not None:
            self._live.update(self._render())
            return
        if self.keras_bar:
            self.console.print(layer_table(self.history, title=f"gradscope, epoch {epoch + 1}"))
        else:
            self._plain_line()

    def _plain_line(self, force: bool = False) -> None:
        """Not a terminal: a status line at most every few seconds, no animation."""
        now = self.get_time()
        if force or now - self._last_line >= self.line_seconds:
            self._last_line = now
            self.console.print(self.status(), highlight=False)


def summary_table(history: GradientHistory, diagnosis: Diagnosis) -> Table:
    """Layer, shape, params, activation, first/last grad norm, ratio, verdict."""
    table = Table(title="gradscope summary", title_justify="left")
    for col in ("#", "layer", "shape", "params", "activation", "grad first", "grad last", "ratio to output", "sat.", "dead", "f'(s)", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "shape", "activation", "verdict") else "right")
    for li, (v, info) in enumerate(zip(diagnosis.layers, history.layer_info)):
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
