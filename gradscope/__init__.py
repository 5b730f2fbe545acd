"""gradscope: see vanishing and exploding gradients in Keras models.

The data path, one way only::

    model.fit / gradscope.train
      -> hooks.py      (wrappers on layer.call, compute_loss, optimizer.apply)
      -> staging.py    (what the hooks hand over, kept while the step is traced)
      -> stats.py      (in-graph statistics: a few numbers per layer)
      -> recorder.py   (one row per step in a device-side ring; RowLayout)
      -> session.py    (RecordingSession: attach, flush rows into the history, detach)
      -> monitor.py    (GradientMonitor: the Keras callback that drives a session)
      -> history.py    (GradientHistory: the plain numpy record, saved/loaded)
      -> diagnosis/    (rules as objects -> verdicts with cause and remedy)
      -> render/       (terminal.py tables, live.py live view, plots.py: records only)

Only `GradientHistory`, `load_run` and the renderers work without TensorFlow;
the names that need it are imported lazily.
"""

from __future__ import annotations

from typing import Any

from gradscope.history import GradientHistory, load_run

__version__ = "0.1.0"  # the one place the version is set; pyproject.toml reads it
__all__ = ["GradientHistory", "GradientMonitor", "NonFiniteGradientError", "load_run", "train", "diagnose", "inspect"]


def __getattr__(name: str) -> Any:
    # TensorFlow takes seconds to import; only pay for it when it is needed.
    if name in ("GradientMonitor", "NonFiniteGradientError"):
        from gradscope import monitor

        return getattr(monitor, name)
    if name == "train":
        from gradscope.loop import train

        return train
    if name == "inspect":
        from gradscope.inspection import inspect

        return inspect
    if name == "diagnose":
        from gradscope.diagnosis import diagnose

        return diagnose
    raise AttributeError(f"module 'gradscope' has no attribute {name!r}")
