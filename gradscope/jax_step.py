"""Recording ``fit`` under Keras 3's JAX backend: the hooks and the recorded step.

Keras' JAX trainer is functional: ``train_step(state, data) -> (logs, state)``,
compiled once by ``jax.jit``, with the gradients living only inside it. So
gradscope compiles its own step around the model's ``train_step``, which
returns one more thing, the step's row, and never runs a second pass:

* the weight gradients are taken where ``optimizer.stateless_apply``
  receives them (the very ones applied; divided by the loss scale under
  mixed precision), with the weights before and after the update;
* each watched layer's output passes through `LayerTap`, an identity with a
  custom gradient rule. ``jax.value_and_grad`` differentiates the loss with
  respect to the trainable variables only, so gradscope hands it one more
  "variable" per layer, a small probe vector that the identity takes as a
  second input. The forward side of the identity reduces the output to its
  statistics (`gradscope.portable_stats`, written once for both backends);
  the gradient side measures d(loss)/d(output) and returns both, as the
  probe's gradient. The wrapper of ``stateless_apply`` takes the probes'
  gradients off before the optimizer sees the list;
* the loss passes through the same kind of identity, and ``compute_metrics``
  sees the targets and predictions, for the batch accuracy.

The rows stay on the device and are fetched in one transfer at each flush,
so the step never waits for the host. The row has the TensorFlow recorder's
layout (`RowLayout`), so everything after the flush is shared.

Example:

>>> ProbeLayout(bins=40).size  # 7 forward statistics, 1 backprop, 40 bins and their range
50
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from gradscope.instance_wrappers import unwrap, wrap
from gradscope.model_layers import LayerSpec
from gradscope.portable_stats import (
    FORWARD_STATS,
    batch_accuracy,
    finite_or_inf,
    forward_stats,
    histogram,
    sq_norm,
)
from gradscope.rows import RowLayout, Rows

_F = len(FORWARD_STATS)
_NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class ProbeLayout:
    """What one layer's probe vector carries back as its "gradient".

    ``[forward statistics (7) | mean square of d(loss)/d(output) (1) |
    histogram counts (bins) | histogram range (2)]``; the probe's own value
    is zero but for its first entry, which asks for the histogram.
    """

    bins: int

    @property
    def size(self) -> int:
        return _F + 1 + self.bins + 2

    def split(self, v: Any) -> tuple[Any, Any, Any]:
        """(forward statistics, backprop mean square, histogram counts + range) of a probe gradient."""
        return v[:_F], v[_F], v[_F + 1:]


class LayerTap:
    """The identity on one layer's output whose gradient is its statistics.

    Args:
        activation: the layer's activation name, or None.
        threshold: the saturation threshold.
        forward: measure the output's statistics (``activation_stats``).
        layout: the probe's `ProbeLayout`.
    """

    def __init__(self, activation: str | None, threshold: float, forward: bool, layout: ProbeLayout) -> None:
        self.activation = activation
        self.threshold = threshold
        self.forward = forward
        self.layout = layout

        @jax.custom_vjp
        def tap(x: Any, probe: Any) -> Any:
            return x

        tap.defvjp(self._fwd, self._bwd)
        self.tap = tap

    def _fwd(self, x: Any, probe: Any) -> tuple[Any, Any]:
        bins = self.layout.bins
        if not self.forward:
            return x, (jnp.full((_F,), _NAN, jnp.float32), jnp.zeros((bins + 2,), jnp.float32))
        stats = jnp.asarray(forward_stats(x, self.activation, self.threshold), jnp.float32)

        def binned() -> Any:
            counts, bounds = histogram(x, self.activation, bins)
            return jnp.concatenate([jnp.asarray(counts, jnp.float32), jnp.asarray(bounds, jnp.float32)])

        # The histogram costs a pass of binning: only on the steps that ask.
        hist = jax.lax.cond(probe[0] > 0, binned, lambda: jnp.zeros((bins + 2,), jnp.float32))
        return x, (stats, hist)

    def _bwd(self, residuals: Any, g: Any) -> tuple[Any, Any]:
        stats, hist = residuals
        ms = jnp.mean(jnp.square(g.astype(jnp.float32)))
        return g, jnp.concatenate([stats, ms[None], hist])


@jax.custom_vjp
def _loss_tap(loss: Any, unscaled: Any, probe: Any) -> Any:
    return loss


def _loss_fwd(loss: Any, unscaled: Any, probe: Any) -> tuple[Any, Any]:
    return loss, (unscaled, jnp.zeros_like(unscaled))


def _loss_bwd(residuals: Any, g: Any) -> tuple[Any, Any, Any]:
    unscaled, zero = residuals
    return g, zero, jnp.reshape(jnp.asarray(unscaled, jnp.float32), (1,))


_loss_tap.defvjp(_loss_fwd, _loss_bwd)


@dataclasses.dataclass
class Coverage:
    """What the traced step reached, for the session's notices (as `Staging` says it on TensorFlow)."""

    seen_forward: set[int] = dataclasses.field(default_factory=set)
    seen_backprop: set[int] = dataclasses.field(default_factory=set)
    seen_gradients: bool = False
    #: The run scales its loss (a `LossScaleOptimizer`): a non-finite step is the scaler's to skip.
    loss_scaled: bool = False


class HostSchedule:
    """Which steps are recorded, decided on the host: the JAX step takes the
    decision as an argument, so there is no counter on the device. The
    same steps as the TensorFlow `Schedule`.

    Args:
        every: record every N-th step. Defaults to `1`.
        weights_every: of the recorded steps, measure the weight and update
            norms on every N-th only. Defaults to `1`.
    """

    def __init__(self, every: int = 1, weights_every: int = 1) -> None:
        self.every = int(every)
        self.weights_every = int(weights_every)
        #: The global step of the next step.
        self.step = 0

    def recorded(self) -> bool:
        """The next step is recorded."""
        return self.step % self.every == 0

    def weighing(self) -> bool:
        """The next step also measures the weight and update norms."""
        return self.step % (self.every * self.weights_every) == 0

    def start_at(self, step: int) -> None:
        """Sets the global step of the next step."""
        self.step = int(step)


class HostHistograms:
    """The activation histograms: asked for by the host, taken by the next recorded step."""

    def __init__(self) -> None:
        self.wanted = False
        self._taken: tuple[int, Any] | None = None  # (step, (L, bins + 2) device array)

    def request(self) -> None:
        """Asks the next recorded step for the histograms."""
        self.wanted = True

    def take(self, step: int, hist: Any) -> None:
        """Keeps ``hist`` (on the device) as the histograms of ``step``."""
        self._taken = (step, hist)
        self.wanted = False

    def read(self) -> dict | None:
        """The last histograms taken, ``{"step", "ranges", "counts"}``, or None."""
        if self._taken is None:
            return None
        step, hist = self._taken
        h = np.asarray(jax.device_get(hist), np.float64)
        return {"step": step, "counts": h[:, :-2], "ranges": h[:, -2:]}

    def clear(self) -> None:
        self._taken, self.wanted = None, False


class JaxRecorder:
    """The JAX step's rows, kept on the device until `flush`.

    It offers what `RecordingSession` uses of the TensorFlow `Recorder`:
    ``schedule``, ``histograms``, ``stage`` (here a `Coverage`),
    ``var_layer``, ``flush()`` and ``restart()``.

    Args:
        layer_activations: the activation name of each watched layer (or None).
        var_layer: for each watched variable, the index of its layer.
        every: record every N-th step only. Defaults to `1`.
        activation_stats: measure the layers' outputs. Defaults to `True`.
        weights_every: weight and update norms on every N-th recorded step. Defaults to `1`.
        saturation_threshold: |a| at which a tanh unit counts as saturated. Defaults to `0.99`.
        histogram_bins: bins of the activation histograms. Defaults to `40`.
        capacity: rows kept between two flushes. Defaults to `1024`.
    """

    def __init__(
        self,
        layer_activations: Sequence[str | None],
        var_layer: Sequence[int],
        *,
        every: int = 1,
        activation_stats: bool = True,
        weights_every: int = 1,
        saturation_threshold: float = 0.99,
        histogram_bins: int = 40,
        capacity: int = 1024,
    ) -> None:
        self.activations = list(layer_activations)
        self.var_layer = list(var_layer)
        self.layout = RowLayout(len(self.activations), len(self.var_layer))
        self.probe = ProbeLayout(int(histogram_bins))
        self.activation_stats = bool(activation_stats)
        self.saturation_threshold = float(saturation_threshold)
        self.schedule = HostSchedule(every, weights_every)
        self.histograms = HostHistograms()
        self.stage = Coverage()
        #: (global step, row on the device) of the rows since the last flush; past
        #: ``capacity`` (nobody flushes: an interrupted fit) the oldest are dropped and counted as lost.
        self.pending: collections.deque[tuple[int, Any]] = collections.deque(maxlen=int(capacity))
        self._lost = 0
        #: The compiled steps, kept across fits of the same model.
        self.steps: RecordedSteps | None = None

    def add(self, step: int, row: Any) -> None:
        """Keeps one step's row (a device array) until the next flush."""
        self._lost += len(self.pending) == self.pending.maxlen
        self.pending.append((step, row))

    def flush(self) -> Rows:
        """The rows recorded since the last flush, stacked on the device and fetched in one transfer."""
        pending, lost = list(self.pending), self._lost
        self.pending.clear()
        self._lost = 0
        if not pending:
            rows = self.layout.split(np.zeros((0, self.layout.width), np.float32), np.zeros(0, np.int64))
        else:
            block = np.asarray(jax.device_get(jnp.stack([row for _, row in pending])))
            rows = self.layout.split(block, np.array([s for s, _ in pending], np.int64))
        rows.lost = lost
        return rows

    def restart(self) -> None:
        """A new record: step 0 next, no pending rows, no histograms yet."""
        self.pending.clear()
        self._lost = 0
        self.schedule.start_at(0)
        self.histograms.clear()


class NoApply(RuntimeError):
    """The traced train_step applied no gradients through ``optimizer.stateless_apply``."""


@dataclasses.dataclass
class StepTrace:
    """What the wrappers hand each other while the recorded step is traced."""

    model_vars: int  # the model's own trainable variables (the probes follow them)
    probes: list[Any] | None = None  # the layers' probes, while the forward pass runs
    probe_grads: list[Any] | None = None
    grads: list[Any] | None = None
    before: list[Any] | None = None
    after: list[Any] | None = None
    scale: Any = None
    accuracy: Any = None
    tapped: set[int] = dataclasses.field(default_factory=set)


class RecordedSteps:
    """The compiled steps of one model: recorded, and plain (``every > 1``).

    Built once per model and record: compiling costs as much as dozens of
    steps, so later ``fit`` calls reuse them.
    """

    def __init__(self, hooks: JaxHooks, plain_train: Any) -> None:
        self.hooks = hooks
        self.model = hooks.model
        self.optimizer = hooks.model.optimizer
        self.plain_train = plain_train
        # The probes ride in as extra trainable variables, which only Keras'
        # own train_step hands on untouched to compute_loss_and_updates; a
        # train_step of the user's own could see them (in a clipping norm,
        # say). There, the gradients it applies are recorded, and no more.
        self.with_probes = type(self.model).train_step is keras.Model.train_step
        #: Nothing can be recorded (the step applies no gradients gradscope sees): plain steps only.
        self.disabled = False
        #: How many times the recorded step was traced (compiled).
        self.traces = 0
        self.recorded = jax.jit(self._recorded_step, donate_argnums=0)
        self.plain = jax.jit(self._plain_step, donate_argnums=0)

    def fits(self, model: Any, plain_train: Any) -> bool:
        """Still valid for ``model``: the same model and optimizer, and Keras'
        own train function unchanged (a ``compile()`` in between makes a new
        one, and may have changed the loss the compiled step bakes in)."""
        return model is self.model and model.optimizer is self.optimizer and plain_train is self.plain_train

    def _plain_step(self, state: Any, data: Any) -> Any:
        return type(self.model).train_step(self.model, state, data)

    def _recorded_step(self, state: Any, data: Any, flags: Any) -> Any:
        hooks, recorder = self.hooks, self.hooks.recorder
        self.traces += 1
        tv, ntv, ov, mv = state
        L = len(hooks.specs)
        trace = StepTrace(model_vars=len(tv))
        probes = []
        if self.with_probes:
            first = jnp.zeros((recorder.probe.size,), jnp.float32).at[0].set(flags[0].astype(jnp.float32))
            probes = [first] * L + [jnp.zeros((1,), jnp.float32)]  # the layers', then the loss's
        hooks.trace = trace
        try:
            logs, state = type(self.model).train_step(self.model, (list(tv) + probes, ntv, ov, mv), data)
        finally:
            hooks.trace = None
        if trace.grads is None:
            raise NoApply("the model's train_step never called optimizer.stateless_apply")
        return logs, state, self.row(trace, flags[1] > 0)

    def row(self, t: StepTrace, weigh: Any) -> tuple[Any, Any]:
        """The step's row in `RowLayout` order, and its histograms (L, bins + 2)."""
        hooks, recorder = self.hooks, self.hooks.recorder
        L, V = recorder.layout.layers, recorder.layout.variables
        inv_scale2 = 1.0 / jnp.square(t.scale)
        nan_l = jnp.full((L,), _NAN, jnp.float32)
        forward, backprop, hists = [], [], []
        pg = t.probe_grads
        for i in range(L):
            if pg is not None and i in t.tapped:
                f, ms, h = recorder.probe.split(pg[i])
                forward.append(f)
                backprop.append(ms * inv_scale2)
                hists.append(h)
            else:
                forward.append(jnp.full((_F,), _NAN, jnp.float32))
                backprop.append(nan_l[0])
                hists.append(jnp.zeros((recorder.probe.bins + 2,), jnp.float32))
        cols = hooks.columns  # model variable index of each watched variable
        grad = jnp.stack([sq_norm(t.grads[i]) for i in cols]) * inv_scale2 if V else jnp.zeros((0,))

        def weights() -> tuple[Any, Any]:
            w = jnp.stack([sq_norm(t.after[i]) for i in cols])
            u = jnp.stack([sq_norm(t.after[i] - t.before[i]) for i in cols])
            return finite_or_inf(w), finite_or_inf(u)

        def skipped() -> tuple[Any, Any]:
            nan = jnp.full((V,), _NAN, jnp.float32)
            return nan, nan

        weight, update = jax.lax.cond(weigh, weights, skipped) if V else (jnp.zeros((0,)), jnp.zeros((0,)))
        loss = pg[L][0] if pg is not None else jnp.float32(_NAN)
        accuracy = t.accuracy if t.accuracy is not None else jnp.float32(_NAN)
        scalars = jnp.stack([jnp.asarray(loss, jnp.float32), jnp.asarray(accuracy, jnp.float32),
                             jnp.asarray(t.scale, jnp.float32)])
        parts = {"forward": jnp.stack(forward), "backprop_sq": jnp.stack(backprop),
                 "grad_sq": finite_or_inf(grad), "weight_sq": weight, "update_sq": update, "scalars": scalars}
        row = recorder.layout.concat(parts)
        return row, jnp.stack(hists)


class JaxHooks:
    """Installs and removes gradscope's wrappers on one model under JAX.

    It offers what `RecordingSession` uses of the TensorFlow `Hooks`:
    ``install``, ``remove``, ``suspend``, ``resume`` and ``applied_by``.

    Args:
        model: a built, compiled Keras model.
        recorder: the `JaxRecorder` the rows go to.
        specs: the watched layers.
    """

    def __init__(self, model: Any, recorder: JaxRecorder, specs: list[LayerSpec]) -> None:
        self.model = model
        self.recorder = recorder
        self.specs = specs
        self.columns = [i for s in specs for i in s.var_indices]
        self.applied_by: dict[int, str] = {}
        self.trace: StepTrace | None = None
        self.taps = [LayerTap(s.activation, recorder.saturation_threshold, recorder.activation_stats,
                              recorder.probe) for s in specs]
        self.installed: list[tuple[Any, str]] = []
        self._plain_train: Any = None
        self._flag_arrays: dict[tuple[bool, bool], Any] = {}
        # One bound method, so remove() can tell it is still the one installed.
        self._installed_train = self._train_function

    # -- install / remove ------------------------------------------------------
    def install(self) -> None:
        """Wraps the model's and optimizer's methods and puts gradscope's train function in place.

        Raises:
            HookError: no optimizer, ``run_eagerly=True`` or ``jit_compile=False``.
            DistributionError: under ``keras.distribution``.
        """
        from gradscope.errors import DistributionError, HookError

        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "stateless_apply"):
            raise HookError("the model has no Keras optimizer to hook; compile it (model.compile(optimizer=...)) "
                            "before training")
        if keras.distribution.distribution() is not None:
            raise DistributionError(
                "gradscope does not record under keras.distribution on the JAX backend yet; record a "
                "single-device run, or use the TensorFlow backend's tf.distribute (docs/backends.md)")
        if getattr(model, "run_eagerly", False):
            raise HookError("run_eagerly=True: the JAX backend records compiled steps only")
        if not getattr(model, "jit_compile", True):
            raise HookError("jit_compile=False: the JAX backend records compiled steps only")
        # A LossScaleOptimizer skips non-finite steps itself: not reported as fatal.
        self.recorder.stage.loss_scaled = hasattr(optimizer, "inner_optimizer")
        self._patch(model, "compute_loss_and_updates", self._wrap_loss_and_updates)
        self._patch(model, "compute_metrics", self._wrap_compute_metrics)
        self._patch(optimizer, "stateless_apply", self._wrap_stateless_apply)
        for i, spec in enumerate(self.specs):
            if spec.layer is not model:
                self._patch(spec.tap, "call", self._wrap_layer_call(i))
        recorder = self.recorder
        self._plain_train = model.train_function
        if recorder.steps is None or not recorder.steps.fits(model, self._plain_train):
            recorder.steps = RecordedSteps(self, self._plain_train)
        else:
            recorder.steps.hooks = self  # the compiled steps call back into the hooks only while traced
        object.__setattr__(model, "train_function", self._installed_train)

    def remove(self) -> None:
        """Takes the wrappers off and gives the model back Keras' own train function."""
        for obj, name in reversed(self.installed):
            unwrap(obj, name)
        self.installed.clear()
        if self.model.__dict__.get("train_function") is self._installed_train:
            object.__setattr__(self.model, "train_function", self._plain_train)

    def suspend(self) -> None:
        """Nothing to do: evaluation traces its own step, where the wrappers pass through."""

    def resume(self) -> None:
        """See `suspend`."""

    def _patch(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        wrap(obj, name, make)
        self.installed.append((obj, name))

    # -- the wrappers (they act only while the recorded step is traced) -----------------
    def _wrap_loss_and_updates(self, original: Callable) -> Callable:
        def compute_loss_and_updates(trainable_variables, *args, **kwargs):
            t = self.trace
            if t is None or len(trainable_variables) <= t.model_vars:
                return original(trainable_variables, *args, **kwargs)
            own, probes = list(trainable_variables[:t.model_vars]), list(trainable_variables[t.model_vars:])
            t.probes = probes[:-1]
            try:
                loss, aux = original(own, *args, **kwargs)
            finally:
                t.probes = None
            return _loss_tap(loss, aux[0], probes[-1]), aux

        return compute_loss_and_updates

    def _wrap_layer_call(self, index: int) -> Callable[[Callable], Callable]:
        def make(original: Callable) -> Callable:
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                t = self.trace
                if t is None or t.probes is None or not _float_array(out) or index in t.tapped:
                    # A layer called twice in one step is measured at its first call:
                    # a second tap of the same probe would add the two calls' statistics.
                    return out
                t.tapped.add(index)
                self.recorder.stage.seen_backprop.add(index)
                if self.recorder.activation_stats:
                    self.recorder.stage.seen_forward.add(index)
                return self.taps[index].tap(out, t.probes[index])

            return call

        return make

    def _wrap_compute_metrics(self, original: Callable) -> Callable:
        def compute_metrics(x, y, y_pred, sample_weight=None):
            t = self.trace
            if t is not None and _float_array(y_pred):
                t.accuracy = batch_accuracy(y, y_pred)
            return original(x, y, y_pred, sample_weight)

        return compute_metrics

    def _wrap_stateless_apply(self, original: Callable) -> Callable:
        optimizer = self.model.optimizer

        def stateless_apply(optimizer_variables, grads, trainable_variables):
            t = self.trace
            if t is None:
                return original(optimizer_variables, grads, trainable_variables)
            grads, trainable_variables = list(grads), list(trainable_variables)
            n = t.model_vars
            if len(grads) > n:
                t.probe_grads = grads[n:]
                grads, trainable_variables = grads[:n], trainable_variables[:n]
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables,
                                                             strict=True))):
                # The gradients come scaled under mixed precision; the row holds them unscaled.
                t.scale = jnp.asarray(optimizer.scale_loss(jnp.float32(1.0)), jnp.float32)
            new_tv, new_ov = original(optimizer_variables, grads, trainable_variables)
            t.grads, t.before, t.after = grads, trainable_variables, list(new_tv)
            self.recorder.stage.seen_gradients = True
            return new_tv, new_ov

        return stateless_apply

    # -- the train function fit calls ----------------------------------------------------
    def _train_function(self, state: Any, iterator: Any) -> tuple[Any, Any]:
        """Runs ``steps_per_execution`` steps, as Keras' own does, recording each one due."""
        recorder, steps = self.recorder, self.recorder.steps
        logs = None
        for k in range(max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))):
            try:
                data = next(iterator)
            except StopIteration:
                if k == 0:
                    raise
                break
            schedule = recorder.schedule
            if schedule.recorded() and not steps.disabled:
                flags = self._flags(recorder.histograms.wanted, schedule.weighing())
                logs, state, (row, hist) = self._call_recorded(steps, state, data, flags)
                if row is None:  # nothing could be recorded
                    schedule.step += 1
                    continue
                recorder.add(schedule.step, row)
                if recorder.histograms.wanted:
                    if recorder.activation_stats and steps.with_probes:
                        recorder.histograms.take(schedule.step, hist)
                    else:  # nothing was binned: no histograms, as on TensorFlow
                        recorder.histograms.wanted = False
            else:
                logs, state = steps.plain(state, data)
            schedule.step += 1
        return logs, state

    def _flags(self, histogram: bool, weigh: bool) -> Any:
        """The step's flags as a device array, made once per combination (a new
        array every step would be a transfer to the device every step)."""
        key = (bool(histogram), bool(weigh))
        if key not in self._flag_arrays:
            self._flag_arrays[key] = jnp.asarray(np.array(key, np.int32))
        return self._flag_arrays[key]

    def _call_recorded(self, steps: RecordedSteps, state: Any, data: Any, flags: Any) -> Any:
        try:
            return steps.recorded(state, data, flags)
        except NoApply:
            # Training goes on unrecorded; the monitor says so when fit ends.
            steps.disabled = True
            logs, state = steps.plain(state, data)
            return logs, state, (None, None)


def _float_array(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and hasattr(x, "shape") and jnp.issubdtype(dtype, jnp.floating)
