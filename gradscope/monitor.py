"""`GradientMonitor`: the Keras callback that records every step's gradients.

It is the thin Keras face of a `RecordingSession` (which owns the hooks, the
recorder and the history): it attaches the session when ``fit`` begins,
fetches rows now and then, feeds the live view, applies the non-finite
policy and detaches at the end. `gradscope.train` drives the same callback.
The measured data flows one way:

    hooks (in the graph) -> Recorder (device ring) -> RecordingSession.flush
    -> GradientHistory -> diagnosis / renderers
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from gradscope.cluster import is_chief
from gradscope.diagnosis import Diagnosis, NonFinite
from gradscope.history import GradientHistory
from gradscope.model_layers import is_built
from gradscope.render.live import LiveView, Progress
from gradscope.session import RecordingOptions, RecordingSession, notice, whole_number

_POLICIES = ("warn", "stop", "raise")


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``GradientMonitor(on_nonfinite="raise")``; ``.report`` says where."""

    def __init__(self, report: NonFinite) -> None:
        super().__init__(report.sentence())
        self.report = report


@dataclass
class FitSteps:
    """Where one ``fit`` call stands, in steps and epochs."""

    total: int | None = None  # the steps this fit will run; None when unknown
    done: int = 0
    since_flush: int = 0
    epoch: int = 0
    epoch_first_row: int = 0  # the history's row count when the epoch began
    start_rows: int = 0  # ... and when the fit began
    attached: bool = False  # the model was hooked for this fit
    evaluation_offset: int = 0  # the record's last evaluated step, when one history spans several fits

    @classmethod
    def begin(cls, params: dict[str, Any], rows: int) -> FitSteps:
        # gradscope.train gives total_steps; fit gives steps per epoch and
        # epochs; an endless dataset gives neither.
        total = params.get("total_steps") or ((params.get("steps") or 0) * (params.get("epochs") or 0)) or None
        return cls(total=total, epoch_first_row=rows, start_rows=rows)

    def next_is_last(self, steps: int) -> bool:
        """The next call (of ``steps`` steps) ends the fit."""
        return self.total is not None and self.done + steps >= self.total


@dataclass(frozen=True)
class NonFinitePolicy:
    """What a monitor does when its record first goes NaN or Inf: `"warn"`, `"stop"` or `"raise"`."""

    action: str = "warn"

    def __post_init__(self) -> None:
        if self.action not in _POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(_POLICIES)}; got {self.action!r}")

    def apply(self, report: NonFinite, monitor: GradientMonitor) -> None:
        """Says where it started, and stops training or raises as the policy says."""
        if self.action == "raise":
            monitor.detach()  # Keras skips on_train_end when a callback raises
            raise NonFiniteGradientError(report)
        notice("gradscope: " + report.sentence())
        if self.action == "stop" and monitor.model is not None:
            monitor.model.stop_training = True


class GradientMonitor(keras.callbacks.Callback):
    """Records the gradients `fit` applies, for every layer, at every step.

    Add it to ``fit``'s callbacks; nothing in the model changes. While
    training, wrappers on the model's instances see the very gradients the
    optimizer applies (unscaled under mixed precision) and the gradient that
    reaches each layer's output, reduced to a few numbers per layer inside
    the compiled step and fetched in batches.

    Each epoch end adds ``grad_norm/<layer>`` (the epoch's mean) to the logs
    for `History`, `CSVLogger` and `TensorBoard`: put the monitor before them.
    For every step in TensorBoard, give it a log folder (``tensorboard=``).

    Args:
        every: record every N-th step. Defaults to `1`.
        layers: names of the layers to watch (one name may be a string), or a
            function ``layer -> bool``. Defaults to `None`, every layer with trainable weights.
        verbose: `0` silent; `1` a live per-layer table while training and
            the summary with its verdict at the end; `2` the live view only. Defaults to `0`.
        on_nonfinite: on NaN/Inf, `"warn"` says where it started, `"stop"` also
            stops training, `"raise"` raises `NonFiniteGradientError`. Defaults to `"warn"`.
        continue_history: keep one history across ``fit`` calls on the same
            model. Defaults to `True`.
        activation_stats: record each layer's output statistics and histograms;
            `False` keeps gradients, weights and loss only. Defaults to `True`.
        weights_every: measure the weight and update norms on every N-th
            recorded step only (NaN on the others). Defaults to `1`.
        saturation_threshold: |a| at or above which a tanh unit counts as
            saturated (sigmoid: a >= it or a <= 1 - it). Defaults to `0.99`.
        flush_every: steps between two fetches from the device. Defaults to `256`.
        evaluate_every: on long epochs, also record the training loss and accuracy every N steps within an
            epoch (`gradscope.train` evaluates its validation data then too); every epoch end is recorded
            anyway, with fit's ``val_*`` logs (``history.evaluations``). Defaults to `None` (epoch ends only).
        console: a `rich.console.Console` for the output. Defaults to standard output.
        tensorboard: a folder to write TensorBoard event files into, e.g. `"logs/run1"`:
            every recorded step's scalars per layer, the activation histograms and
            the verdict, written from the record each time rows are fetched (tags
            in docs/ecosystem.md). Defaults to `None`, none.
        stream_to: a run folder to write the record to while training, in
            chunks of ``flush_every`` rows, keeping only the newest rows in
            memory: memory stays flat however long the run, and a crash
            keeps every chunk written (`load_run` reads the folder). It
            must not hold a run already. Defaults to `None`, the whole
            record in memory.

    Raises:
        TypeError: an argument of the wrong kind, e.g. ``every=None``.
        ValueError: a value out of range, e.g. ``flush_every=0`` or ``saturation_threshold=5``.

    Example:

    >>> import numpy as np, keras
    >>> from gradscope import GradientMonitor
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
    ...                           keras.layers.Dense(2)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> monitor = GradientMonitor()
    >>> _ = model.fit(np.ones((32, 4)), np.ones((32, 2)), epochs=1, verbose=0, callbacks=[monitor])
    >>> monitor.history["grad_norm"].shape
    (1, 2)
    """

    def __init__(
        self,
        every: int = 1,
        layers: Iterable[str] | Callable[[Any], bool] | None = None,
        verbose: int = 0,
        on_nonfinite: str = "warn",
        continue_history: bool = True,
        activation_stats: bool = True,
        weights_every: int = 1,
        saturation_threshold: float = 0.99,
        flush_every: int = 256,
        console: Any = None,
        tensorboard: str | os.PathLike | None = None,
        stream_to: str | os.PathLike | None = None,
        evaluate_every: int | None = None,
    ) -> None:
        super().__init__()
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2; got {verbose!r}")
        #: The recording this callback drives: hooks, recorder and history.
        self.session = RecordingSession(RecordingOptions(
            every=every, weights_every=weights_every, activation_stats=activation_stats,
            saturation_threshold=saturation_threshold, flush_every=flush_every,
            layers=layers, continue_history=continue_history, stream_to=stream_to,
        ))
        #: Facts about the run for the history's config (the CLI's flags, say); set before ``fit``.
        self.config: dict[str, Any] = {}
        self.verbose = int(verbose)
        self.on_nonfinite = on_nonfinite
        self.nonfinite_policy = NonFinitePolicy(on_nonfinite)
        self.console = console
        #: The TensorBoard writer of ``tensorboard=``, or None.
        self.tensorboard = None
        if tensorboard is not None:
            if not isinstance(tensorboard, (str, os.PathLike)):
                raise TypeError(f"tensorboard must be a folder path (e.g. 'logs/run1') or None; "
                                f"got {type(tensorboard).__name__} {tensorboard!r}")
            from gradscope.render.tensorboard import TensorBoardWriter

            self.tensorboard = TensorBoardWriter(tensorboard)
        self.evaluate_every = None if evaluate_every is None else whole_number("evaluate_every", evaluate_every)
        #: The clock of the live view's refreshes; a test may put a fake one here.
        self.clock: Callable[[], float] = time.monotonic
        self._view: LiveView | None = None
        self._fit = FitSteps()
        self._deferred = False  # attach after the first step (see on_train_begin)
        self._last_flush = 0.0

    @property
    def history(self) -> GradientHistory | None:
        """The record: every recorded step of every watched layer."""
        return self.session.history

    @property
    def nonfinite(self) -> NonFinite | None:
        """Where this ``fit`` first went NaN or Inf, if it did."""
        return self.session.nonfinite

    # -- Keras' callback methods ------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        # State of one fit() call is reset here; the history survives. A fit
        # interrupted by Ctrl-C or an error (Keras then skips on_train_end)
        # may have left hooks and unfetched rows behind: keep the rows.
        self.detach()
        self.session.config = dict(self.config)
        if self.tensorboard is not None:
            self.tensorboard.open()  # an unwritable folder fails here, before any step is spent
        p = self.params or {}
        self._deferred = not is_built(self.model)
        if self._deferred:
            # Keras builds such a model while it traces the first step, so
            # there is nothing to hook yet: attach after step 0.
            notice("gradscope: the model is not built yet, so recording starts after its first step; "
                   "give it a keras.Input (or call it once) before fit to record step 0")
        attached = not self._deferred and self.session.attach(self.model)
        # Counted after attach, which may start a new history (another model).
        self._fit = FitSteps.begin(p, rows=len(self.history) if self.history is not None else 0)
        self._fit.attached = attached
        if self.history is not None and len(self.history.evaluations):
            self._fit.evaluation_offset = self.history.evaluations.steps[-1]
        self._last_flush = self.clock()
        if self.verbose and is_chief():  # under a multi-worker strategy the chief alone shows
            self._view = LiveView({**p, "total_steps": self._fit.total}, console=self.console,
                                  keras_bar=bool(p.get("verbose")), get_time=self.clock)
            self._view.start(self._progress())

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._fit.epoch = epoch
        self._fit.epoch_first_row = len(self.history) if self.history is not None else 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._fit.next_is_last(self._steps_per_call()):
            self.session.request_end_histogram()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self._steps_per_call()
        self._fit.done += steps
        if self.history is not None and self.evaluation_due(self._fit.done, batch):
            self._add_evaluation(logs, epoch_end=False)
        if self._deferred:
            self._deferred = False
            self._fit.attached = self.session.attach(self.model, first_step=self._fit.done)
            self._fit.start_rows = self._fit.epoch_first_row = len(self.history) if self.history is not None else 0
            return
        if not self.session.attached:
            return
        self._fit.since_flush += steps
        # "stop" and "raise" act on the step that went bad: they look at every step.
        due = self._fit.since_flush >= self.session.options.flush_every or self.on_nonfinite != "warn"
        # The live view wants fresh rows a few times a second, not every step.
        if self._view is not None and self.clock() - self._last_flush > self._view.refresh_seconds:
            due = True
        if due:
            self.flush()
            if self._view is not None:
                self._view.update(self._progress())

    # Evaluation and prediction (validation inside fit too) run without the
    # forward hooks: their functions trace without statistics, and cannot
    # overwrite the training step's staged values.
    def on_test_begin(self, logs: dict | None = None) -> None:
        self.session.suspend()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.session.resume()

    on_predict_begin = on_test_begin
    on_predict_end = on_test_end

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.session.attached:
            return
        self._add_evaluation(logs, epoch_end=True)
        self.flush()
        if logs is not None:
            logs.update(epoch_grad_norms(self.history, self._fit.epoch_first_row))
        if self._view is not None:
            self._view.epoch_end(self._progress())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.detach()
        if self._view is not None:
            self._view.stop(self._progress())
            self._view = None
        if self._fit.attached and len(self.history) == self._fit.start_rows and not self.session.saw_apply:
            notice("gradscope: no step was recorded: the model's train_step never called "
                   "optimizer.apply / apply_gradients (on JAX: optimizer.stateless_apply)")
        if self.verbose == 1 and self.history is not None and len(self.history) and is_chief():
            self.summary()

    # -- the record ------------------------------------------------------------------
    def flush(self, check: bool = True) -> int:
        """Fetches pending rows from the device into `history`; returns how many."""
        flushed = self.session.flush(self._fit.epoch, check=check)
        if flushed.rows:
            self._write_tensorboard()
        self._fit.since_flush = 0
        self._last_flush = self.clock()
        if flushed.nonfinite is not None:
            self.nonfinite_policy.apply(flushed.nonfinite, self)
        return flushed.rows

    def detach(self) -> None:
        """Fetches every recorded row, then removes the hooks. Safe to call twice.

        `fit` calls it at the end of training. After an interrupted ``fit``
        (Ctrl-C), call it to keep every step recorded so far in `history`.
        """
        if self.session.attached:
            try:
                self.flush(check=False)
            finally:
                self.session.detach()
            # The end histograms are read at detach; the verdict is the whole fit's.
            self._write_tensorboard(verdict=True)

    def _write_tensorboard(self, verdict: bool = False) -> None:
        board, history = self.tensorboard, self.history
        if board is None or history is None or not len(history):
            return
        try:
            board.write(history)
            if verdict:
                from gradscope.diagnosis import diagnose

                view = history.overview()  # a long run: down-sampled
                board.write_verdict(view, diagnose(view))
        except Exception as exc:
            # A full disk, say (TensorFlow's record writer raises its own error
            # types, not OSError). The record is whole in memory: training goes
            # on, without TensorBoard.
            self.tensorboard = None
            with contextlib.suppress(Exception):
                board.close()
            from gradscope.run_folder import describe_os_error

            notice(f"gradscope: TensorBoard files in {board.logdir} are no longer written "
                   f"({' '.join(describe_os_error(exc).split())[:200]}); the record itself is kept")

    def evaluation_due(self, done: int, batch: int) -> bool:
        """A mid-epoch evaluation is due after this batch: ``evaluate_every`` divides the steps done in this fit,
        and the batch is not its epoch's last (an epoch end is recorded anyway).

        Args:
            done: the steps done in this fit, this batch included.
            batch: the batch's index within its epoch.
        """
        per_epoch = (self.params or {}).get("steps")
        last = bool(per_epoch) and batch + 1 >= per_epoch
        return bool(self.evaluate_every) and done % self.evaluate_every == 0 and not last

    def _add_evaluation(self, logs: dict | None, epoch_end: bool) -> None:
        step = self._fit.evaluation_offset + self._fit.done
        self.history.evaluations.add(step, self._fit.epoch + 1, logs or {}, epoch_end=epoch_end)

    def _progress(self) -> Progress:
        history = self.history if self.history is not None else GradientHistory([])
        return Progress(history, self._fit.done, self._fit.epoch)

    def _steps_per_call(self) -> int:
        return int(getattr(self.model, "steps_per_execution", 1) or 1)

    # -- showing ---------------------------------------------------------------------
    def summary(self, console: Any = None) -> Diagnosis:
        """Prints the per-layer summary table and the verdict; returns the diagnosis.

        In a Jupyter notebook the table is drawn as HTML in the cell's output.
        """
        from gradscope.diagnosis import diagnose
        from gradscope.render.terminal import print_summary

        history = self._require_history().overview()  # a long run: down-sampled
        diagnosis = diagnose(history)
        print_summary(history, diagnosis, console=console or self.console)
        return diagnosis

    def plot(self, path: str | os.PathLike | None = None, series: str = "backprop") -> Any:
        """Returns the overview Figure of the record; a notebook shows it inline.

        The gradient that reaches each layer's output, over the steps
        (smoothed), against depth and as a layer x step heat map: see
        `gradscope.render.plots.overview_figure`.

        Args:
            path: also save the Figure as a PNG there. Defaults to `None`, not saved.
            series: the per-layer series to draw (grad_norm where the run has
                no back-propagated gradient). Defaults to `"backprop"`.
        """
        from gradscope.render.plots import overview_figure, save_figure

        fig = overview_figure(self._require_history().overview(), series)
        if path is not None:
            save_figure(fig, path)
        return fig

    def save(self, folder: str, overwrite: bool = False) -> Any:
        """Saves the run folder (history, summary, plots), all or nothing; see docs/recording.md.

        A folder that already holds a run is replaced only with ``overwrite``.
        On the workers of a multi-worker run other than the chief, nothing is
        written and None is returned.
        """
        if not is_chief():
            return None
        from gradscope.report import save_run

        return save_run(self._require_history(), folder, overwrite=overwrite)

    def _require_history(self) -> GradientHistory:
        if self.history is None or not len(self.history):
            raise RuntimeError("GradientMonitor has recorded nothing yet: pass it to fit(callbacks=[...]) first")
        return self.history


def epoch_grad_norms(history: GradientHistory, first_row: int) -> dict[str, float]:
    """``{"grad_norm/<layer>": mean}`` over the rows from ``first_row`` on: an epoch's logs.

    Example:

    >>> h = GradientHistory(["dense"])
    >>> h.append([0, 1, 2], {"grad_norm": np.array([[9.0], [1.0], [3.0]])})
    >>> epoch_grad_norms(h, first_row=1)
    {'grad_norm/dense': 2.0}
    """
    if len(history) <= first_row:  # no row this epoch (and maybe no series yet)
        return {}
    rows = history.rows("grad_norm", first_row)  # of a streamed record, the epoch's rows only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: a layer not measured
        means = np.nanmean(rows, axis=0)
    return {f"grad_norm/{name}": float(value) for name, value in zip(history.layers, means, strict=True)}
