"""gradscope's own training loop: one compiled `tf.GradientTape` step per batch.

It is a plain loop, written to be read. The recording is not in here: the
loop makes (or is given) a `GradientMonitor`, which hooks the model exactly
as it does under ``model.fit``. So the loop and ``fit`` record the same
numbers, and any Keras callback (``CSVLogger``, ``EarlyStopping``, ...) works
with both.

Example:

>>> import numpy as np, keras, gradscope
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
...                           keras.layers.Dense(2)])
>>> history = gradscope.train(model, np.ones((64, 4)), np.ones((64, 2)), loss="mse",
...                           optimizer="adam", batch_size=16, epochs=1)
>>> history["grad_norm"].shape
(4, 2)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gradscope.distributed import on_replicas, outside_strategy, strategy_of
from gradscope.history import GradientHistory
from gradscope.monitor import GradientMonitor
from gradscope.session import notice, whole_number
from gradscope.stats import batch_accuracy


def train(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    loss: Any = None,
    optimizer: Any = None,
    batch_size: int = 128,
    epochs: int | None = None,
    steps: int | None = None,
    validation_data: tuple[Any, Any] | Any = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    verbose: int = 0,
    jit_compile: bool | str = False,
) -> GradientHistory:
    """Trains ``model`` and returns the `GradientHistory` of every step.

    Args:
        model: any Keras 3 model. If ``loss`` or ``optimizer`` is given, or
            the model is not compiled yet, it is compiled with them.
        x, y: numpy arrays (or tensors), or ``x`` a `tf.data.Dataset` of
            ``(x, y)`` batches and ``y`` None.
        loss: a Keras loss or its name. Defaults to the compiled one.
        optimizer: a Keras optimizer or its name. Defaults to the compiled
            one, or `"adam"`.
        batch_size: samples per step, for arrays. Defaults to `128`.
        epochs: passes over the data. Defaults to `1` when ``steps`` is not
            given either.
        steps: stop after this many steps in all, even mid-epoch. Defaults
            to `None` (run the epochs). Without ``epochs``, a dataset of
            unknown length is passed over again until ``steps``.
        validation_data: ``(x_val, y_val)`` (giving ``val_loss`` and
            ``val_accuracy`` logs at each epoch end, and every ``evaluate_every`` steps of the
            monitor's within an epoch) or a dataset (``val_loss``).
        callbacks: Keras callbacks. A `GradientMonitor` among them is used
            for the recording; otherwise one is made, kept for the model's
            next call (each call still returns a history of its own).
        shuffle: reshuffle arrays every epoch. Defaults to `True`.
        seed: seed of the shuffling. Defaults to `None`.
        verbose: passed to the monitor that is made here (``1``: live table
            and summary). Defaults to `0`.
        jit_compile: compile the step with XLA: `True`, `False`, or `"auto"`
            (XLA, unless it cannot compile this model's step: then, with a
            one-line notice, without). Defaults to `False`.

    Raises:
        TypeError: ``model`` is not a Keras model, or a count is not a whole number.
        RuntimeError: Keras runs on another backend than TensorFlow.
        ValueError: a count below 1 (``batch_size=0``), no loss to train with,
            or arrays ``x`` and ``y`` of different lengths.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"train(model, ...): model must be a keras.Model; got {type(model).__name__}")
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"gradscope.train runs on Keras' TensorFlow backend (its step is a tf.GradientTape); Keras runs on "
            f"{keras.backend.backend()} here: use model.fit(..., callbacks=[gradscope.GradientMonitor()]) "
            "instead, which records on JAX too (docs/backends.md)")
    batch_size = whole_number("batch_size", batch_size)
    epochs = None if epochs is None else whole_number("epochs", epochs)
    steps = None if steps is None else whole_number("steps", steps)
    if loss is not None or optimizer is not None or getattr(model, "optimizer", None) is None:
        model.compile(
            optimizer=optimizer if optimizer is not None else (getattr(model, "optimizer", None) or "adam"),
            loss=loss if loss is not None else getattr(model, "loss", None),
        )
    if getattr(model, "loss", None) is None and type(model).compute_loss is keras.Model.compute_loss:
        raise ValueError("train(model, ...): no loss to train with; pass loss=... (e.g. loss=\"mse\") "
                         "or compile the model with one")
    callbacks = list(callbacks or [])
    monitor = next((c for c in callbacks if isinstance(c, GradientMonitor)), None)
    if monitor is None:
        # One per model, kept between calls like fit's train_function: its
        # record restarts each call, but the step traced with it is reused.
        monitor = model.__dict__.get(_DEFAULT_MONITOR)
        if monitor is None:
            monitor = GradientMonitor(continue_history=False)
            # Kept on the model itself, so it lives and dies with it (a weak
            # mapping would not let go: the monitor refers to its model).
            # object.__setattr__ skips Keras' attribute tracking.
            object.__setattr__(model, _DEFAULT_MONITOR, monitor)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2; got {verbose!r}")
        monitor.verbose = verbose
        callbacks.insert(0, monitor)

    strategy = strategy_of(model)
    batches = _Batches(x, y, batch_size, shuffle, seed, strategy)
    if epochs is None and steps and not batches.per_epoch:
        # A dataset of unknown length (e.g. after .filter): pass over it again
        # until `steps`; each pass has at least one step, so `steps` passes suffice.
        epochs = steps
    elif epochs is None:
        epochs = math.ceil(steps / batches.per_epoch) if steps else 1
    total = steps if steps is not None else (batches.per_epoch * epochs if batches.per_epoch else None)
    if steps is not None and batches.per_epoch:
        epochs = min(epochs, math.ceil(steps / batches.per_epoch))

    cbks = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=False, model=model)
    cbks.set_params(
        {"verbose": 0, "epochs": epochs, "steps": batches.per_epoch, "batch_size": batch_size, "total_steps": total}
    )
    model.stop_training = False
    if not model.built or not model.trainable_variables:
        # Build it on one sample now, so the monitor can hook it before the
        # first step (Keras' fit would build it inside the first trace).
        model(batches.sample())

    cbks.on_train_begin()
    # Traced after on_train_begin, so the trace includes the monitor's hooks.
    xla = jit_compile == "auto" or bool(jit_compile)
    step_fn, sums = _compiled_step(monitor, model, batches, xla)
    if jit_compile == "auto":
        step_fn = _WithoutXlaIfRefused(step_fn, sums, lambda: _compiled_step(monitor, model, batches, False))
    done = 0
    logs: dict[str, Any] = {}
    try:
        for epoch in range(epochs):
            cbks.on_epoch_begin(epoch)
            sums.assign(tf.zeros(3))
            for batch, inputs in enumerate(batches.epoch()):
                if total is not None and done >= total:
                    break
                cbks.on_train_batch_begin(batch)
                mean_loss, mean_acc = step_fn(*inputs)
                done += 1
                batch_logs = {"loss": mean_loss, "accuracy": mean_acc}
                if validation_data is not None and monitor.evaluation_due(done, batch):
                    # On the monitor's schedule (evaluate_every), which records these logs.
                    with monitor.session.paused():
                        batch_logs.update(_validate(model, validation_data, batch_size))
                cbks.on_train_batch_end(batch, batch_logs)
                if model.stop_training:
                    break
            # After a fallback from XLA the plain step sums into its own variable.
            sums = getattr(step_fn, "sums", sums)
            loss_sum, acc_sum, seen = (float(v) for v in sums.numpy())
            logs = {"loss": loss_sum / max(seen, 1), "accuracy": acc_sum / max(seen, 1)}
            if validation_data is not None:
                with monitor.session.paused():
                    logs.update(_validate(model, validation_data, batch_size))
            cbks.on_epoch_end(epoch, logs)
            if model.stop_training or (total is not None and done >= total):
                break
    finally:
        # Ctrl-C or an error still closes the run, so every recorded step is kept.
        cbks.on_train_end(logs)
    return monitor.history


#: The attribute that keeps, on a model, the monitor `train` made for it when given none.
_DEFAULT_MONITOR = "_gradscope_default_monitor"


def _compiled_step(monitor: GradientMonitor, model: keras.Model, batches: _Batches, jit_compile: bool):
    """The compiled step and its epoch sums, kept by the monitor's session for
    its next train() on the same model: tracing costs as much as dozens of steps."""

    def build() -> tuple[Any, tf.Variable]:
        sums = outside_strategy(  # loss, accuracy, samples; summed by every replica
            lambda: tf.Variable(tf.zeros(3), trainable=False, name="gradscope_epoch_sums"))
        fn = tf.function(batches.wrap(_make_step(model, sums)), jit_compile=jit_compile, reduce_retracing=True)
        return _Direct(fn), sums

    step = monitor.session.loop_step(model, (bool(jit_compile), batches.dataset is None), build)
    return step.function, step.state


class _WithoutXlaIfRefused:
    """The XLA step, until XLA refuses to compile it: then, once and with a
    one-line notice, the same step without XLA (``jit_compile="auto"``)."""

    def __init__(self, xla_step: Any, sums: tf.Variable, make_plain: Any) -> None:
        self.step, self.sums, self.make_plain, self.checked = xla_step, sums, make_plain, False

    def __call__(self, *inputs: Any) -> Any:
        if self.checked:
            return self.step(*inputs)
        try:
            result = self.step(*inputs)  # the first call compiles; a refusal changes nothing
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
            message = str(exc)
            if "XLA" not in message and "compile" not in message:
                raise
            op = re.search(r"No registered '(\w+)'", message)
            notice(f"gradscope: XLA cannot compile this model's step{f' ({op.group(1)})' if op else ''}; "
                   "training without XLA")
            self.step, plain_sums = self.make_plain()
            plain_sums.assign(self.sums)  # the epoch's sums so far go on in the plain step's variable
            self.sums = plain_sums
            result = self.step(*inputs)
        self.checked = True
        return result


class _Direct:
    """Calls a `tf.function` through its concrete function for each batch
    size, traced on first use: that skips the argument matching every call
    of a `tf.function` does, about 1% of a step of the lecture's network."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.concrete: dict[tuple, Any] = {}

    def __call__(self, *inputs: Any) -> Any:
        if not isinstance(inputs[-1], int):  # a tf.data batch: shapes may vary
            return self.fn(*inputs)
        # The arrays' shapes and dtypes, and the batch size: what a trace fixes.
        key = (inputs[-1],) + tuple((t.dtype, tuple(t.shape)) for t in inputs[:3])
        concrete = self.concrete.get(key)
        if concrete is None:
            concrete = self.concrete[key] = self.fn.get_concrete_function(*inputs)
        return concrete(*inputs)


def _make_step(model: keras.Model, sums: tf.Variable):
    def step(xb, yb):
        # Under tf.distribute Keras scales each replica's loss by 1/replicas.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            y_pred = model(xb, training=True)
            loss = model.compute_loss(x=xb, y=yb, y_pred=y_pred, training=True)
            scaled = model.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        n = tf.cast(tf.shape(y_pred)[0], tf.float32)
        acc = batch_accuracy(yb, y_pred)
        sums.assign_add(tf.stack([tf.cast(loss, tf.float32) * (n * replicas), acc * n, n]))
        return means()

    def means():
        return sums[0] / sums[2], sums[1] / sums[2]

    strategy = strategy_of(model)
    return step if strategy is None else on_replicas(strategy, step, means)


class _Batches:
    """Batches of arrays kept on the device, or of a `tf.data.Dataset`.

    Arrays are converted to tensors once; each epoch's shuffled order is one
    small tensor, and the compiled step slices its own batch out of it, so a
    step costs one call from Python and no per-batch host copies.
    """

    def __init__(self, x: Any, y: Any, batch_size: int, shuffle: bool, seed: int | None, strategy: Any = None) -> None:
        self.dataset = x if isinstance(x, tf.data.Dataset) else None
        if self.dataset is not None:
            # Under tf.distribute each replica gets its share of every batch.
            self.batches = self.dataset if strategy is None else strategy.experimental_distribute_dataset(self.dataset)
            card = int(self.dataset.cardinality())
            self.per_epoch = card if card > 0 else 0
            return
        if y is None:
            raise ValueError("train(model, x, y): y is required unless x is a tf.data.Dataset")
        if len(x) != len(y):
            raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("x is empty")
        self.x = tf.constant(np.asarray(x))
        self.y = tf.constant(np.asarray(y))
        self.n = int(len(x))
        self.batch_size = int(batch_size)
        self.per_epoch = math.ceil(self.n / self.batch_size)
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = tf.Variable(tf.range(self.n, dtype=tf.int32), trainable=False, name="gradscope_order")
        self.starts = [
            (tf.constant(s, tf.int32), min(self.batch_size, self.n - s)) for s in range(0, self.n, self.batch_size)
        ]

    def wrap(self, step):
        """The step as the loop calls it: on a batch, or on a slice of the order.

        The arrays and the order are arguments, not captured constants, so one
        trace serves every train() call with data of the same shapes.
        """
        if self.dataset is not None:
            return step

        def array_step(x, y, order, start, size):
            # Gathered, not tf.slice'd: XLA takes a slice's start as a
            # compile-time constant and would compile the step once per batch.
            idx = tf.gather(order, start + tf.range(size))
            return step(tf.gather(x, idx), tf.gather(y, idx))

        return array_step

    def sample(self) -> Any:
        """One input sample (batch of 1), to build a model with."""
        if self.dataset is not None:
            xb = next(iter(self.dataset))[0]
            return tf.nest.map_structure(lambda t: t[:1], xb)
        return self.x[:1]

    def epoch(self):
        if self.dataset is not None:
            yield from self.batches
            return
        if self.shuffle:
            self.order.assign(self.rng.permutation(self.n).astype(np.int32))
        # `size` is a Python int: one trace for full batches, one for the
        # last, partial batch (XLA needs static shapes).
        for start, size in self.starts:
            yield self.x, self.y, self.order, start, size


def _validate(model: keras.Model, data: Any, batch_size: int) -> dict[str, float]:
    if isinstance(data, tf.data.Dataset):
        logs = model.evaluate(data, verbose=0, return_dict=True)
        return {"val_loss": float(logs["loss"])}
    # Arrays: one prediction pass gives both the loss and the accuracy.
    xv, yv = data[0], data[1]
    y_pred = tf.constant(model.predict(xv, batch_size=max(batch_size, 512), verbose=0))
    yv = tf.constant(np.asarray(yv))
    loss = model.compute_loss(x=None, y=yv, y_pred=y_pred, training=False)
    return {"val_loss": float(loss), "val_accuracy": float(batch_accuracy(yv, y_pred))}
