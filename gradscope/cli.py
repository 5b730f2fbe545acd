"""The command line: arguments -> commands. Errors are one line and exit code 2.

    gradscope run          train the lecture's network and watch its gradients
    gradscope compare      the same network under several activations/initializers
    gradscope report DIR   show a saved run (or comparison) again, without training
    gradscope derivatives  tanh'(s), sigmoid'(s), ReLU'(s) as the lecture tabulates them
    gradscope inspect M    the gradients of any saved Keras model, at its weights or over a few steps
    gradscope reproduce N  a paper's claims (glorot2010, he2015, lecture): theory beside measurement

TensorFlow is imported only by the commands that train and by the float32
column of ``derivatives``, so ``--help``, ``report`` and
``derivatives --no-float32`` start fast. The commands orchestrate; what they
print is drawn by `gradscope.render.terminal`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradscope.signals import Interrupted, StopSignals

EXIT_FAILED = 1  # an internal error, or a run that could not be saved
EXIT_INTERNAL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad input from the person at the keyboard: printed as one line, exit 2."""


# -- the parser ------------------------------------------------------------------------
# Counts beyond this are typos, and TensorFlow keeps step counters as int64.
_MAX_COUNT = 2**31 - 1


def _positive_int(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not minimum <= value <= _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a whole number from {minimum} to {_MAX_COUNT:,}, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:  # numpy's and TensorFlow's seeds are unsigned 32-bit
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1:,}, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 1024,512,512,512, got {text!r}"
        ) from None
    if not widths or min(widths) < 1 or max(widths) > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected positive layer widths like 1024,512,512,512, got {text!r}")
    return widths


def _training_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `compare` share: network, optimiser, data, run length."""
    net = p.add_argument_group("the network (defaults: the lecture's 784-1024-512-512-512-10)")
    net.add_argument("--init", default=None, metavar="NAME",
                     help="kernel initializer, any Keras name: random_uniform (the lecture's, U(-0.05, 0.05)), "
                     "glorot_uniform, he_normal, ...; or standard, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the "
                     "heuristic Glorot & Bengio (2010) compare against (default: random_uniform)")
    net.add_argument("--layers", type=_widths, default=[1024, 512, 512, 512], metavar="W,W,...",
                     help="hidden layer widths (default: 1024,512,512,512)")
    net.add_argument("--output-activation", default=None, metavar="NAME",
                     help="activation of the 10-unit output layer; --activation sets the hidden layers only "
                     "(default: tanh with --loss mse, as in the lecture; softmax with --loss crossentropy)")
    net.add_argument("--loss", choices=["mse", "crossentropy"], default="mse",
                     help="mse on one-hot targets (the lecture's) or categorical cross-entropy (default: mse)")
    opt = p.add_argument_group("training")
    opt.add_argument("--optimizer", default="adam", metavar="NAME", help="any Keras optimizer name (default: adam)")
    opt.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default: 0.001)")
    opt.add_argument("--batch-size", type=_positive_int, default=128, help="samples per step (default: 128)")
    opt.add_argument("--epochs", type=_positive_int, default=None,
                     help="passes over the training data; --epochs 30 is the lecture's full run")
    opt.add_argument("--steps", type=_positive_int, default=None,
                     help="stop after this many steps (default: 400 when --epochs is not given, "
                     "which takes well under a minute on 2 CPU cores)")
    opt.add_argument("--seed", type=_seed, default=0, help="seed of weights and data order (default: 0)")
    opt.add_argument("--every", type=_positive_int, default=1, help="record every N-th step (default: 1, every step)")
    opt.add_argument("--weights-every", type=_positive_int, default=1, metavar="N",
                     help="measure weight norms and update ratios on every N-th recorded step only; each is a pass "
                     "over all parameters, so 10 makes recording cheaper on long runs (default: 1)")
    opt.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                     help="compile the training step with XLA, as Keras does on a GPU; a model XLA cannot compile "
                     "falls back with a one-line notice. --no-jit turns it off (default: on)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                      help="mnist through keras.datasets (cache or network; without either it falls back to "
                      "scikit-learn's 8x8 digits, with a notice), or digits directly (default: mnist)")
    data.add_argument("--data", metavar="PATH", default=None,
                      help="a folder of MNIST IDX files (.gz or not) or an .npz with x_train, y_train, x_test, y_test")
    data.add_argument("--limit", type=_positive_int, default=None, help="use at most this many training samples")
    _cure_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", default=None,
                     help="where to save the run folder (default: runs/<name>, or runs/<name>-2, -3, ... "
                     "when that exists: a run is never replaced silently)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the run or comparison already saved in --out (default: refuse)")
    out.add_argument("--quiet", action="store_true", help="no live display; print only the summary and verdict")
    out.add_argument("--tensorboard", metavar="DIR", default=None,
                     help="also write TensorBoard event files into DIR while training: every recorded step's "
                     "grad_norm, backprop, saturation, dead and update_ratio per layer, the loss, activation "
                     "histograms and the verdict (compare: one subfolder per configuration). "
                     "View them with: tensorboard --logdir DIR")


def _rate(text: str) -> float:
    value = _finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a rate from 0 up to (not including) 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text}")
    return value


def _cure_arguments(p: argparse.ArgumentParser) -> None:
    """The cures for overfitting that `run` and `compare` share (see docs/lecture.md)."""
    cures = p.add_argument_group("overfitting cures (provoke overfitting with --limit 1000 --epochs 30)")
    cures.add_argument("--dropout", type=_rate, default=0.0, metavar="RATE",
                       help="a Dropout layer after each hidden layer, dropping this share of its units in training "
                       "(default: 0, none; with --regularizers: 0.5)")
    cures.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="L2",
                       help="an L2 kernel regulariser on every layer: L2 * sum(W**2) is added to the loss (coupled "
                       "L2, not AdamW's decoupled decay) (default: 0, none; with --regularizers: 0.0001)")
    cures.add_argument("--augment", action="store_true",
                       help="shift the training images by up to 10%% and rotate them by up to 10 degrees "
                       "(Keras' RandomTranslation, RandomRotation); validation images are left as they are")
    cures.add_argument("--ensemble", type=_positive_int, default=1, metavar="K",
                       help="train K copies with seeds --seed, --seed+1, ...; their averaged prediction is "
                       "evaluated (default: 1, no ensemble; with --regularizers: 5)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and flag.

    Example:

    >>> args = build_parser().parse_args(["run", "--activation", "relu", "--layers", "64,32"])
    >>> args.command, args.activation, args.layers, args.loss
    ('run', 'relu', [64, 32], 'mse')
    """
    parser = argparse.ArgumentParser(
        prog="gradscope",
        description="See vanishing and exploding gradients in a deep Keras MLP, layer by layer, step by step.",
        epilog="Start with:  gradscope run --activation tanh   then   gradscope run --activation relu --init he_normal",
    )
    parser.add_argument("--debug", action="store_true", help="on an internal error, show the full traceback")
    # --debug is accepted after the command too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an internal error, show the full traceback (for a bug report)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", parents=[common],
        help="train the lecture's network and watch every layer's gradient",
        description="Train the lecture's deep MLP (784-1024-512-512-512-10, tanh, random_uniform, MSE, "
        "Adam 0.001, batch 128) with gradscope's loop, show a live per-layer table, then a summary, a verdict "
        "in words and plots. The run is saved to a folder that 'gradscope report' shows again.",
        epilog="Examples:\n  gradscope run --activation tanh\n  gradscope run --activation sigmoid --steps 200\n"
        "  gradscope run --activation relu --init he_normal --data ../shared/data/mnist\n"
        "  gradscope run --epochs 30        # the lecture's full run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--devices", type=_positive_int, default=1, metavar="N",
                     help="train on N devices under tf.distribute.MirroredStrategy: N GPUs if there are N, "
                          "else N logical CPU devices (same numbers, not faster: to try the distributed path). "
                          "--batch-size is the global batch, split between them (default: 1)")
    run.add_argument("--activation", default="tanh", metavar="NAME",
                     help="hidden-layer activation, any Keras name: tanh, sigmoid, relu, elu, ... (default: tanh)")
    _training_arguments(run)

    cmp_ = sub.add_parser(
        "compare", parents=[common],
        help="train the same network under several activations and initializers, side by side",
        description="Train one configuration per activation x initializer with the same seed, data, data "
        "order and step budget; show a side-by-side table, one sentence per configuration, and plots.",
        epilog="Examples:\n"
        "  gradscope compare --activations tanh relu --inits random_uniform glorot_uniform he_normal\n"
        "  gradscope compare --regularizers none dropout weight_decay augment ensemble --limit 1000 --epochs 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp_.add_argument("--activations", nargs="+", default=None, metavar="NAME",
                      help="hidden-layer activations to compare (default: tanh relu; with --regularizers: tanh)")
    cmp_.add_argument("--inits", nargs="+", default=None, metavar="NAME",
                      help="initializers to cross with the activations, any Keras name or standard "
                      "(see run --help) (default: random_uniform)")
    cmp_.add_argument("--regularizers", nargs="+", default=None, metavar="CURE",
                      choices=["none", "dropout", "weight_decay", "augment", "ensemble"],
                      help="instead of activations, compare cures for overfitting on one network, each alone: "
                      "none dropout weight_decay augment ensemble; --dropout, --weight-decay and --ensemble set "
                      "their strengths; prints train and validation accuracy, their gap and the best epoch")
    _training_arguments(cmp_)

    rep = sub.add_parser("report", parents=[common], help="show a saved run or comparison again, without training",
                         description="Re-render a run folder (table, verdict, plots) or a comparison folder, "
                         "from the saved record only: TensorFlow is not needed.")
    rep.add_argument("run_dir", metavar="RUN_DIR",
                     help="a folder written by 'gradscope run', 'compare' or 'reproduce'")
    rep.add_argument("--no-plots", action="store_true", help="do not redraw the PNG plots")
    rep.add_argument("--tensorboard", metavar="DIR", default=None,
                     help="also export the saved record as TensorBoard event files into DIR (a comparison: one "
                     "subfolder per run), the same files 'run --tensorboard' writes; TensorFlow is not needed")

    der = sub.add_parser("derivatives", parents=[common],
                         help="tanh'(s), sigmoid'(s) and ReLU'(s) at a few points, in float64",
                         description="The lecture's table of activation derivatives, computed in float64 "
                         "(tanh'(8) = 4.50e-07), and what TensorFlow's float32 autodiff makes of tanh there.")
    der.add_argument("--at", nargs="+", type=_finite_float, default=None, metavar="S",
                     help="the points s (default: 0 1 2 4 8)")
    der.add_argument("--no-float32", action="store_true", help="skip the float32 TensorFlow column (no TF import)")
    add_inspect_parser(sub, common)
    add_reproduce_parser(sub, common)
    return parser


# -- commands ------------------------------------------------------------------------------
def _console() -> Any:
    from gradscope.render.terminal import default_console

    return default_console()


def cmd_run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope run``: loads the data, trains one configuration, saves and shows it.

    Args:
        args: the parsed flags of ``run``.
        stop: the command's signal handling.
    """
    from gradscope.experiments import Config, check_names, check_size, load_data, run_config
    from gradscope.run_folder import claim_run_folder, release_run_folder

    config = Config.for_run(args)
    check_names(config)
    strategy = _strategy(args.devices)
    console = _console()
    data = load_data(args, console)
    check_size(config, data.input_dim)
    tensorboard = _tensorboard_dir(args)
    # The output place is checked, and taken, before any step is spent.
    out = claim_run_folder(Path(args.out) if args.out else None, Path("runs") / config.slug, overwrite=args.overwrite)
    try:
        run_config(config, data, out, console, live=not args.quiet, stop=stop, overwrite=args.overwrite,
                   tensorboard=tensorboard, strategy=strategy)
    finally:
        release_run_folder(out)  # removes it only if nothing was saved there
    return 0


def _strategy(devices: int) -> Any:
    """``--devices N``: a `MirroredStrategy` on N GPUs, or N logical CPU devices (with a notice); None for 1."""
    if devices == 1:
        return None
    from gradscope.distributed import DistributionError, mirrored_on

    try:
        strategy, note = mirrored_on(devices)
    except DistributionError as exc:
        raise UsageError(f"--devices {devices}: {exc}") from None
    if note:
        print(note, file=sys.stderr, flush=True)
    return strategy


def cmd_compare(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope compare``: trains every configuration and shows them side by side.

    Args:
        args: the parsed flags of ``compare``.
        stop: the command's signal handling.
    """
    from gradscope.experiments import compare

    _tensorboard_dir(args)
    compare(args, _console(), stop=stop)
    return 0


def cmd_report(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope report``: shows a saved run or comparison folder again, without TensorFlow.

    Args:
        args: the parsed flags of ``report``.
        stop: the command's signal handling.
    """
    from gradscope.experiments import show_comparison
    from gradscope.history import COMPARISON_FILE, RUN_FILE, RunFolderError
    from gradscope.report import show_reproduction, show_run
    from gradscope.reproduction import REPRODUCTION_FILE

    folder = Path(args.run_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    tensorboard = _tensorboard_dir(args)
    console = _console()
    try:
        if (folder / COMPARISON_FILE).is_file():
            show_comparison(folder, console, plots=not args.no_plots, tensorboard=tensorboard)
        elif (folder / REPRODUCTION_FILE).is_file():
            if tensorboard is not None:
                raise UsageError(f"{folder} is a reproduction: it holds a table and figures, no steps for TensorBoard")
            show_reproduction(folder, console=console, plots=not args.no_plots)
        elif (folder / RUN_FILE).is_file():
            show_run(folder, console=console, plots=not args.no_plots, tensorboard=tensorboard)
        else:
            raise UsageError(f"{folder} is not a gradscope run, comparison or reproduction folder (no {RUN_FILE}, "
                             f"{COMPARISON_FILE} or {REPRODUCTION_FILE})")
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read the run folder {folder}: {type(exc).__name__}: {exc}") from None
    return 0


def _tensorboard_dir(args: argparse.Namespace) -> Path | None:
    """``--tensorboard DIR``, made now if missing, so that a folder that cannot be written to
    is a one-line error before any work; None without the flag."""
    if args.tensorboard is None:
        return None
    from gradscope.run_folder import describe_os_error

    path = Path(args.tensorboard)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--tensorboard {path}: cannot make the folder ({describe_os_error(exc)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--tensorboard {path}: the folder is not writable")
    return path


def cmd_derivatives(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope derivatives``: the lecture's table of f'(s), and TensorFlow's float32 tanh beside it.

    Args:
        args: the parsed flags of ``derivatives``.
        stop: the command's signal handling.

    Example:

    >>> cmd_derivatives(build_parser().parse_args(["derivatives", "--no-float32", "--at", "8"]), StopSignals())
    activation derivatives f'(s), float64
    ...
    │ 8 │ 4.50e-07 │    3.35e-04 │        1 │
    ...
    0
    """
    from gradscope.render.terminal import print_derivatives
    from gradscope.theory import DEFAULT_POINTS, derivative_table, float32_autodiff

    points = args.at or list(DEFAULT_POINTS)
    # float32_autodiff gives one (s, tanh(s), tanh'(s)) per point, in the points' order: row k is point k.
    float32 = None if args.no_float32 else float32_autodiff("tanh", points)
    chain_factor = derivative_table([2.0])[0]["tanh"] ** 5  # five tanh layers at s = 2
    print_derivatives(derivative_table(points), _console(), chain_factor, float32=float32)
    return 0


def _import_tensorflow_quietly(devices: int = 1) -> None:
    """Imports TensorFlow with its C++ start-up log lines sent to /dev/null.

    TensorFlow 2.21 prints oneDNN/CUDA notices through absl before any
    Python setting can stop them (TF_CPP_MIN_LOG_LEVEL does not), which
    buries gradscope's first lines. Set GRADSCOPE_TF_LOGS=1 to see them.
    With ``devices > 1`` and fewer GPUs, the CPU is split into that many
    logical devices first: that is possible only before TensorFlow sets up
    its devices (``gradscope run --devices`` reports it when it was too late).
    """
    if os.environ.get("GRADSCOPE_TF_LOGS") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")  # device set-up logs its CUDA probe here
        if devices > len(gpus):
            from gradscope.distributed import DistributionError, logical_cpus

            with contextlib.suppress(DistributionError):
                logical_cpus(devices)
        tf.constant(0.0) + 0.0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


COMMANDS = {"run": cmd_run, "compare": cmd_compare, "report": cmd_report, "derivatives": cmd_derivatives}


# -- gradscope inspect ---------------------------------------------------------------------
def _count_from_0(text: str) -> int:
    return _positive_int(text, minimum=0)


def add_inspect_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds ``gradscope inspect`` and its flags to the commands in ``sub``."""
    ins = sub.add_parser(
        "inspect", parents=[common], help="the gradients of any saved Keras model, layer by layer",
        description="Load a model saved with model.save() and show each layer's gradient and the verdict: "
        "with --steps 0 (the default) at the saved weights, which stay as they are; with --steps N over N "
        "training steps of a copy. The loss and optimizer come from the model's compile config; the flags "
        "override them.",
        epilog="Examples:\n  gradscope inspect model.keras --data pairs.npz          # arrays x and y, any shape\n"
        "  gradscope inspect model.keras --data ../shared/data/mnist --steps 200\n"
        "  gradscope inspect model.keras --synthetic --loss mse   # random data: a look at the weights only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ins.add_argument("model", metavar="MODEL", help="a .keras file written by model.save()")
    source = ins.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="PATH",
                        help="an .npz with arrays x and y of any shape (one sample per row), or what 'run' "
                        "reads: a folder of MNIST IDX files or an .npz with x_train, y_train, x_test, y_test")
    source.add_argument("--synthetic", action="store_true",
                        help="random inputs and targets shaped like the model's: a quick look at its weights, "
                        "which says nothing about your data")
    ins.add_argument("--steps", type=_count_from_0, default=0, metavar="N",
                     help="0: the gradients of a few batches at the saved weights, unchanged; N: train a copy "
                     "N steps and show how the gradients move (default: 0)")
    ins.add_argument("--batch-size", type=_positive_int, default=32, metavar="B",
                     help="samples per batch (default: 32)")
    ins.add_argument("--loss", default=None, metavar="NAME",
                     help="any Keras loss name: mse, categorical_crossentropy, ... (default: the compiled one)")
    ins.add_argument("--optimizer", default=None, metavar="NAME",
                     help="any Keras optimizer name, for --steps N (default: the compiled one, else adam)")
    ins.add_argument("--lr", type=_positive_float, default=None,
                     help="learning rate, for --steps N (default: the compiled optimizer's, else 0.001)")
    ins.add_argument("--seed", type=_seed, default=0, help="seed of the synthetic data and data order (default: 0)")
    ins.add_argument("--out", metavar="DIR", default=None,
                     help="also save the record as a run folder that 'gradscope report' shows again")
    ins.add_argument("--overwrite", action="store_true", help="replace the run already saved in --out")
    ins.add_argument("--quiet", action="store_true", help="no live display; print only the summary and verdict")


def cmd_inspect(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope inspect``: loads a saved model, records its gradients and shows them.

    Args:
        args: the parsed flags of ``inspect``.
        stop: the command's signal handling.
    """
    _import_tensorflow_quietly()
    from gradscope.inspection import InspectError, show_inspection

    try:
        show_inspection(args, _console(), stop)
    except InspectError as exc:
        raise UsageError(str(exc)) from None
    return 0


COMMANDS["inspect"] = cmd_inspect


# -- gradscope reproduce -------------------------------------------------------------------
def add_reproduce_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds ``gradscope reproduce`` and its flags to the commands in ``sub``."""
    from gradscope.reproduce import REPRODUCTIONS, SCALES, STALL_MARGIN, TOLERANCE, TRAINS_AT

    names = "\n".join(f"  {name:<11} {what}" for name, (_, what) in REPRODUCTIONS.items())
    he = SCALES["he2015"]
    names += "\n\n" + textwrap.fill(
        f"A factor or a per-layer profile agrees within {TOLERANCE:.0%} of the theory. he2015's depth "
        f"experiment, at its defaults: {he.train_depth} ReLU layers of {he.train_width}, {he.train_steps} SGD "
        f"steps of {he.train_batch} at learning rate {he.lr:g} with momentum 0.9; it 'stalls' when the training "
        f"accuracy over the last tenth of the steps stays within {STALL_MARGIN * 100:.0f} points of chance, and "
        f"'trains' at {TRAINS_AT:.0%} or more.", 100)
    rep = sub.add_parser(
        "reproduce", parents=[common], help="a paper's claims, theory beside measurement (glorot2010, he2015, lecture)",
        description=textwrap.fill(
            "Build the networks a paper (or the lecture) describes, measure them with gradscope, and set each "
            "measurement beside the closed form of the paper's variance argument: a table with a mark where they "
            "agree within the stated tolerance, per-layer profiles against depth with the theory's line, and a "
            "folder that 'gradscope report' shows again. Under a minute each on 2 CPU cores; docs/papers.md "
            "explains every row.", 100) + "\n\nNAME is one of:\n" + names,
        epilog="Examples:\n  gradscope reproduce glorot2010 --data ../shared/data/mnist\n"
        "  gradscope reproduce he2015 --full          # the longer depth experiment\n"
        "  gradscope report runs/reproduce-lecture    # the same table again, without TensorFlow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("name", metavar="NAME", help="what to reproduce: " + ", ".join(REPRODUCTIONS))
    rep.add_argument("--full", action="store_true",
                     help="the papers' sizes and longer budgets where the defaults are smaller: more batches at "
                     "the initial weights, and he2015's depth experiment 512 wide for 1,000 steps (minutes, "
                     "not one)")
    rep.add_argument("--seed", type=_seed, default=0, help="seed of the weights and the data order (default: 0)")
    rep.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                     help="mnist through keras.datasets (falling back to scikit-learn's 8x8 digits, with a notice), "
                     "or digits (default: mnist)")
    rep.add_argument("--data", metavar="PATH", default=None,
                     help="a folder of MNIST IDX files (.gz or not) or an .npz with x_train, y_train, x_test, y_test")
    rep.add_argument("--out", metavar="DIR", default=None,
                     help="where to save (default: runs/reproduce-NAME, -full with --full; numbered when taken)")
    rep.add_argument("--overwrite", action="store_true", help="replace what is saved in --out (default: refuse)")
    rep.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    rep.set_defaults(limit=None)


def cmd_reproduce(args: argparse.Namespace, stop: StopSignals) -> int:
    """``gradscope reproduce NAME``: measures a paper's claims, shows them beside the theory, saves the folder.

    Args:
        args: the parsed flags of ``reproduce``.
        stop: the command's signal handling.
    """
    from gradscope.reproduce import REPRODUCTIONS, default_folder

    if args.name not in REPRODUCTIONS:
        raise UsageError(f"unknown reproduction {args.name!r}: choose one of {', '.join(REPRODUCTIONS)}")
    _import_tensorflow_quietly()
    from gradscope.experiments import load_data, shell_command
    from gradscope.render.claims import print_reproduction
    from gradscope.report import print_recorded_runs, save_reproduction_folder
    from gradscope.reproduce import reproduce
    from gradscope.run_folder import claim_run_folder, release_run_folder

    console = _console()
    out = claim_run_folder(Path(args.out) if args.out else None, default_folder(args.name, args.full),
                           overwrite=args.overwrite)
    try:
        data = load_data(args, console)

        def say(text: str) -> None:
            console.print(text, highlight=False, markup=False, soft_wrap=True)

        record = reproduce(args.name, data, full=args.full, seed=args.seed, say=say)
        with stop.shielded():
            save_reproduction_folder(record, out, plots=not args.no_plots, overwrite=args.overwrite)
    finally:
        release_run_folder(out)  # removes it only if nothing was saved
    print_reproduction(record, console)
    print_recorded_runs(record, out, console)
    console.print(f"saved to {out}  (show it again: {shell_command('gradscope', 'report', out)})",
                  highlight=False, markup=False, soft_wrap=True)
    return 0


COMMANDS["reproduce"] = cmd_reproduce


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit code.

    0: done. 1: a run that could not be saved (one line saying why and where
    the record was kept instead), or an internal error (one line; ``--debug``
    shows the traceback). 2: a bad input (one line naming it). 128 + the signal's number when
    stopped by a signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP.

    Args:
        argv: the arguments after ``gradscope`` (default: ``sys.argv[1:]``).

    Example:

    >>> main(["report", "no/such/folder"])
    2
    """
    # What the error lines need, kept outside the handlers' reach; the
    # command's name is guessed before parsing, for a signal that comes first.
    words = list(sys.argv[1:] if argv is None else argv)
    state = {"command": next((w for w in words if w in COMMANDS), "?"), "debug": "--debug" in words}
    try:
        with StopSignals() as stop:
            parser = build_parser()
            args = parser.parse_args(argv)
            state.update(command=args.command, debug=bool(getattr(args, "debug", False)))
            if args.command is None:
                parser.print_help()
                return EXIT_USAGE
            return _run(args.command, args, stop)
    except Interrupted as exc:
        print(f"gradscope {state['command']}: interrupted ({exc.signal_name})", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a Ctrl-C that came in before the handlers were set
        print(f"gradscope {state['command']}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if state["debug"]:
            raise
        print(f"gradscope {state['command']}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run again with --debug for the full traceback)", file=sys.stderr)
        return EXIT_INTERNAL


#: The commands that train, and so need Keras on TensorFlow (gradscope.train's tf.GradientTape).
TRAINING_COMMANDS = ("run", "compare", "inspect", "reproduce")


def configured_backend() -> str:
    """The backend Keras will run on, read as Keras reads it (``KERAS_BACKEND``,
    else ``keras.json`` in ``KERAS_HOME`` or ``~/.keras``) without importing it:
    importing Keras would import TensorFlow before its start-up chatter is silenced.

    Example:

    >>> configured_backend() in ("tensorflow", "jax", "torch", "numpy", "openvino")
    True
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _run(command: str, args: argparse.Namespace, stop: StopSignals) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for this audience
    if command in TRAINING_COMMANDS:
        backend = configured_backend()
        if backend != "tensorflow":
            print(f"gradscope {command}: error: this command trains with TensorFlow, and Keras runs on {backend} "
                  "here: set KERAS_BACKEND=tensorflow; under JAX, add gradscope.GradientMonitor to your own "
                  "model.fit, then `gradscope report` the saved run (docs/backends.md)", file=sys.stderr)
            return EXIT_USAGE
    if command in ("run", "compare") or (command == "derivatives" and not args.no_float32):
        _import_tensorflow_quietly(args.devices if command == "run" else 1)
    from gradscope.data import DataError
    from gradscope.experiments import ConfigError
    from gradscope.history import RunFolderError
    from gradscope.run_folder import SaveError

    try:
        return COMMANDS[command](args, stop)
    except SaveError as exc:  # the run finished but could not be saved: the message says where it went
        print(f"gradscope {command}: error: {_one_line(exc, limit=1000)}", file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, ConfigError, DataError, RunFolderError, FileNotFoundError, NotADirectoryError,
            PermissionError) as exc:
        print(f"gradscope {command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, cut short: TensorFlow's run to pages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
