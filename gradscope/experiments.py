"""Experiments behind the CLI: one configuration (`run`), or several side by side (`compare`).

A `Config` is the lecture's network with the knobs the lecture turns:
hidden activation, initializer, widths, output activation and loss, and the
optimiser. Every configuration of a comparison gets the same seed, data,
data order and step budget, so the differences are the knobs' alone.

Example:

>>> cfg = Config(activation="relu", init="he_normal")
>>> cfg.label, cfg.out_activation, cfg.hidden
('relu/he_normal', 'tanh', [1024, 512, 512, 512])
>>> history, diagnosis = run_config(cfg, load_dataset("digits"), Path("runs/relu"), console)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradscope.diagnosis import Diagnosis, diagnose
from gradscope.history import (
    COMPARISON_FILE,
    PLOTS_DIR,
    GradientHistory,
    atomic_write,
    comparison_runs,
    dumps_json,
    load_run,
)
from gradscope.models import LECTURE_HIDDEN, default_output_activation, kernel_initializer
from gradscope.render.evaluations import print_ensemble, print_generalisation
from gradscope.render.terminal import model_table, print_comparison, print_summary
from gradscope.run_folder import SaveError, claim_run_folder, release_run_folder, write_run_folder
from gradscope.signals import StopSignals

DEFAULT_STEPS = 400
DEFAULT_INIT = "random_uniform"  # the lecture's: U(-0.05, 0.05)


@dataclass
class Config:
    """One training configuration of the lecture's network."""

    activation: str = "tanh"
    init: str = DEFAULT_INIT
    hidden: list[int] = field(default_factory=lambda: list(LECTURE_HIDDEN))
    output_activation: str | None = None
    loss: str = "mse"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int | None = None
    steps: int | None = None
    seed: int = 0
    every: int = 1
    weights_every: int = 1
    jit: bool = True  # XLA where it compiles (a fallback otherwise): Keras' own default on a GPU
    # The cures for overfitting (docs/lecture.md); `name` labels a configuration of `compare --regularizers`.
    dropout: float = 0.0
    weight_decay: float = 0.0
    augment: bool = False
    ensemble: int = 1
    name: str | None = None

    @classmethod
    def from_args(cls, args: Any, activation: str, init: str) -> Config:
        """One configuration of ``gradscope run`` or ``compare``: the shared flags, and these knobs.

        Without --steps or --epochs, training stops after `DEFAULT_STEPS` steps.

        Args:
            args: the parsed flags of ``run`` or ``compare``.
            activation: the hidden layers' activation.
            init: the kernel initializer.

        Example:

        >>> from gradscope.cli import build_parser
        >>> args = build_parser().parse_args(["compare", "--layers", "64,32", "--epochs", "3"])
        >>> config = Config.from_args(args, "relu", "he_normal")
        >>> config.label, config.hidden, config.epochs, config.steps
        ('relu/he_normal', [64, 32], 3, None)
        """
        steps = args.steps if (args.steps or args.epochs) else DEFAULT_STEPS
        return cls(
            activation=activation, init=init, hidden=list(args.layers), output_activation=args.output_activation,
            loss=args.loss, optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
            epochs=args.epochs, steps=steps, seed=args.seed, every=args.every,
            weights_every=args.weights_every, jit=args.jit, dropout=getattr(args, "dropout", 0.0),
            weight_decay=getattr(args, "weight_decay", 0.0), augment=getattr(args, "augment", False),
            ensemble=getattr(args, "ensemble", 1),
        )

    @classmethod
    def for_run(cls, args: Any) -> Config:
        """The configuration ``gradscope run`` trains, from its parsed flags.

        Args:
            args: the parsed flags of ``run``.

        Example:

        >>> from gradscope.cli import build_parser
        >>> Config.for_run(build_parser().parse_args(["run"])).steps
        400
        """
        return cls.from_args(args, args.activation, args.init or DEFAULT_INIT)

    @property
    def out_activation(self) -> str:
        return self.output_activation or default_output_activation(self.loss)

    @property
    def cures(self) -> list[str]:
        """The cures for overfitting this configuration applies, in words, e.g. ``["dropout 0.5"]``."""
        return [text for on, text in [
            (self.dropout, f"dropout {self.dropout:g}"), (self.weight_decay, f"weight decay {self.weight_decay:g}"),
            (self.augment, "augment"), (self.ensemble > 1, f"ensemble of {self.ensemble}")] if on]

    @property
    def slug(self) -> str:
        if self.name:
            return self.name
        return "-".join([f"{self.activation}-{self.init}", *(c.replace(" ", "") for c in self.cures)])

    @property
    def label(self) -> str:
        return self.name or " + ".join([f"{self.activation}/{self.init}", *self.cures])


def load_data(args: Any, console: Any) -> Any:
    """The data set the flags ask for; notices (fallbacks, splits) are printed, one line each.

    Args:
        args: the parsed flags (``--dataset``, ``--data``, ``--seed``, ``--limit``).
        console: where to print the notices.

    Example:

    >>> from rich.console import Console
    >>> from gradscope.cli import build_parser
    >>> args = build_parser().parse_args(["run", "--dataset", "digits", "--limit", "50"])
    >>> load_data(args, Console(width=100)).x_train.shape
    notice: kept 50 of the 1,438 training samples (limit)
    (50, 64)
    """
    from gradscope.data import load_dataset

    data = load_dataset(args.dataset, args.data, seed=args.seed, limit=args.limit)
    for notice in data.notices:
        # One line however long; markup=False: a path may hold brackets.
        console.print(f"notice: {notice}", highlight=False, soft_wrap=True, markup=False)
    return data


class ConfigError(ValueError):
    """A configuration names an activation, initializer or optimizer Keras does not know."""


def check_names(config: Config) -> None:
    """Fails early, in one line, on an activation, initializer or optimizer Keras cannot use.

    Each is not only looked up but tried on a tiny input: a name Keras knows
    can still be an abstract base (``Initializer``) or need arguments the
    command line cannot give (``Constant``).

    Args:
        config: the configuration to check.

    Example:

    >>> check_names(Config(activation="tanhh"))
    Traceback (most recent call last):
    ...
    gradscope.experiments.ConfigError: unknown Keras activation 'tanhh'
    >>> check_names(Config(init="Initializer"))
    Traceback (most recent call last):
    ...
    gradscope.experiments.ConfigError: the Keras initializer 'Initializer' cannot draw a kernel (NotImplementedError)
    """
    import keras

    def activation(name: str) -> None:
        keras.activations.get(name)(keras.ops.ones((1, 2)))

    def initializer(name: str) -> None:
        if tuple(kernel_initializer(name)((3, 2)).shape) != (3, 2):
            raise ValueError("it gives a tensor of another shape")

    def optimizer(name: str) -> None:
        made = keras.optimizers.get({"class_name": name, "config": {"learning_rate": config.lr}})
        made.apply([keras.ops.ones((2,))], [keras.Variable(np.zeros(2, np.float32))])  # one tiny update

    checks = [
        ("activation", config.activation, activation, "cannot be applied"),
        ("output activation", config.out_activation, activation, "cannot be applied"),
        ("initializer", config.init, initializer, "cannot draw a kernel"),
        ("optimizer", config.optimizer, optimizer, "cannot update a weight with a learning rate alone"),
    ]
    for what, name, check, failure in checks:
        try:
            check(name)
        except (ValueError, TypeError) as exc:
            if "Could not interpret" in str(exc) or "Unknown" in str(exc) or "could not be deserialized" in str(exc):
                raise ConfigError(f"unknown Keras {what} {name!r}") from None
            raise ConfigError(f"the Keras {what} {name!r} {failure} ({type(exc).__name__})") from None
        except Exception as exc:  # any other failure of a user-chosen Keras object is a bad input too
            raise ConfigError(f"the Keras {what} {name!r} {failure} ({type(exc).__name__})") from None


def check_size(config: Config, input_dim: int, memory_bytes: int | None = None) -> None:
    """Fails early, in one line, on a network too big for this machine's memory.

    Its weights, their gradients and Adam's two moments are four float32
    copies of every parameter; a step also holds the batch's activations.

    Args:
        config: the configuration.
        input_dim: features per sample.
        memory_bytes: the memory to fit in. Defaults to `None`: this machine's.

    Example:

    >>> check_size(Config(hidden=[1_000_000, 1_000_000]), 784, memory_bytes=24 * 2**30)
    Traceback (most recent call last):
    ...
    gradscope.experiments.ConfigError: --layers 1000000,1000000: 1.0e+12 parameters need about 14,917 GB ...
    """
    widths = [input_dim, *config.hidden, 10]
    params = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))
    need = 4 * 4 * params + 4 * 4 * config.batch_size * sum(widths)
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not on every OS
            return
    if need > 0.8 * memory_bytes:
        raise ConfigError(
            f"--layers {','.join(map(str, config.hidden))}: {params:.1e} parameters need about "
            f"{need / 2**30:,.0f} GB for weights, gradients and optimizer state; this machine has "
            f"{memory_bytes / 2**30:,.0f} GB"
        )


def build_model(config: Config, data: Any, strategy: Any = None) -> Any:
    """The lecture's network as ``config`` sets it, compiled, its weights drawn from ``config.seed``.

    Args:
        config: the configuration.
        data: the `gradscope.data.Dataset` (its input size and number of classes).
        strategy: a `tf.distribute` strategy to build it under. Defaults to `None`.

    Example:

    >>> from gradscope.data import load_dataset
    >>> model = build_model(Config(hidden=[8]), load_dataset("digits", limit=50))
    >>> [layer.units for layer in model.layers], model.loss
    ([8, 10], 'mean_squared_error')
    """
    import keras

    from gradscope.models import lecture_mlp

    check_names(config)
    check_size(config, data.input_dim)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = lecture_mlp(
            input_dim=data.input_dim, hidden=config.hidden, outputs=data.num_classes,
            activation=config.activation, output_activation=config.out_activation, init=config.init,
            seed=config.seed, dropout=config.dropout, l2=config.weight_decay,
            augment=image_shape(data.input_dim) if config.augment else None,
        )
        optimizer = keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": config.lr}})
        loss = "mean_squared_error" if config.loss == "mse" else "categorical_crossentropy"
        model.compile(optimizer=optimizer, loss=loss)
    return model


def image_shape(input_dim: int) -> tuple[int, int]:
    """The side of the square images that flatten to ``input_dim`` pixels, for ``--augment``.

    Example:

    >>> image_shape(784), image_shape(64)
    ((28, 28), (8, 8))
    """
    side = int(round(input_dim**0.5))
    if side * side != input_dim:
        raise ConfigError(f"--augment needs square images; these have {input_dim} pixels")
    return side, side


def model_summary(model: Any) -> dict[str, Any]:
    """A plain record of a built model, for `gradscope.render.terminal.model_table`.

    Each layer's parameters are counted as the lecture counts them, weights
    plus biases; the total is Keras' own count.

    Args:
        model: a built Keras model.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh", name="d")], name="m")
    >>> summary = model_summary(model)
    >>> summary["name"], summary["total_params"]
    ('m', 8)
    >>> summary["layers"]
    [{'name': 'd', 'output_shape': '(None, 2)', 'activation': 'tanh', 'params': 8}]
    """
    from gradscope.model_layers import activation_name

    layers = [
        {
            "name": layer.name,
            "output_shape": str(tuple(layer.output.shape)),
            "activation": activation_name(layer),
            "params": int(sum(int(np.prod(v.shape)) for v in layer.weights)),
        }
        for layer in model.layers
    ]
    return {"name": model.name, "total_params": int(model.count_params()), "layers": layers}


def run_config(
    config: Config, data: Any, out: Path, console: Any, live: bool = True, show_summary: bool = True,
    stop: StopSignals | None = None, overwrite: bool = False, shown_as: Path | None = None,
    tensorboard: Path | None = None, strategy: Any = None,
) -> tuple[GradientHistory, Diagnosis]:
    """Builds, trains, diagnoses and saves one configuration, printing as it goes.

    Args:
        config: the configuration.
        data: the `gradscope.data.Dataset` to train on.
        out: the run folder to save to.
        console: where to print.
        live: show the live view while training.
        show_summary: print the summary table and verdict at the end.
        stop: the command's signal handling; a signal stops training at the end
            of a step and the recorded steps are saved. Defaults to `None` (none).
        overwrite: replace a run already saved in ``out``. Defaults to `False`.
        shown_as: the path to print for the saved run, when ``out`` is a
            temporary place that will be renamed. Defaults to ``out``.
        tensorboard: a folder for TensorBoard event files of every recorded step.
            Defaults to `None`, none.
        strategy: a `tf.distribute` strategy to build and train the model
            under (``gradscope run --devices``). Defaults to `None`.

    Raises:
        gradscope.signals.Interrupted: after a signal, once the recorded steps are saved.
        gradscope.run_folder.SaveError: the run could not be saved; its message
            says why and where the record was kept instead.

    Example:

    >>> import io, tempfile
    >>> from rich.console import Console
    >>> from gradscope.data import load_dataset
    >>> console = Console(file=io.StringIO(), width=140)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     history, diagnosis = run_config(Config(hidden=[8], steps=5), load_dataset("digits", limit=200),
    ...                                     Path(folder), console, live=False)
    >>> len(history), [v.name for v in diagnosis.layers]
    (5, ['hidden_1', 'output'])
    >>> "model lecture_mlp" in console.file.getvalue()
    True
    """
    import gradscope
    from gradscope.ensembles import EpochPredictions, ensemble_evaluations
    from gradscope.monitor import GradientMonitor
    from gradscope.report import save_run

    stop = stop or StopSignals()
    shown = shown_as or out
    # verbose=1 also prints the summary at the end; 2 is the live view only.
    verbose = (1 if show_summary and config.ensemble == 1 else 2) if live else 0
    y_train, y_val = data.one_hot(data.y_train), data.one_hot(data.y_val)
    length = f"{config.steps} steps" if config.steps else f"{config.epochs} epochs"
    # An ensemble's members are trained one after another, seeds seed, seed+1, ...; the first member's
    # gradients are the run's record.
    monitors: list[Any] = []
    kept: list[EpochPredictions] = []
    try:
        for k, member in enumerate(ensemble_members(config)):
            model = build_model(member, data, strategy)
            if k == 0:
                console.print(model_table(model_summary(model)))
            # The first member's record is the run's: it alone goes to TensorBoard.
            monitors.append(GradientMonitor(every=config.every, weights_every=config.weights_every,
                                            verbose=verbose, console=console,
                                            tensorboard=tensorboard if k == 0 else None))
            monitors[-1].config = {**asdict(member), "dataset": data.name, "num_classes": data.num_classes,
                                   "train_samples": int(len(data.x_train)), "label": config.label,
                                   "devices": strategy.num_replicas_in_sync if strategy is not None else 1}
            member_note = f" (member {k + 1} of {config.ensemble}, seed {member.seed})" if config.ensemble > 1 else ""
            console.print(f"training {config.label}{member_note} on {data.name}: {len(data.x_train):,} samples, "
                          f"batch {config.batch_size}, {length}", highlight=False, markup=False)
            kept.append(EpochPredictions(data.x_val, monitors[-1].session))
            extra = [kept[-1]] if config.ensemble > 1 else []
            with stop.training():
                trained = gradscope.train(
                    model, data.x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                    steps=config.steps, validation_data=(data.x_val, y_val),
                    callbacks=[monitors[-1], *extra, stop.callback()], seed=member.seed,
                    # XLA compiles one device's step, not a step across devices.
                    jit_compile="auto" if config.jit and strategy is None else False,
                )
            if k == 0:
                history = trained
    except KeyboardInterrupt:
        # Every recorded step is kept: save what there is (a second signal
        # cannot cut the save short), then stop.
        recorded = monitors[0].history if monitors else None
        if recorded is not None and len(recorded):
            try:
                with stop.shielded():
                    save_run(recorded, out, overwrite=overwrite)
            except SaveError as exc:  # the interrupt still decides the exit code
                print(f"gradscope: {exc}", file=sys.stderr, flush=True)
            else:
                console.print(f"interrupted: {len(recorded)} recorded steps saved to {shown}",
                              highlight=False, markup=False, soft_wrap=True)
        raise
    if config.ensemble > 1:
        history.evaluations = ensemble_evaluations(kept, y_val, config.loss)
        history.config["ensemble_val_accuracy"] = [m.history.evaluations.final()["val_accuracy"] for m in monitors]
        print_ensemble(history.config["ensemble_val_accuracy"], history.evaluations, console)
    else:
        print_generalisation(history.evaluations, console)
    diagnosis = diagnose(history)
    if show_summary and (not live or config.ensemble > 1):
        print_summary(history, diagnosis, console=console)
    with stop.shielded():
        save_run(history, out, overwrite=overwrite)
    # soft_wrap: a hint to paste into a shell must stay on one line.
    console.print(f"saved run to {shown}  (show it again: {shell_command('gradscope', 'report', shown)})",
                  highlight=False, markup=False, soft_wrap=True)
    if tensorboard is not None:
        view = shell_command("tensorboard", "--logdir", tensorboard)
        console.print(f"TensorBoard files in {tensorboard}  (view them: {view})",
                      highlight=False, markup=False, soft_wrap=True)
    stop.check()  # a signal during the save: the run is saved, now stop
    return history, diagnosis


def ensemble_members(config: Config) -> list[Config]:
    """The configurations of an ensemble's members: seeds ``seed``, ``seed + 1``, ...; ``[config]`` without one.

    Example:

    >>> [member.seed for member in ensemble_members(Config(seed=5, ensemble=3))]
    [5, 6, 7]
    """
    return [replace(config, seed=config.seed + k) for k in range(config.ensemble)]


#: The strengths `compare --regularizers` gives a cure whose flag was not set.
DEFAULT_CURES = {"dropout": 0.5, "weight_decay": 1e-4, "ensemble": 5}


def regularized(base: Config, cure: str) -> Config:
    """``base`` with one cure for overfitting and no other, named after it (``compare --regularizers``).

    The strength is ``base``'s own (from --dropout, --weight-decay, --ensemble), else `DEFAULT_CURES`'.

    Args:
        base: the configuration the flags give.
        cure: ``"none"``, ``"dropout"``, ``"weight_decay"``, ``"augment"`` or ``"ensemble"``.

    Example:

    >>> cures = [regularized(Config(ensemble=3), k) for k in ("none", "dropout", "ensemble")]
    >>> [(c.label, c.dropout, c.ensemble) for c in cures]
    [('none', 0.0, 1), ('dropout', 0.5, 1), ('ensemble', 0.0, 3)]
    """
    plain = replace(base, dropout=0.0, weight_decay=0.0, augment=False, ensemble=1, name=cure)
    if cure == "dropout":
        return replace(plain, dropout=base.dropout or DEFAULT_CURES["dropout"])
    if cure == "weight_decay":
        return replace(plain, weight_decay=base.weight_decay or DEFAULT_CURES["weight_decay"])
    if cure == "augment":
        return replace(plain, augment=True)
    if cure == "ensemble":
        return replace(plain, ensemble=base.ensemble if base.ensemble > 1 else DEFAULT_CURES["ensemble"])
    return plain


def print_generalisation_table(records: dict[str, Any], console: Any) -> None:
    """The side-by-side table of training and validation accuracy, when any run evaluated validation data."""
    from gradscope.render.evaluations import generalisation_table

    if any(np.isfinite(r.series("val_accuracy")).any() for r in records.values() if len(r)):
        console.print(generalisation_table(records))


def shell_command(*words: Any) -> str:
    """A command line a person can paste into a shell, each word quoted as needed.

    Example:

    >>> shell_command("gradscope", "report", "runs/my run")
    "gradscope report 'runs/my run'"
    """
    return " ".join(shlex.quote(str(w)) for w in words)


def compare(args: Any, console: Any, stop: StopSignals | None = None) -> Path:
    """Trains every activation x initializer and writes a comparison folder; returns the folder.

    A configuration named twice is trained once. The folder is built beside
    its final place and renamed into place at the end, so an earlier
    comparison there stays whole until this one is (``--overwrite``). After a
    signal, the configurations that finished are kept in it.

    Args:
        args: the parsed flags of ``gradscope compare``.
        console: where to print.
        stop: the command's signal handling. Defaults to `None` (none).

    Raises:
        gradscope.run_folder.RunFolderError: ``--out`` cannot be used (before any training).

    Example:

    >>> compare(build_parser().parse_args(["compare", "--activations", "tanh", "relu"]), console)  # doctest: +SKIP
    PosixPath('runs/compare-tanh-relu')
    """
    stop = stop or StopSignals()
    overwrite = bool(getattr(args, "overwrite", False))
    configs: list[Config] = []
    inits = args.inits or [args.init or DEFAULT_INIT]
    regularizers = getattr(args, "regularizers", None)
    activations = args.activations or (["tanh"] if regularizers else ["tanh", "relu"])
    if regularizers:
        if len(activations) * len(inits) > 1:
            raise ConfigError("--regularizers compares cures on one network: give one activation and one init")
        candidates = [regularized(Config.from_args(args, activations[0], inits[0]), r) for r in regularizers]
    else:
        candidates = [Config.from_args(args, a, i) for a in activations for i in inits]
    for config in candidates:
        if any(c.label == config.label for c in configs):
            console.print(f"notice: {config.label} is listed twice; it is trained once", highlight=False,
                          markup=False)
            continue
        check_names(config)
        configs.append(config)
    default = Path("runs") / ("compare-" + "-".join(dict.fromkeys(regularizers or activations)))
    out = claim_run_folder(Path(args.out) if args.out else None, default, overwrite=overwrite)
    results: dict[str, tuple[GradientHistory, Diagnosis]] = {}
    stopped: list[BaseException] = []

    def fill(folder: Path) -> None:
        try:
            data = load_data(args, console)
            for n, config in enumerate(configs, 1):
                console.rule(f"{n}/{len(configs)}: {config.label}")
                board = Path(args.tensorboard) / config.slug if getattr(args, "tensorboard", None) else None
                results[config.label] = run_config(config, data, folder / config.slug, console,
                                                   live=not args.quiet, show_summary=False, stop=stop,
                                                   shown_as=out / config.slug, tensorboard=board)
        except KeyboardInterrupt as exc:  # keep what finished; the signal is raised again below
            stopped.append(exc)
        saved = [c for c in configs if (folder / c.slug).is_dir()]
        if not saved:
            return
        meta = {"format": "gradscope-comparison",
                "runs": [{"label": c.label, "folder": c.slug, "config": asdict(c)} for c in saved]}
        atomic_write(folder / COMPARISON_FILE, lambda f: f.write(dumps_json(meta)))
        if results:
            plot_comparison_folder(results, folder)

    try:
        # Training inside sets its own signal handling (stop at a step's end);
        # the saving around it cannot be cut short.
        with stop.shielded():
            write_run_folder(out, fill, overwrite=overwrite)
    except BaseException:
        release_run_folder(out)
        raise
    if stopped:
        release_run_folder(out)  # removed only when nothing was saved
        if results:
            console.print(f"interrupted: {len(results)} of {len(configs)} configurations saved to {out}",
                          highlight=False, markup=False)
        raise stopped[0]
    stop.check()  # a signal while the comparison was written: it is written, now stop
    console.rule("comparison")
    print_comparison(results, console)
    print_generalisation_table({k: h.evaluations for k, (h, _) in results.items()}, console)
    console.print(f"saved comparison to {out} (plots: {out / PLOTS_DIR}); "
                  f"show it again: {shell_command('gradscope', 'report', out)}", highlight=False, markup=False,
                  soft_wrap=True)
    if getattr(args, "tensorboard", None):
        console.print(f"TensorBoard files: one folder per configuration in {args.tensorboard}  (view them side by "
                      f"side: {shell_command('tensorboard', '--logdir', args.tensorboard)})", highlight=False,
                      markup=False, soft_wrap=True)
    return out


def plot_comparison_folder(results: dict[str, tuple[GradientHistory, Diagnosis]], folder: Path) -> Path:
    """comparison.png, plus each configuration's activation histograms side by
    side in the same folder: small weights pile tanh outputs up at 0, large
    ones at +-1, the lecture's picture of why initialisation matters.

    Returns the path of comparison.png.

    Args:
        results: ``{label: (history, diagnosis)}`` per configuration.
        folder: the comparison folder; the plots go into its ``plots/``.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> h = GradientHistory(["dense", "dense_1"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 2))})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     str(plot_comparison_folder({"tanh/glorot": (h, diagnose(h))}, Path(folder)).relative_to(folder))
    'plots/comparison.png'
    """
    from gradscope.render.evaluations import plot_curves
    from gradscope.render.plots import plot_activation_histograms, plot_comparison

    plots = folder / PLOTS_DIR
    for label, (history, _) in results.items():
        plot_activation_histograms(history, plots / f"activations_{label.replace('/', '-')}.png")
    records = {label: history.evaluations for label, (history, _) in results.items() if len(history.evaluations)}
    if records:
        plot_curves(records, plots / "curves.png")
    return plot_comparison({k: h for k, (h, _) in results.items()}, plots / "comparison.png")


def show_comparison(folder: Path, console: Any, plots: bool = True, tensorboard: Path | None = None) -> None:
    """`gradscope report` for a comparison folder: no training, no TensorFlow.

    Args:
        folder: a folder written by `compare`.
        console: where to print.
        plots: redraw the comparison plots too.
        tensorboard: export each run's record as TensorBoard event files into
            ``tensorboard/<run folder name>``. Defaults to `None`, no export.

    Example:

    >>> show_comparison(Path("runs/compare-tanh-relu"), console, plots=False)  # doctest: +SKIP
    """
    from gradscope.report import export_tensorboard

    results = {}
    for label, run in comparison_runs(folder):
        history = load_run(run)
        results[label] = (history, diagnose(history))
        if tensorboard is not None:
            export_tensorboard(history, results[label][1], tensorboard / run.name, console)
    print_comparison(results, console)
    print_generalisation_table({k: h.evaluations for k, (h, _) in results.items()}, console)
    if plots:
        path = plot_comparison_folder(results, folder)
        console.print(f"plots: {path.parent}", highlight=False, markup=False)
