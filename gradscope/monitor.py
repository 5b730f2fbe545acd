"""`GradientMonitor`: the Keras callback that records every step's gradients.

It is used in two places: added by a user to ``model.fit(callbacks=[...])``,
and inside gradscope's own loop (`gradscope.train`), which makes one when it
is not given one. Either way the measured data flows one way:

    hooks (in the graph) -> Recorder (device ring) -> flush -> GradientHistory
    -> diagnosis / renderers
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np

from gradscope.diagnosis import NonFinite, first_nonfinite
from gradscope.history import GradientHistory
from gradscope.hooks import HookError, Hooks
from gradscope.model_layers import LayerSpec, watched_layers
from gradscope.recorder import Recorder, Rows
from gradscope.stats import FORWARD_STATS

_POLICIES = ("warn", "stop", "raise")


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``GradientMonitor(on_nonfinite="raise")``; ``.report`` says where."""

    def __init__(self, report: NonFinite) -> None:
        super().__init__(report.sentence())
        self.report = report


class GradientMonitor(keras.callbacks.Callback):
    """Records the gradients `fit` applies, for every layer, at every step.

    Add it to ``fit``'s callbacks; nothing in the model changes. During
    training it wraps (on the instances only) the watched layers' ``call``,
    ``model.compute_loss`` and the optimizer's ``apply``, so it sees the very
    gradients the optimizer applies - unscaled under mixed precision - and the
    gradient that reaches each layer's output. Statistics are reduced to a few
    numbers per layer inside the compiled step and fetched in batches. At the
    end of training the wrappers are removed.

    At the end of each epoch it adds ``grad_norm/<layer>`` (the epoch's mean)
    to the epoch logs, so `History`, `CSVLogger` and Keras' `TensorBoard`
    carry them; put the monitor *before* those callbacks in the list.

    One instance survives several ``fit`` calls. With ``continue_history``
    each call appends to the same history, and steps keep counting;
    otherwise each call starts a new one.

    Args:
        every: record every N-th step. Defaults to `1` (every step).
        layers: names of the layers to watch, or a function
            ``layer -> bool``. Defaults to `None`, every layer that owns
            trainable weights.
        verbose: `0` is silent. `1` shows a live per-layer table while
            training (a table per epoch when Keras' own progress bar is on,
            and plain lines when the output is not a terminal), and the
            summary with its verdict at the end. `2` is the live view
            without the summary. Defaults to `0`.
        on_nonfinite: what to do when a gradient, an activation or the loss
            becomes NaN or Inf: `"warn"` prints where it started (step, layer
            and variable) once, `"stop"` also stops training, `"raise"`
            raises `NonFiniteGradientError`. Defaults to `"warn"`.
        continue_history: keep one history across ``fit`` calls. Defaults to
            `True`.
        activation_stats: record the statistics of each layer's output
            every step (mean, standard deviation, saturation, dead units,
            the activation derivative, non-finite outputs) and the start
            and end histograms. `False` keeps the gradients, the
            back-propagated gradient, the weights and the loss only.
            Defaults to `True`.
        weights_every: measure the weight norms and the update ratio on
            every N-th recorded step only (NaN on the others). Each is one
            pass over every parameter, which is most of what recording
            costs on a CPU; weights change by about the update ratio per
            step (~1e-3), so every 10th step loses little. (An optimizer
            that writes variables with ``assign`` rather than
            ``assign_add``/``assign_sub`` still pays for forming its update
            on every step.) Defaults to `1`.
        saturation_threshold: |a| at or above which a tanh unit counts as
            saturated (sigmoid: a at or above it, or at or below 1 minus it). Defaults to `0.99`.
        flush_every: steps between two fetches of the records from the
            device, when nothing else asks for them. Defaults to `256`.
        console: a `rich.console.Console` for the output. Defaults to `None`
            (standard output).

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
    ) -> None:
        super().__init__()
        if on_nonfinite not in _POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(_POLICIES)}; got {on_nonfinite!r}")
        for name, value in (("every", every), ("weights_every", weights_every)):
            if int(value) < 1 or int(value) != value:
                raise ValueError(f"{name} must be a positive whole number; got {value!r}")
        self.every = int(every)
        self.weights_every = int(weights_every)
        self.activation_stats = bool(activation_stats)
        self.layer_filter = layers
        self.verbose = int(verbose)
        self.on_nonfinite = on_nonfinite
        self.continue_history = continue_history
        self.saturation_threshold = float(saturation_threshold)
        self.flush_every = max(1, int(flush_every))
        self.console = console
        self.history: GradientHistory | None = None
        self.nonfinite: NonFinite | None = None
        self.config: dict[str, Any] = {}
        self.view: Any = None
        self._recorder: Recorder | None = None
        self._hooks: Hooks | None = None
        self._specs: list[LayerSpec] = []
        self._epoch = 0
        self._steps_since_flush = 0
        self._last_flush = 0.0
        self._epoch_first_row = 0
        self._fit_start_rows = 0
        self._steps_done = 0
        self._total_steps: int | None = None
        self._deferred = False
        self._want_start_histogram = False
        self._coverage_checked = False  # the gradients-only notice, once per history
        self._record_signature: tuple | None = None
        self._hooked_train: tuple | None = None  # (recorder, model, plain function, function traced with hooks)
        self._plain_train: Any = None
        self._loop_step: tuple | None = None  # gradscope.train's compiled step, kept for its next call
        #: The clock of the live view's refreshes; a test may put a fake one here.
        self.clock: Callable[[], float] = time.monotonic

    # -- set-up -------------------------------------------------------------------
    def _select(self, specs: list[LayerSpec]) -> list[LayerSpec]:
        f = self.layer_filter
        if f is None:
            return specs
        if callable(f):
            return [s for s in specs if f(s.layer)]
        names = set(f)
        unknown = names - {s.name for s in specs}
        if unknown:
            raise ValueError(
                f"GradientMonitor(layers=...) names unknown layers: {', '.join(sorted(unknown))}; "
                f"the model's weighted layers are: {', '.join(s.name for s in specs)}"
            )
        return [s for s in specs if s.name in names]

    def _signature(self, specs: list[LayerSpec]) -> tuple:
        """What must match for a new fit() to continue the same record."""
        model_vars = list(self.model.trainable_variables)
        return (id(self.model), tuple(
            (s.name, tuple(tuple(model_vars[i].shape) for i in s.var_indices)) for s in specs
        ))

    def _prepare(self) -> None:
        model = self.model
        every_layer = watched_layers(model)
        if not every_layer:
            raise HookError("the model has no layer with trainable weights")
        specs = self._select(every_layer)
        if not specs:
            raise HookError(
                "the layers option selected none of the model's layers ("
                + ", ".join(s.name for s in every_layer) + ")"
            )
        signature = self._signature(specs)
        keep = self.continue_history and self._recorder is not None and signature == self._record_signature
        if not keep:
            spe = int(getattr(model, "steps_per_execution", 1) or 1)
            self._recorder = Recorder(
                [s.activation for s in specs],
                [li for li, s in enumerate(specs) for _ in s.var_indices],
                # Room for two flush intervals, plus one execution of slack.
                capacity=2 * -(-self.flush_every // self.every) + 4 * spe,
                every=self.every,
                weights_every=self.weights_every,
                activation_stats=self.activation_stats,
                saturation_threshold=self.saturation_threshold,
            )
            model_vars = list(model.trainable_variables)
            self._coverage_checked = False
            self.history = GradientHistory(
                [s.name for s in specs],
                variables=[f"{s.name}/{n}" for s in specs for n in s.var_names],
                layer_info=[s.info(model_vars) for s in specs],
                config={**self.config, "recording": {
                    "every": self.every, "weights_every": self.weights_every,
                    "activation_stats": self.activation_stats,
                    "saturation_threshold": self.saturation_threshold,
                }},
            )
        self._record_signature = signature
        self._specs = specs

    # -- Keras hooks ------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        # State that belongs to one fit() call is reset here; the history
        # survives (see continue_history). A fit that was interrupted (Ctrl-C
        # or an exception: Keras then skips on_train_end) may have left its
        # hooks and unfetched rows behind: keep the rows, drop the hooks.
        self.detach()
        self.nonfinite = None
        self._epoch = 0
        self._steps_done = 0
        self._steps_since_flush = 0
        # Steps this fit will run: gradscope.train says so; Keras' fit gives
        # steps per epoch and epochs. None when unknown (an endless dataset).
        p = self.params or {}
        self._total_steps = p.get("total_steps") or ((p.get("steps") or 0) * (p.get("epochs") or 0)) or None
        self._fit_start_rows = len(self.history) if self.history is not None else 0
        self._deferred = not self._model_is_built()
        if self._deferred:
            # Keras builds such a model while it traces the first step, so
            # there is nothing to hook yet: attach after step 0.
            _warn(
                "gradscope: the model is not built yet, so recording starts after its first step; "
                "give it a keras.Input (or call it once) before fit to record step 0"
            )
        else:
            self._attach(first_step=None)
        if self.verbose:
            from gradscope.render.live import LiveView

            keras_bar = bool(p.get("verbose"))
            self.view = LiveView({**p, "total_steps": self._total_steps}, console=self.console,
                                 keras_bar=keras_bar, get_time=self.clock)
            self.view.start(self._progress())

    def _progress(self):
        from gradscope.render.live import Progress

        history = self.history if self.history is not None else GradientHistory([])
        return Progress(history, self._steps_done, self._epoch)

    def _model_is_built(self) -> bool:
        return bool(getattr(self.model, "built", False) and self.model.trainable_variables)

    def _attach(self, first_step: int | None) -> None:
        """Discovers the layers, installs the hooks and makes fit retrace."""
        try:
            self._prepare()
            self._hooks = Hooks(self.model, self._recorder, self._specs)
            self._hooks.install()
        except (HookError, AttributeError, TypeError) as exc:
            if self._hooks is not None:
                self._hooks.remove()
            self._hooks = None
            _warn(f"gradscope: cannot hook this model ({exc}); training goes on without gradient records")
            return
        if first_step is not None:
            self._recorder.start_at(int(self._recorder.calls.numpy()) + first_step)
        # fit() built its train function before calling us. Swap in one whose
        # trace includes the hooks: the one traced by an earlier fit with this
        # monitor and record if there is one (tracing costs as much as dozens
        # of steps), else a fresh one that traces on its first call.
        self._plain_train = getattr(self.model, "train_function", None)
        cached = self._hooked_train
        # Valid only for the same record, model and plain function: a compile()
        # in between makes Keras build a new one (new optimizer, new loss).
        if (
            cached is not None
            and cached[0] is self._recorder
            and cached[1] is self.model
            and cached[2] is self._plain_train
        ):
            self.model.train_function = cached[3]
        else:
            self._hooked_train = None
            _retrace(self.model, "train")
        self._want_start_histogram = "start" not in self.history.histograms
        if self._want_start_histogram:
            # Only the first fit of a history has a start; a histogram step
            # costs a few steps' worth of binning.
            self._recorder.request_histogram()
        self._last_flush = self.clock()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_first_row = len(self.history) if self.history is not None else 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._hooks is not None and self._is_last_step():
            # The "end" histogram is of the very last step, when it is known.
            # It overwrites the histogram on the device, so a start histogram
            # not fetched yet (a run shorter than a flush interval) is taken now.
            self._take_start_histogram()
            self._recorder.request_histogram()

    def _is_last_step(self) -> bool:
        spe = int(getattr(self.model, "steps_per_execution", 1) or 1)
        return self._total_steps is not None and self._steps_done + spe >= self._total_steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps_done += int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self._deferred:
            self._deferred = False
            self._attach(first_step=self._steps_done)
            return
        if self._hooks is None:
            return
        self._steps_since_flush += int(getattr(self.model, "steps_per_execution", 1) or 1)
        due = self._steps_since_flush >= self.flush_every or self.on_nonfinite != "warn"
        # The live view wants fresh rows a few times a second, not every step.
        if self.view is not None and self.clock() - self._last_flush > self.view.refresh_seconds:
            due = True
        if due:
            self.flush()
            if self.view is not None:
                self.view.update(self._progress())

    # Evaluation and prediction (validation inside fit too) run without the
    # forward wrappers: their functions are traced without statistics, and
    # they cannot overwrite the training step's pending values.
    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._hooks is not None:
            self._hooks.suspend()

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._hooks is not None:
            self._hooks.resume()

    on_predict_begin = on_test_begin
    on_predict_end = on_test_end

    @contextlib.contextmanager
    def paused(self):
        """Runs the body (an evaluation, say) without the forward hooks."""
        self.on_test_begin()
        try:
            yield
        finally:
            self.on_test_end()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._hooks is None:
            return
        self.flush()
        rows = slice(self._epoch_first_row, len(self.history))
        if logs is not None and rows.stop > rows.start:
            means = _nanmean(self.history["grad_norm"][rows])
            for name, value in zip(self.history.layers, means, strict=False):
                logs[f"grad_norm/{name}"] = float(value)
        if self.view is not None:
            self.view.epoch_end(self._progress())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.detach()
        if self.view is not None:
            self.view.stop(self._progress())
            self.view = None
        if self.history is not None and len(self.history) == self._fit_start_rows and not self._deferred:
            _warn(
                "gradscope: no step was recorded: the model's train_step never called "
                "optimizer.apply / apply_gradients"
            )
        if self.verbose == 1 and self.history is not None and len(self.history):
            self.summary()

    def detach(self) -> None:
        """Fetches every recorded row, then removes the hooks. Safe to call twice.

        `fit` calls it at the end of training. After an interrupted ``fit``
        (Ctrl-C), call it to keep every step recorded so far in `history`.
        """
        if self._hooks is None:
            return
        try:
            self.flush(check=False)
            end = self._recorder.read_histogram()
            if end is not None and len(self.history) and end["step"] != self.history.histograms.get("start", {}).get("step"):
                self.history.histograms["end"] = end
        finally:
            self._hooks.remove()
            self._hooks = None
            # The train function traced with the hooks keeps recording: keep it
            # for this monitor's next fit, and give the model back the one it
            # had (or none), so a later fit without this monitor runs clean.
            hooked = getattr(self.model, "train_function", None)
            if hooked is not None and hasattr(self.model, "make_train_function"):
                self._hooked_train = (self._recorder, self.model, self._plain_train, hooked)
                self.model.train_function = self._plain_train
            self._plain_train = None

    # -- records ------------------------------------------------------------------------
    def flush(self, check: bool = True) -> int:
        """Fetches pending rows from the device into `history`; returns how many."""
        if self._recorder is None or self.history is None:
            return 0
        rows = self._recorder.flush()
        self._steps_since_flush = 0
        self._last_flush = self.clock()
        if rows.lost:
            _warn(f"gradscope: {rows.lost} steps were overwritten before they were fetched")
        if not len(rows):
            return 0
        chunk = GradientHistory(self.history.layers, variables=self.history.variables)
        _append_rows(chunk, rows, np.asarray(self._recorder.var_layer), self._epoch)
        self.history.append(chunk.steps, {k: chunk[k] for k in chunk.names}, chunk.scalars, chunk.variable_series)
        self._take_start_histogram()
        if not self._coverage_checked:
            self._coverage_checked = True
            self._check_coverage(chunk)
        if check:
            # Only the new rows are searched, so the check costs O(rows).
            self._check_nonfinite(chunk)
        return len(rows)

    def _take_start_histogram(self) -> None:
        if self._want_start_histogram and self.history is not None:
            start = self._recorder.read_histogram()
            if start is not None:
                self.history.histograms["start"] = start
                self._want_start_histogram = False

    def _check_coverage(self, chunk: GradientHistory) -> None:
        """Says once which layers get gradients only: their output is not one
        float tensor (an RNN's state tuple), or the model owns the weights
        itself, so there is no output to measure."""
        missing = np.isnan(chunk["backprop"][0])
        if self.activation_stats:
            missing |= np.isnan(chunk["nonfinite"][0])
        names = [name for name, gap in zip(chunk.layers, missing, strict=False) if gap]
        if names:
            _warn(
                f"gradscope: {', '.join(names)}: gradients only, no activation statistics or "
                "back-propagated gradient (the output is not one float tensor, or the weights "
                "belong to the model itself)"
            )

    def _check_nonfinite(self, chunk: GradientHistory) -> None:
        if self.nonfinite is not None:
            return
        scaled = bool(self._recorder and self._recorder.scale_fn)
        report = first_nonfinite(chunk, loss_scaled=scaled)
        if report is None:
            return
        self.nonfinite = report
        if self.on_nonfinite == "raise":
            # Keras skips on_train_end when a callback raises: clean up first.
            self.detach()
            raise NonFiniteGradientError(report)
        _warn("gradscope: " + report.sentence())
        if self.on_nonfinite == "stop" and self.model is not None:
            self.model.stop_training = True

    # -- showing ---------------------------------------------------------------------------
    def summary(self, console: Any = None) -> Any:
        """Prints the per-layer summary table and the verdict; returns the diagnosis."""
        from gradscope.diagnosis import diagnose
        from gradscope.render.terminal import print_summary

        diagnosis = diagnose(self._require_history())
        print_summary(self.history, diagnosis, console=console or self.console)
        return diagnosis

    def plot(self, path: str = "grads.png") -> Any:
        """Saves the per-layer gradient norms over the steps as a PNG."""
        from gradscope.render.plots import plot_grad_norms

        return plot_grad_norms(self._require_history(), path)

    def save(self, folder: str) -> Any:
        """Saves the run folder (history, summary, plots); see the README."""
        from gradscope.report import save_run

        return save_run(self._require_history(), folder)

    def _require_history(self) -> GradientHistory:
        if self.history is None or not len(self.history):
            raise RuntimeError("GradientMonitor has recorded nothing yet: pass it to fit(callbacks=[...]) first")
        return self.history


def _append_rows(history: GradientHistory, rows: Rows, var_layer: np.ndarray, epoch: int) -> None:
    """Turns raw device rows into the per-layer series of the history."""
    n, L = len(rows), len(history.layers)

    def per_layer(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n, L))
        for li in range(L):
            out[:, li] = values[:, var_layer == li].sum(axis=1)
        return out

    grad = np.sqrt(per_layer(rows.grad_sq))
    weight = np.sqrt(per_layer(rows.weight_sq))
    update = np.sqrt(per_layer(rows.update_sq))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(weight > 0, update / weight, np.nan)
    series = {
        "grad_norm": grad,
        "weight_norm": weight,
        "update_ratio": ratio,
        "backprop": np.sqrt(rows.backprop_sq),
    }
    for k, name in enumerate(FORWARD_STATS):
        series[name] = rows.forward[:, :, k]
    scalars = {
        "loss": rows.scalars[:, 0],
        "accuracy": rows.scalars[:, 1],
        "loss_scale": rows.scalars[:, 2],
        "epoch": np.full(n, float(epoch)),
    }
    variables = {
        "grad_norm": np.sqrt(rows.grad_sq),
        "weight_norm": np.sqrt(rows.weight_sq),
        "update_norm": np.sqrt(rows.update_sq),
    }
    history.append(rows.steps, series, scalars, variables)


def _retrace(model: Any, kind: str) -> None:
    """Makes Keras build its train/test/predict function anew (traced on next use)."""
    if getattr(model, f"{kind}_function", None) is not None and hasattr(model, f"make_{kind}_function"):
        getattr(model, f"make_{kind}_function")(force=True)


def _nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
