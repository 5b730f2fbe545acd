"""`RecordingSession`: one model's training steps, recorded into a `GradientHistory`.

The session owns the three parts of a recording and the order they are used
in: the `Recorder` (device side), the `Hooks` that feed it, and the
`GradientHistory` its rows go to. A callback (`GradientMonitor`) or a loop
(`gradscope.train`) drives it:

    attach(model) -> the steps run -> flush() now and then -> detach()

It also decides whether a new ``fit`` continues the record, and keeps the
traced train functions for the next call on the same model, since tracing
costs as much as dozens of steps.

Example:

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="tanh")])
>>> model.compile(optimizer="sgd", loss="mse")
>>> session = RecordingSession(RecordingOptions())
>>> session.attach(model)
True
>>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4, verbose=0)
>>> session.flush(epoch=0).rows, session.history.steps.tolist()
(2, [0, 1])
>>> session.detach()
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gradscope.cluster import check_strategy, is_chief
from gradscope.diagnosis import NonFinite, first_nonfinite
from gradscope.errors import HookError
from gradscope.history import GradientHistory
from gradscope.model_layers import LayerSpec, watched_layers
from gradscope.run_folder import claim_run_folder

if TYPE_CHECKING:
    from gradscope.hooks import Hooks
    from gradscope.jax_step import JaxHooks, JaxRecorder
    from gradscope.recorder import Recorder


@dataclass(frozen=True)
class RecordingOptions:
    """What is recorded, and how often; see `GradientMonitor` for each.

    Args:
        every: record every N-th step. Defaults to `1`.
        weights_every: weight and update norms on every N-th recorded step. Defaults to `1`.
        activation_stats: the statistics of each layer's output. Defaults to `True`.
        saturation_threshold: |a| at which a tanh unit counts as saturated. Defaults to `0.99`.
        flush_every: steps between two fetches from the device. Defaults to `256`.
        layers: names of the layers to watch, or a function ``layer -> bool``.
            Defaults to `None`, every layer with trainable weights.
        continue_history: a new ``fit`` on the same model appends to the
            record. Defaults to `True`.
        stream_to: a run folder to stream the record to, in chunks of
            ``flush_every`` rows, keeping only the newest rows in memory.
            Defaults to `None`, all rows in memory.

    Raises:
        TypeError: an argument of the wrong kind (``every=None``, ``layers=3``).
        ValueError: a value out of range (``flush_every=0``, ``saturation_threshold=5``).
    """

    every: int = 1
    weights_every: int = 1
    activation_stats: bool = True
    saturation_threshold: float = 0.99
    flush_every: int = 256
    layers: Iterable[str] | Callable[[Any], bool] | None = None
    continue_history: bool = True
    stream_to: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        for name in ("every", "weights_every", "flush_every"):
            object.__setattr__(self, name, whole_number(name, getattr(self, name), minimum=1))
        object.__setattr__(self, "activation_stats", bool(self.activation_stats))
        t = self.saturation_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            # |a| of tanh and a of sigmoid lie in (-1, 1): a threshold outside counts nothing.
            raise ValueError(f"saturation_threshold must be a number between 0 and 1 (e.g. 0.99); got {t!r}")
        object.__setattr__(self, "saturation_threshold", float(t))
        layers = self.layers
        if isinstance(layers, str):
            object.__setattr__(self, "layers", (layers,))  # one name, not its letters
        elif layers is not None and not callable(layers):
            try:
                names = tuple(layers)
            except TypeError:
                raise TypeError("layers must be layer names, a function layer -> bool, or None; "
                                f"got {type(layers).__name__}") from None
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"layers must be layer names (strings); got {names!r}")
            object.__setattr__(self, "layers", names)

    def as_config(self) -> dict[str, Any]:
        """The options a run folder keeps, under ``config["recording"]``."""
        return {"every": self.every, "weights_every": self.weights_every,
                "activation_stats": self.activation_stats, "saturation_threshold": self.saturation_threshold}


@dataclass(frozen=True)
class Flushed:
    """What one flush brought: how many rows, and the first non-finite value if new."""

    rows: int
    nonfinite: NonFinite | None = None


@dataclass
class TracedTrain:
    """A train function traced with the hooks, valid for one record, model
    and plain function: a compile() in between makes Keras build a new one."""

    recorder: Recorder
    model: Any
    plain: Any
    hooked: Any

    def fits(self, recorder: Recorder, model: Any, plain: Any) -> bool:
        return self.recorder is recorder and self.model is model and self.plain is plain


@dataclass
class LoopStep:
    """`gradscope.train`'s compiled step, kept for its next call."""

    owners: tuple  # what the trace bakes in; compared by identity
    options: tuple  # how it was compiled; compared by value
    function: Any
    state: Any = None

    def fits(self, owners: tuple, options: tuple) -> bool:
        return self.options == options and all(a is b for a, b in zip(self.owners, owners, strict=True))


class RecordingSession:
    """Records one model's training steps; see the module docstring.

    Args:
        options: what to record.
        config: facts about the run, kept in the history's config.
    """

    def __init__(self, options: RecordingOptions, config: dict[str, Any] | None = None) -> None:
        self.options = options
        self.config: dict[str, Any] = dict(config or {})
        self.history: GradientHistory | None = None
        self.recorder: Recorder | JaxRecorder | None = None
        self.hooks: Hooks | JaxHooks | None = None
        #: The first non-finite value seen since the last `attach`.
        self.nonfinite: NonFinite | None = None
        self._model: Any = None
        self._specs: list[LayerSpec] = []
        self._signature: tuple | None = None
        self._traced: TracedTrain | None = None
        self._plain_train: Any = None
        self._loop_step: LoopStep | None = None
        self._want_start_histogram = False
        self._coverage_checked = False  # the gradients-only notice, once per history
        self._streams = 0  # histories streamed so far: the second goes to "<stream_to>-2"
        #: Keras runs on JAX: the session drives `gradscope.jax_step` instead of the TensorFlow hooks.
        self._jax = keras_backend() == "jax"

    def __repr__(self) -> str:
        rows = len(self.history) if self.history is not None else 0
        return f"RecordingSession(rows={rows}, attached={self.attached})"

    @property
    def attached(self) -> bool:
        return self.hooks is not None

    @property
    def saw_apply(self) -> bool:
        """The optimizer's apply handed gradients over at least once."""
        return self.recorder is not None and self.recorder.stage.seen_gradients

    # -- attach ------------------------------------------------------------------------
    def attach(self, model: Any, first_step: int | None = None) -> bool:
        """Hooks ``model`` and makes its next ``fit`` step record.

        Args:
            model: a built, compiled Keras model.
            first_step: the global step of the next step, when the model
                has already run some steps of this ``fit`` unrecorded.

        Returns:
            False, with a one-line notice, when the model cannot be hooked;
            training then goes on without records.
        """
        self.nonfinite = None
        self._model = model
        check_strategy(getattr(model, "distribute_strategy", None))  # TPU, parameter servers: refused
        if keras_backend() not in ("tensorflow", "jax"):
            notice(f"gradscope: Keras runs on {keras_backend()} here; gradscope records on TensorFlow and JAX "
                   "only (docs/backends.md), so training goes on without gradient records")
            return False
        try:
            self._prepare(model)
            # The backend's own hooks, imported here: the JAX recording imports no TensorFlow.
            if self._jax:
                from gradscope.jax_step import JaxHooks

                self.hooks = JaxHooks(model, self.recorder, self._specs)
            else:
                from gradscope.hooks import Hooks

                self.hooks = Hooks(model, self.recorder, self._specs)
            self.hooks.install()
        except (HookError, AttributeError, TypeError) as exc:
            if self.hooks is not None:
                self.hooks.remove()
            self.hooks = None
            notice(f"gradscope: cannot hook this model ({exc}); training goes on without gradient records")
            return False
        if first_step is not None:
            self.recorder.schedule.start_at(self.recorder.schedule.step + first_step)
        if not self._jax:  # the JAX hooks put their own train function in place
            self._swap_train_function(model)
        self._want_start_histogram = "start" not in self.history.histograms
        if self._want_start_histogram:
            # Only the first fit of a history has a start; a histogram step
            # costs a few steps' worth of binning.
            self.recorder.histograms.request()
        return True

    def _prepare(self, model: Any) -> None:
        """Picks the layers, and starts a new record unless this one continues."""
        every_layer = watched_layers(model)
        if not every_layer:
            raise HookError("the model has no layer with trainable weights")
        specs = select_layers(every_layer, self.options.layers)
        if not specs:
            raise HookError("the layers option selected none of the model's layers ("
                            + ", ".join(s.name for s in every_layer) + ")")
        model_vars = list(model.trainable_variables)
        # What must match for a new fit() to continue the same record.
        signature = (id(model), tuple((s.name, tuple(tuple(model_vars[i].shape) for i in s.var_indices))
                                      for s in specs))
        same = self.recorder is not None and signature == self._signature
        keep = self.options.continue_history and same
        if not same and self.options.continue_history and self.history is not None and len(self.history):
            notice(f"gradscope: this fit trains another model (or other layers), so a new history starts; "
                   f"the previous one ({len(self.history)} recorded steps) is dropped: keep it with "
                   "monitor.save(folder) before the next fit, or give each model its own monitor")
        o = self.options
        if same and not keep:
            # The same model and layers, a fresh record: the recorder, and the
            # functions traced with it (tracing costs dozens of steps), serve again.
            self.recorder.restart()
        elif not keep and self._jax:
            from gradscope.jax_step import JaxRecorder

            self.recorder = JaxRecorder(
                [s.activation for s in specs], [li for li, s in enumerate(specs) for _ in s.var_indices],
                every=o.every, weights_every=o.weights_every, activation_stats=o.activation_stats,
                saturation_threshold=o.saturation_threshold,
            )
            self._coverage_checked = False
        elif not keep:
            from gradscope.distributed import outside_strategy
            from gradscope.recorder import Recorder

            spe = int(getattr(model, "steps_per_execution", 1) or 1)
            self.recorder = outside_strategy(lambda: Recorder(  # plain variables, even in a strategy's scope
                [s.activation for s in specs],
                [li for li, s in enumerate(specs) for _ in s.var_indices],
                # Room for two flush intervals, plus one execution of slack.
                capacity=2 * -(-o.flush_every // o.every) + 4 * spe,
                every=o.every, weights_every=o.weights_every, activation_stats=o.activation_stats,
                saturation_threshold=o.saturation_threshold,
            ))
            self._coverage_checked = False
        if not keep:
            self.history = GradientHistory(
                [s.name for s in specs],
                variables=[f"{s.name}/{n}" for s in specs for n in s.var_names],
                layer_info=[s.info(model_vars) for s in specs],
                config={**self.config, "recording": o.as_config()},
            )
            if o.stream_to is not None:
                # The folder given, if it holds no run; a later history of
                # this session gets a numbered one beside it, never the same.
                folder = claim_run_folder(None if self._streams else o.stream_to, o.stream_to)
                self._streams += 1
                self.history.stream_to(folder, chunk_rows=o.flush_every)
        self._signature = signature
        self._specs = specs

    def _swap_train_function(self, model: Any) -> None:
        """fit() built its train function before the hooks were on. Swap in
        one whose trace includes them: the one an earlier fit of this record
        traced, if still valid, else a fresh one that traces on first call."""
        self._plain_train = getattr(model, "train_function", None)
        if self._traced is not None and self._traced.fits(self.recorder, model, self._plain_train):
            model.train_function = self._traced.hooked
        else:
            self._traced = None
            if self._plain_train is not None and hasattr(model, "make_train_function"):
                model.make_train_function(force=True)

    # -- while training ------------------------------------------------------------------
    def flush(self, epoch: int, check: bool = True) -> Flushed:
        """Fetches pending rows from the device into `history`.

        Args:
            epoch: the epoch the rows belong to.
            check: search the new rows for NaN/Inf. Defaults to `True`.
        """
        if self.recorder is None or self.history is None:
            return Flushed(0)
        rows = self.recorder.flush()
        if rows.lost:
            notice(f"gradscope: {rows.lost} steps were overwritten before they were fetched")
        if not len(rows):
            return Flushed(0)
        first_new = len(self.history)
        self.history.append(**rows.history_parts(self.recorder.var_layer, epoch))
        new = self.history.since(first_new)
        self._take_start_histogram()
        if not self._coverage_checked:
            self._coverage_checked = True
            self._check_coverage()
            self._note_optimizers()
        found = None
        if check and self.nonfinite is None:
            # Only the new rows are searched, so the check costs O(rows).
            found = first_nonfinite(new, loss_scaled=self.recorder.stage.loss_scaled)
            if found is not None and not self._jax:  # several replicas: TensorFlow only
                from gradscope.distributed import bad_replica

                found = dataclasses.replace(found, replica=bad_replica(self.recorder, found.step))
            self.nonfinite = found
        return Flushed(len(rows), found)

    def request_end_histogram(self) -> None:
        """Asks the next step (the last) for the end histograms. They overwrite
        the start ones on the device, so a start not fetched yet is taken now."""
        if self.attached:
            self._take_start_histogram()
            self.recorder.histograms.request()

    def _take_start_histogram(self) -> None:
        if self._want_start_histogram:
            start = self.recorder.histograms.read()
            if start is not None:
                self.history.histograms["start"] = start
                self._want_start_histogram = False

    def _check_coverage(self) -> None:
        """Says once which layers get gradients only: their output is not one
        float tensor (an RNN's state tuple), or the model owns the weights
        itself, so there is no output to measure. Read from what was staged
        while the step was traced, so a NaN output is not mistaken for one."""
        stage = self.recorder.stage
        names = [name for i, name in enumerate(self.history.layers)
                 if i not in stage.seen_backprop or (self.options.activation_stats and i not in stage.seen_forward)]
        if names:
            notice(f"gradscope: {', '.join(names)}: gradients only, no activation statistics or "
                   "back-propagated gradient (the output is not one float tensor, or the weights "
                   "belong to the model itself)")

    def _note_optimizers(self) -> None:
        """Under several optimizers, writes into each layer's facts which of
        them updated it (as the step was traced), for the tables."""
        applied = self.hooks.applied_by
        if len(set(applied.values())) < 2:
            return
        for li, info in enumerate(self.history.layer_info):
            labels = sorted({applied[c] for c, owner in enumerate(self.recorder.var_layer)
                             if owner == li and c in applied})
            info["optimizer"] = ", ".join(labels) or None

    def suspend(self) -> None:
        """Takes the forward hooks off (evaluation, prediction)."""
        if self.hooks is not None:
            self.hooks.suspend()

    def resume(self) -> None:
        if self.hooks is not None:
            self.hooks.resume()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Runs the body (an evaluation, say) without the forward hooks."""
        self.suspend()
        try:
            yield
        finally:
            self.resume()

    # -- detach --------------------------------------------------------------------------
    def detach(self) -> None:
        """Takes the end histograms, removes the hooks and gives the model
        back its own train function. Flush first to keep the last rows."""
        if self.hooks is None:
            return
        try:
            # The last step trained, recorded or not (with every > 1 the last
            # rows can be older): the summary says which values are final.
            self.history.config["last_step"] = self.recorder.schedule.step - 1
            end = self.recorder.histograms.read()
            start_step = self.history.histograms.get("start", {}).get("step")
            if end is not None and len(self.history) and end["step"] != start_step:
                self.history.histograms["end"] = end
            self.history.sync()  # a streamed record: every row fetched is on disk
        finally:
            self.hooks.remove()
            self.hooks = None
            # The train function traced with the hooks keeps recording: keep
            # it for this record's next fit, and give the model back the one
            # it had (or none), so a later fit without gradscope runs clean.
            model = self._model
            hooked = getattr(model, "train_function", None)
            if hooked is not None and hasattr(model, "make_train_function") and not self._jax:
                self._traced = TracedTrain(self.recorder, model, self._plain_train, hooked)
                model.train_function = self._plain_train
            self._plain_train = None

    # -- gradscope.train ---------------------------------------------------------------
    def loop_step(self, model: Any, options: tuple, build: Callable[[], tuple[Any, Any]]) -> LoopStep:
        """`gradscope.train`'s compiled step for ``model``: the one kept from
        its last call if nothing it bakes in changed (the record, the model,
        its optimizer and compiled loss) and ``options`` are equal, else a new
        one from ``build() -> (function, state)``, kept for the next call."""
        owners = (self.recorder, model, model.optimizer, getattr(model, "_compile_loss", None))
        if self._loop_step is None or not self._loop_step.fits(owners, options):
            self._loop_step = LoopStep(owners, options, *build())
        return self._loop_step


def select_layers(specs: list[LayerSpec], chosen: Iterable[str] | Callable[[Any], bool] | None) -> list[LayerSpec]:
    """The watched layers the ``layers`` option picks: names, a predicate, or None for all.

    Raises:
        ValueError: a name that is not one of the model's weighted layers.
    """
    if chosen is None:
        return specs
    if callable(chosen):
        return [s for s in specs if chosen(s.layer)]
    names = set(chosen)
    unknown = names - {s.name for s in specs}
    if unknown:
        raise ValueError(
            f"GradientMonitor(layers=...) names unknown layers: {', '.join(sorted(unknown))}; "
            f"the model's weighted layers are: {', '.join(s.name for s in specs)}"
        )
    return [s for s in specs if s.name in names]


#: The largest step interval accepted; the device's step counter is an int64.
MAX_INTERVAL = 2**31 - 1


def whole_number(name: str, value: Any, minimum: int = 1, maximum: int = MAX_INTERVAL) -> int:
    """``value`` as an int, or a `TypeError`/`ValueError` that names the argument.

    Example:

    >>> whole_number("every", 3)
    3
    >>> whole_number("every", 0)
    Traceback (most recent call last):
    ...
    ValueError: every must be a whole number of at least 1; got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{name} must be a whole number; got {type(value).__name__} {value!r}")
    if value != value or value in (float("inf"), float("-inf")) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}; got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}; got {value!r}")
    return int(value)


def keras_backend() -> str:
    """The backend Keras runs on: "tensorflow", "jax" or "torch"."""
    import keras

    return keras.backend.backend()


def notice(message: str) -> None:
    """One line on standard error, at once (under a multi-worker strategy, on the chief only)."""
    if not is_chief():
        return
    print(message, file=sys.stderr, flush=True)
