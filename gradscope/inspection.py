"""Inspecting any Keras model: its gradients at its own weights, or over a few training steps.

`inspect` is the Python side of ``gradscope inspect MODEL.keras``. With
``steps=0`` it records the gradients of a few batches at the model's weights,
which stay as they are (a copy is stepped by a zero learning rate, so nothing
moves); with ``steps=N`` it trains a copy for N steps. Either way the
recording is gradscope's own (a `GradientMonitor` under `gradscope.train`),
so the record, the verdict and the tables are those of any other run.

The model's compile config gives the loss and the optimizer; arguments
override them. Data that does not fit the model is refused before any step,
with one line naming the expected shape and the given one (`InspectError`).

Example:

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
...                           keras.layers.Dense(2, name="out")])
>>> model.compile(loss="mse")
>>> history = inspect(model, np.ones((32, 4)), np.zeros((32, 2)), batch_size=8)
>>> history.layers, len(history)
(['hidden', 'out'], 4)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradscope.history import GradientHistory
from gradscope.model_data import SYNTHETIC_NOTICE, InspectError, fit_data, model_inputs, read_data, synthetic_data

#: Batches whose gradients ``steps=0`` records (fewer when the data has fewer).
DEFAULT_BATCHES = 4


def load_model(path: str | Path) -> Any:
    """A saved Keras model (``.keras``, or a legacy ``.h5``) with its compile config, or `InspectError`.

    Args:
        path: the file written by ``model.save``.

    Example:

    >>> load_model("no/such/model.keras")
    Traceback (most recent call last):
    ...
    gradscope.model_data.InspectError: no/such/model.keras does not exist
    """
    import keras

    path = Path(path).expanduser()
    if not path.exists():
        raise InspectError(f"{path} does not exist")
    try:
        with warnings.catch_warnings():
            # An optimizer saved before its first step restores fewer variables
            # than it builds; Keras warns about it, and the state is empty anyway.
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(path)
    except Exception as exc:  # Keras raises ValueError, OSError, zip and JSON errors alike
        # Keras' first sentence says what it found; the rest is advice for another case.
        reason = " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__
        raise InspectError(f"{path} is not a saved Keras model ({reason}); expected a .keras file "
                           "written by model.save()") from None
    if not isinstance(model, keras.Model):
        raise InspectError(f"{path} holds a {type(model).__name__}, not a model; expected a .keras file "
                           "written by model.save()")
    return model


def inspect(
    model: Any,
    x: Any,
    y: Any,
    steps: int = 0,
    *,
    loss: Any = None,
    optimizer: Any = None,
    learning_rate: float | None = None,
    batch_size: int = 32,
    batches: int = DEFAULT_BATCHES,
    seed: int = 0,
    verbose: int = 0,
    console: Any = None,
    copy: bool = True,
    callbacks: Sequence[Any] | None = None,
) -> GradientHistory:
    """Records ``model``'s gradients on ``x, y``: at its weights (``steps=0``), or over ``steps`` training steps.

    ``model`` itself is not changed: its weights, optimizer and compile state
    stay as they are. Class labels (one whole number per sample) are turned
    into one-hot rows when the model has several outputs per sample and the
    loss is not a sparse one; flattened inputs are reshaped to the model's
    input shape when the sizes agree.

    Args:
        model: a Keras model with one input and one output.
        x: the inputs, samples first.
        y: the targets, samples first.
        steps: `0` records ``batches`` batches at the model's weights without
            changing them; N trains a copy N steps. Defaults to `0`.
        loss: a Keras loss or its name. Defaults to the compiled one.
        optimizer: a Keras optimizer or its name, for ``steps > 0``. Defaults
            to the compiled one, else `"adam"`.
        learning_rate: the optimizer's learning rate. Defaults to the
            compiled optimizer's, else `0.001`.
        batch_size: samples per batch. Defaults to `32`.
        batches: how many batches ``steps=0`` records, in order from the
            first sample. Defaults to `4`.
        seed: seed of the data order for ``steps > 0``. Defaults to `0`.
        verbose: `1` shows a live table while training and the summary at
            the end; `0` nothing. Defaults to `0`.
        console: a `rich.console.Console` for ``verbose``. Defaults to standard output.
        copy: work on a copy of ``model``. `False` works on ``model`` itself,
            for a model that is a copy already (just loaded from a file, say). Defaults to `True`.
        callbacks: more Keras callbacks for the steps. A `GradientMonitor`
            among them records (``verbose`` and ``console`` are then its own),
            so its record outlives an interruption. Defaults to `None`.

    Returns:
        The `GradientHistory`: one row per recorded batch.

    Raises:
        InspectError: the model has no trainable weights, no loss, several
            inputs or outputs, or the data does not fit it (the message gives
            the expected shape and the given one).
    """
    from gradscope.loop import train
    from gradscope.monitor import GradientMonitor
    from gradscope.session import whole_number

    steps = whole_number("steps", steps, minimum=0)
    batch_size, batches = whole_number("batch_size", batch_size), whole_number("batches", batches)
    check_model(model)
    work = _copy(model) if copy else model
    resolved_loss = resolve_loss(model, loss)
    work.compile(loss=resolved_loss, optimizer=_optimizer(model, optimizer, learning_rate, steps, copy))
    x, y = fit_data(work, x, y)
    check_model(work)  # built by now, if it was not before
    recorded = steps or min(batches, math.ceil(len(x) / batch_size))
    if not steps:
        x, y = x[: recorded * batch_size], y[: recorded * batch_size]
    callbacks = list(callbacks or [])
    monitor = next((c for c in callbacks if isinstance(c, GradientMonitor)), None)
    if monitor is None:
        monitor = GradientMonitor(verbose=verbose, console=console)
        callbacks.insert(0, monitor)
    monitor.config = {**monitor.config, "inspected": model.name, "batch_size": batch_size, "trained_steps": steps}
    # At the weights, the batches are taken in order (the first is x[:batch_size]).
    return train(work, x, y, batch_size=batch_size, steps=recorded, shuffle=steps > 0, seed=seed,
                 callbacks=callbacks)


def check_model(model: Any) -> None:
    """Refuses, in one line, a model without trainable weights or with several inputs.

    Args:
        model: the model to inspect.

    Example:

    >>> import keras
    >>> frozen = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, trainable=False)], name="frozen")
    >>> check_model(frozen)
    Traceback (most recent call last):
    ...
    gradscope.model_data.InspectError: model 'frozen' has no trainable weights (2 weights, none trainable): \
there is no gradient to inspect
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"inspect(model, ...): model must be a keras.Model; got {type(model).__name__}")
    if model.built and not model.trainable_variables:
        raise InspectError(f"model {model.name!r} has no trainable weights ({len(model.weights)} weights, none "
                           "trainable): there is no gradient to inspect")
    if model.built and len(model_inputs(model) or [None]) > 1:
        raise InspectError(f"model {model.name!r} has {len(model_inputs(model))} inputs; inspect feeds one input array")


def _copy(model: Any) -> Any:
    """A model like ``model`` with its own variables, holding the same values."""
    import keras

    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:
        raise InspectError(f"model {model.name!r} cannot be copied by keras.models.clone_model "
                           f"({type(exc).__name__}); pass copy=False to inspect the model itself") from None
    if model.built:
        clone.set_weights(model.get_weights())
    return clone


def resolve_loss(model: Any, loss: Any = None) -> Any:
    """The loss to use: ``loss`` if given (a name is checked), else the model's compiled one.

    Args:
        model: the model.
        loss: a Keras loss, its name, or None.

    Raises:
        InspectError: an unknown loss name, or no loss anywhere.

    Example:

    >>> import keras
    >>> resolve_loss(keras.Sequential([keras.layers.Dense(1)]))
    Traceback (most recent call last):
    ...
    gradscope.model_data.InspectError: the model has no loss (it was saved or made without compile): give one, \
e.g. --loss mse (loss="mse" in Python)
    """
    import keras

    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None and type(model).compute_loss is keras.Model.compute_loss:
            raise InspectError("the model has no loss (it was saved or made without compile): give one, "
                               'e.g. --loss mse (loss="mse" in Python)')
        return loss
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except (ValueError, TypeError):
            raise InspectError(f"unknown Keras loss {loss!r}; e.g. mse, categorical_crossentropy, "
                               "sparse_categorical_crossentropy, binary_crossentropy") from None
    return loss


def _optimizer(model: Any, optimizer: Any, learning_rate: float | None, steps: int, copied: bool) -> Any:
    import keras

    if steps == 0:
        # The gradients are recorded where the optimizer applies them; a zero
        # learning rate makes that apply leave every weight as it is.
        return keras.optimizers.SGD(learning_rate=0.0)
    own = getattr(model, "optimizer", None)
    if optimizer is None and own is not None:
        if not copied and learning_rate is None:
            return own  # the saved optimizer, with its state
        config = keras.optimizers.serialize(own)  # the model's own optimizer stays the model's
        if learning_rate is not None:
            config["config"]["learning_rate"] = learning_rate
        return keras.optimizers.deserialize(config)
    if optimizer is None or isinstance(optimizer, str):
        from gradscope.experiments import Config, ConfigError, check_names

        name, lr = optimizer or "adam", learning_rate or 1e-3
        try:
            # The checks `gradscope run` makes: a known name that can take one tiny step.
            check_names(Config(optimizer=name, lr=lr))
        except ConfigError as exc:
            raise InspectError(str(exc)) from None
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": lr}})
    if learning_rate is not None:
        optimizer.learning_rate = learning_rate
    return optimizer


def show_inspection(args: Any, console: Any, stop: Any = None) -> GradientHistory:
    """``gradscope inspect``: loads the model and the data, records, prints the tables and the verdict.

    Args:
        args: the parsed flags of ``gradscope inspect``.
        console: where to print.
        stop: the command's `gradscope.signals.StopSignals`. Defaults to `None` (none).

    Returns:
        The record.

    Raises:
        InspectError: a file that is not a model, or a model and data that do not fit, in one line.

    Example:

    >>> show_inspection(build_parser().parse_args(["inspect", "model.keras", "--synthetic"]), console)  # doctest: +SKIP
    """
    from gradscope.diagnosis import diagnose
    from gradscope.experiments import model_summary, shell_command
    from gradscope.monitor import GradientMonitor
    from gradscope.render.terminal import model_table, print_summary
    from gradscope.report import save_run
    from gradscope.run_folder import claim_run_folder, release_run_folder
    from gradscope.signals import StopSignals

    stop = stop or StopSignals()
    model = load_model(args.model)
    check_model(model)
    loss = resolve_loss(model, args.loss)
    try:
        console.print(model_table(model_summary(model)))
    except (AttributeError, ValueError):  # a subclassed model has no symbolic layer outputs to show
        console.print(f"model {model.name}: {model.count_params():,} parameters", highlight=False, markup=False)
    if args.synthetic:
        samples = args.batch_size * (DEFAULT_BATCHES if args.steps == 0 else min(args.steps, 16))
        x, y = synthetic_data(model, samples, loss, seed=args.seed)
        notices = [SYNTHETIC_NOTICE]
    else:
        x, y, notices = read_data(args.data, seed=args.seed)
    if args.steps == 0 and (args.optimizer or args.lr):
        notices.append("--optimizer and --lr apply to --steps N only: at --steps 0 no step changes the weights")
    for notice in notices:
        console.print(f"notice: {notice}", highlight=False, soft_wrap=True, markup=False)
    out = claim_run_folder(args.out, args.out, overwrite=args.overwrite) if args.out else None
    try:
        if args.steps == 0:
            batches = min(DEFAULT_BATCHES, math.ceil(len(x) / args.batch_size))
            console.print(f"gradients of {batches} batches of {args.batch_size} at the saved weights "
                          "(the weights do not change)", highlight=False, markup=False)
        else:
            console.print(f"training a copy of {model.name} for {args.steps} steps, batch {args.batch_size} "
                          "(the saved file does not change)", highlight=False, markup=False)
        live = args.steps > 0 and not args.quiet
        monitor = GradientMonitor(verbose=1 if live else 0, console=console)
        try:
            with stop.training():
                history = inspect(model, x, y, args.steps, loss=loss, optimizer=args.optimizer,
                                  learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed,
                                  copy=False, callbacks=[monitor, stop.callback()])
        except KeyboardInterrupt:
            # Stopped at a step's end: every recorded step is kept, as `gradscope run` keeps them.
            if out is not None and monitor.history is not None and len(monitor.history):
                with stop.shielded():
                    save_run(monitor.history, out, overwrite=args.overwrite)
                console.print(f"interrupted: {len(monitor.history)} recorded steps saved to {out}",
                              highlight=False, markup=False, soft_wrap=True)
            raise
        if not live:
            print_summary(history, diagnose(history), console=console)
        if out is not None:
            with stop.shielded():
                save_run(history, out, overwrite=args.overwrite)
            console.print(f"saved run to {out}  (show it again: {shell_command('gradscope', 'report', out)})",
                          highlight=False, markup=False, soft_wrap=True)
    finally:
        if out is not None:
            release_run_folder(out)  # removes it only if nothing was saved there
    stop.check()
    return history
