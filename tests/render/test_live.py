"""The live view, fed progress by hand; it reads records only."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from gradscope.history import GradientHistory
from gradscope.render.live import LiveView, Progress


def _console(width=160):
    return Console(file=io.StringIO(), width=width, color_system=None)


def _history(steps=5):
    h = GradientHistory(["h1", "out"])
    h.append(np.arange(steps), {"grad_norm": np.ones((steps, 2))},
             {"loss": np.linspace(1, 0.5, steps), "accuracy": np.full(steps, 0.42)})
    return h


def test_live_view_status_with_injected_clock():
    clock = iter([0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    h = GradientHistory(["a"])
    view = LiveView({"epochs": 3, "total_steps": 100, "batch_size": 10}, console=_console(),
                    get_time=lambda: next(clock))
    view.start(Progress(h, steps_done=0))
    h.append(np.arange(20), {"grad_norm": np.ones((20, 1))}, {"loss": np.full(20, 0.25), "accuracy": np.full(20, 0.5)})
    status = view.status(Progress(h, steps_done=20))
    # 20 steps x 10 samples in 2 s = 100 samples/s; 80 steps left at 0.1 s each = 8 s.
    assert status == "epoch 1/3  step 20/100  loss 0.25  acc 50.0%  100 samples/s  ETA 0:08"


def test_plain_lines_off_a_terminal():
    console = _console()
    h = _history(5)
    view = LiveView({"epochs": 1, "total_steps": 5}, console=console, get_time=lambda: 100.0)
    assert not view.live  # a StringIO is not a terminal: no animation
    view.start(Progress(h, steps_done=0))
    view.epoch_end(Progress(h, steps_done=0, epoch=0))
    assert console.file.getvalue().startswith("epoch 1/1  step 0/5")


def test_plain_lines_are_throttled_but_the_last_one_is_printed():
    console = _console()
    now = [0.0]
    h = _history(5)
    view = LiveView({"epochs": 4, "total_steps": 5}, console=console, get_time=lambda: now[0])
    view.start(Progress(h, steps_done=0))
    for epoch, t in enumerate([0.0, 1.0, 2.0, 9.0]):  # a line at most every 5 s
        now[0] = t
        view.epoch_end(Progress(h, steps_done=epoch + 1, epoch=epoch))
    now[0] = 9.5
    view.stop(Progress(h, steps_done=5, epoch=3))
    lines = console.file.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["step 1/5", "step 4/5", "step 5/5"]


def test_beside_keras_bar_a_table_per_epoch_and_no_status_lines():
    console = _console()
    h = _history(5)
    view = LiveView({"epochs": 2, "total_steps": 5}, console=console, keras_bar=True, get_time=lambda: 0.0)
    view.start(Progress(h, steps_done=0))
    view.update(Progress(h, steps_done=2))
    assert console.file.getvalue() == ""
    view.epoch_end(Progress(h, steps_done=5, epoch=1))
    view.stop(Progress(h, steps_done=5, epoch=1))
    text = console.file.getvalue()
    assert text.count("gradscope, epoch 2") == 1 and "step" not in text
