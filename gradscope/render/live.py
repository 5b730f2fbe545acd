"""The live view: what a person watches while a model trains.

It is fed, never reached into: the monitor hands it a `Progress` (the
history, the steps done, the epoch) after each fetch of rows from the device,
at each epoch end and at the end of training. On a terminal it is a progress
bar plus the per-layer table, redrawn in place; elsewhere (CI, pipes) it
prints a plain status line every few seconds. It reads records only.

Example:

>>> from rich.console import Console
>>> from gradscope.history import GradientHistory
>>> view = LiveView({"epochs": 1, "total_steps": 10}, console=Console(width=100))
>>> view.status(Progress(GradientHistory(["dense"]), steps_done=0, epoch=0))
'epoch 1/1  step 0/10'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from gradscope.history import GradientHistory
from gradscope.render.terminal import default_console, fmt, layer_table


@dataclass(frozen=True)
class Progress:
    """Where training stands: what the view shows.

    Args:
        history: the record so far; the view reads its last row.
        steps_done: training steps of this fit so far (rows can be fewer
            when every N-th step is recorded).
        epoch: the current epoch, from 0.
    """

    history: GradientHistory
    steps_done: int
    epoch: int = 0


class LiveView:
    """A progress bar and the per-layer table while training.

    Args:
        params: Keras' callback params (``epochs``, ``batch_size``), with
            ``total_steps``, the steps of this fit, when known.
        console: where to draw. Defaults to standard output.
        keras_bar: Keras' own progress bar is on, so draw a table per epoch
            instead of a live display that would fight it.
        get_time: the clock, injectable for tests.
    """

    refresh_seconds = 0.25
    line_seconds = 5.0

    def __init__(
        self,
        params: dict[str, Any],
        console: Console | None = None,
        keras_bar: bool = False,
        get_time: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = dict(params)
        self.console = console or default_console()
        self.keras_bar = keras_bar
        self.get_time = get_time
        self.live = self.console.is_terminal and not keras_bar
        self._live: Live | None = None
        self._start = get_time()
        self._last_line = -float("inf")

    def start(self, progress: Progress) -> None:
        """Starts the clock (and, on a terminal, the live display)."""
        self._start = self.get_time()
        if self.live:
            self._live = Live(self._render(progress), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()

    def update(self, progress: Progress) -> None:
        """Fresh rows arrived: redraw (on a terminal) or maybe print a line."""
        if self._live is not None:
            self._live.update(self._render(progress))
        elif not self.keras_bar:
            self._plain_line(progress)

    def epoch_end(self, progress: Progress) -> None:
        """An epoch ended; beside Keras' bar, that is when the table is printed."""
        if self._live is not None:
            self._live.update(self._render(progress))
        elif self.keras_bar:
            self.console.print(layer_table(progress.history, title=f"gradscope, epoch {progress.epoch + 1}"))
        else:
            self._plain_line(progress)

    def stop(self, progress: Progress) -> None:
        """Training ended: the final state is shown whatever the clock says."""
        if not self.live and not self.keras_bar:
            self._plain_line(progress, force=True)
        if self._live is not None:
            self._live.update(self._render(progress))
            self._live.stop()
            self._live = None

    def status(self, progress: Progress) -> str:
        """'epoch 1/3  step 120/400  loss 0.0812  acc 41.2%  2,930 samples/s  ETA 0:09'."""
        h = progress.history
        done, total = progress.steps_done, self.params.get("total_steps")
        elapsed = max(self.get_time() - self._start, 1e-9)
        parts = [f"epoch {progress.epoch + 1}/{self.params.get('epochs', '?')}"]
        parts.append(f"step {done}/{total}" if total else f"step {done}")
        if len(h):
            h = h.since(len(h) - 1)  # the last row only: of a streamed record, from memory
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

    def _render(self, progress: Progress) -> Group:
        total, done = self.params.get("total_steps"), progress.steps_done
        bar = ""
        if total:
            width = 30
            filled = int(width * min(done / total, 1.0))
            bar = "[" + "#" * filled + "-" * (width - filled) + "] "
        return Group(Text(bar + self.status(progress)), layer_table(progress.history))

    def _plain_line(self, progress: Progress, force: bool = False) -> None:
        """Not a terminal: a status line at most every few seconds, no animation."""
        now = self.get_time()
        if force or now - self._last_line >= self.line_seconds:
            self._last_line = now
            self.console.print(self.status(progress), highlight=False)
