"""``gradscope reproduce NAME``: the papers behind the lecture, theory beside measurement.

Each reproduction builds MLPs, records them with gradscope's own recording
(`gradscope.inspection.inspect` at the initial weights, `gradscope.train`
for the training runs), reads per-layer profiles off the records, and sets
them beside the closed forms of `gradscope.theory`. The result is a plain
`gradscope.reproduction.Reproduction`; `gradscope.render.claims`
draws it.

* ``glorot2010``: Glorot & Bengio (2010): the back-propagated gradient's factor per layer under their
  "standard" init and their normalized init, and the flat weight gradients of their eq. 14.
* ``he2015``: He et al. (2015): the factor of ReLU layers under Glorot init and under He init, and the
  depth experiment in small: a 30-layer ReLU MLP trains under He init and stalls under Glorot init.
* ``lecture``: the lecture's claims: tanh against ReLU, ``random_uniform`` against Glorot, and tanh'(8).

Example:

>>> from gradscope.data import load_dataset
>>> record = glorot2010(load_dataset("digits"), SCALES["glorot2010"])  # doctest: +SKIP
>>> [claim.agrees for claim in record.claims]  # doctest: +SKIP
[True, True, True, True]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradscope import theory
from gradscope.history import GradientHistory
from gradscope.reproduction import Claim, Figure, Reproduction, Series

#: The relative tolerance of the per-layer factors and profiles.
TOLERANCE = 0.05
#: The depth experiment: "stalls" is a training accuracy within this of chance over the last tenth
#: of the steps; "trains" is one of at least TRAINS_AT.
STALL_MARGIN = 0.10
TRAINS_AT = 0.5
#: tanh'(8) in float64 autodiff against sech^2(8): rounding only.
DERIVATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Scale:
    """The sizes and budgets of one reproduction: its defaults, ``--full``, or a test's small version.

    Args:
        width: the hidden layers' width of the factor measurements.
        depth: their number of hidden layers.
        batch_size: samples per recorded batch at the initial weights.
        batches: recorded batches at the initial weights.
        samples: one-sample gradients recorded for the weight-gradient profile (Glorot eq. 14 is per sample).
        train_width: the depth experiment's width (he2015).
        train_depth: its number of hidden layers.
        train_steps: its step budget; 0 leaves the depth experiment out.
        train_batch: its samples per step.
        lr: its SGD learning rate (momentum 0.9, as in He et al.).
        hidden: the lecture network's hidden widths (lecture).
    """

    width: int = 1000
    depth: int = 5
    batch_size: int = 256
    batches: int = 4
    samples: int = 64
    train_width: int = 256
    train_depth: int = 30
    train_steps: int = 300
    train_batch: int = 128
    lr: float = 0.01
    hidden: tuple[int, ...] = (1024, 512, 512, 512)


#: The defaults of each reproduction: about a minute each on 2 CPU cores.
SCALES = {
    "glorot2010": Scale(width=1000, depth=5),
    "he2015": Scale(width=512, depth=21),
    "lecture": Scale(),
}
#: ``--full``: the papers' sizes where the defaults are smaller, and longer budgets.
FULL_SCALES = {
    "glorot2010": replace(SCALES["glorot2010"], batches=16, samples=256),
    "he2015": replace(SCALES["he2015"], batches=16, train_width=512, train_steps=1000),
    "lecture": replace(SCALES["lecture"], batches=16),
}


# -- measuring ---------------------------------------------------------------------------------
def measure_at_init(data: Any, hidden: list[int], activation: str, init: str, *, seed: int, batch_size: int,
                    batches: int, output_activation: str = "softmax", loss: str = "categorical_crossentropy"
                    ) -> GradientHistory:
    """The record of ``batches`` batches of an MLP's gradients at its initial weights, which do not move.

    Args:
        data: the `gradscope.data.Dataset`; batches are taken in order from its training samples.
        hidden: the hidden layers' widths.
        activation: the hidden layers' activation.
        init: the kernel initializer (`gradscope.models.kernel_initializer`).
        seed: the weights' seed.
        batch_size: samples per batch.
        batches: how many batches.
        output_activation: the output layer's activation. Defaults to `"softmax"`.
        loss: the loss. Defaults to `"categorical_crossentropy"`.
    """
    import keras

    from gradscope.inspection import inspect
    from gradscope.models import lecture_mlp

    keras.utils.set_random_seed(seed)
    model = lecture_mlp(input_dim=data.input_dim, hidden=hidden, outputs=data.num_classes, activation=activation,
                        output_activation=output_activation, init=init, seed=seed)
    model.compile(loss=loss)
    return inspect(model, data.x_train, data.one_hot(data.y_train), batch_size=batch_size, batches=batches,
                   copy=False)


def hidden_profile(history: GradientHistory, series: str, rows: slice = slice(None)) -> np.ndarray:
    """The root mean square over the recorded rows of a per-layer series, for the hidden layers.

    Args:
        history: a record of `measure_at_init` (or of training).
        series: ``"backprop"``, ``"act_std"`` or ``"dact_rms"``.
        rows: the rows to take. Defaults to all.

    Example:

    >>> h = GradientHistory(["hidden_1", "hidden_2", "output"])
    >>> h.append([0, 1], {"backprop": np.array([[3.0, 1.0, 1.0], [4.0, 1.0, 1.0]])})
    >>> hidden_profile(h, "backprop").round(3).tolist()
    [3.536, 1.0]
    """
    keep = [i for i, name in enumerate(history.layers) if name.startswith("hidden_")]
    values = history[series][rows][:, keep]
    return np.sqrt(np.mean(values**2, axis=0))


def kernel_gradient_profile(history: GradientHistory, widths: list[int]) -> np.ndarray:
    """The RMS per kernel entry of each hidden layer's weight gradient, over the recorded rows.

    Args:
        history: a record of `measure_at_init`.
        widths: the input size, then the hidden widths (each kernel has fan_in x fan_out entries).

    Example:

    >>> h = GradientHistory(["hidden_1", "output"], variables=["hidden_1/kernel", "hidden_1/bias", "output/kernel"])
    >>> h.append([0], {}, variable_series={"grad_norm": np.array([[6.0, 1.0, 1.0]])})
    >>> kernel_gradient_profile(h, [4, 9]).tolist()
    [1.0]
    """
    norms = history.variable_series["grad_norm"]
    out = []
    for layer, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False), 1):
        column = history.variables.index(f"hidden_{layer}/kernel")
        out.append(np.sqrt(np.mean(norms[:, column] ** 2) / (fan_in * fan_out)))
    return np.array(out)


def input_mean_square(data: Any, samples: int) -> float:
    """E[x^2] of the first ``samples`` training inputs, over samples and features: He et al.'s E[x^2] (eq. 7).

    Args:
        data: the `gradscope.data.Dataset`.
        samples: how many samples, from the first.

    Example:

    >>> from gradscope.data import load_dataset
    >>> round(input_mean_square(load_dataset("digits"), 256), 3)
    0.233
    """
    x = np.asarray(data.x_train[:samples], dtype=np.float64)
    return float(np.mean(x**2))


def autodiff(activation: str, points: list[float], dtype: str) -> np.ndarray:
    """f'(s) at ``points`` as TensorFlow's autodiff computes it in ``dtype`` (``"float32"``, ``"float64"``).

    Example:

    >>> autodiff("tanh", [8.0], "float32").tolist()  # float32 tanh(8) comes out as exactly 1
    [0.0]
    """
    return np.array([g for _, _, g in theory.tf_autodiff(activation, points, dtype)], np.float64)


def _depth_axis(n: int) -> list[float]:
    return [float(k) for k in range(1, n + 1)]


def _relative(values: np.ndarray) -> list[float]:
    """A profile relative to its last (top) layer, as plain floats for the record."""
    return [float(v) for v in values / values[-1]]


def _range_text(values: np.ndarray | list[float]) -> str:
    values = np.asarray(values)
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}-{hi:.3g}"


def _worst(measured: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """The layer's (measured, predicted) pair furthest apart, relative: the one a per-layer claim is judged by."""
    k = int(np.argmax(np.abs(measured / predicted - 1)))
    return float(measured[k]), float(predicted[k])


@dataclass
class Progress:
    """Numbers the progress lines of one reproduction: ``[2/4] text``.

    Example:

    >>> say = Progress(2, print)
    >>> say("first"); say("second")
    [1/2] first
    [2/2] second
    """

    total: int
    say: Callable[[str], None]
    done: int = 0

    def __call__(self, text: str) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {text}")


# -- glorot2010 --------------------------------------------------------------------------------
GLOROT_INITS = {
    "standard": ("standard init U[-1/sqrt(n), 1/sqrt(n)]", "sqrt(n Var W * E[tanh'(s)^2]), n Var W = 1/3 "
                 "(eqs. 6, 15; 1/sqrt(3) = 0.577 where tanh' = 1)"),
    "glorot_uniform": ("normalized init (glorot_uniform)", "sqrt(n Var W * E[tanh'(s)^2]), n Var W = 1 "
                       "(eqs. 6, 12, 16; s ~ N(0, q) from eq. 5)"),
}


def glorot2010(data: Any, scale: Scale, seed: int = 0, say: Callable[[str], None] = print) -> Reproduction:
    """Glorot & Bengio (2010): back-propagated gradients and weight gradients of a tanh MLP at initialisation.

    Args:
        data: the `gradscope.data.Dataset`.
        scale: the sizes and budgets.
        seed: the weights' seed. Defaults to `0`.
        say: where progress lines go. Defaults to `print`.
    """
    hidden = [scale.width] * scale.depth
    widths = [data.input_dim, *hidden]
    setup = f"{scale.depth} tanh layers of {scale.width}"
    mean_square = input_mean_square(data, scale.batch_size * scale.batches)
    claims = []
    backprop = Figure("backprop", f"Glorot & Bengio (2010): {setup}, back-propagated gradient at initialisation",
                      "hidden layer (1 = nearest the input)",
                      "RMS of d(loss)/d(output), relative to the top hidden layer")
    weights = Figure("weight_gradients", f"Glorot & Bengio (2010): {setup}, one sample's weight gradient (eq. 14)",
                     "hidden layer (1 = nearest the input)", "RMS per kernel entry, relative to the top hidden layer",
                     log_y=False)
    progress = Progress(2 * len(GLOROT_INITS), say)
    runs: dict[str, GradientHistory] = {}
    for init, (name, formula) in GLOROT_INITS.items():
        progress(f"{setup}, {name}: {scale.batches} batches of {scale.batch_size} at the initial weights")
        history = measure_at_init(data, hidden, "tanh", init, seed=seed, batch_size=scale.batch_size,
                                  batches=scale.batches)
        predicted = theory.layer_profile(widths, init, "tanh", mean_square)
        measured = hidden_profile(history, "backprop")
        claims.append(Claim(
            f"Glorot & Bengio 2010: {setup}, {name}", "back-propagated RMS: factor per layer toward the input "
            "(geometric mean over the hidden layers)", formula,
            theory=theory.per_layer_factor(predicted["backprop"]), measured=theory.per_layer_factor(measured),
            tolerance=TOLERANCE))
        backprop.series.append(Series(name, _depth_axis(len(hidden)), _relative(measured),
                                      [float(v) for v in predicted["backprop"]]))
        progress(f"{setup}, {name}: {scale.samples} one-sample weight gradients")
        single = measure_at_init(data, hidden, "tanh", init, seed=seed, batch_size=1, batches=scale.samples)
        runs[f"{init}-tanh-{scale.depth}x{scale.width}"], runs[f"{init}-tanh-{scale.depth}x{scale.width}-single"] = (
            history, single)
        grads = kernel_gradient_profile(single, widths)
        predicted_w = theory.layer_profile(widths, init, "tanh", input_mean_square(data, scale.samples))
        relative = grads / grads[-1]
        worst = _worst(relative, predicted_w["weight_grad"])
        claims.append(Claim(
            f"same, {name}", "one sample's weight-gradient RMS per entry, each hidden layer over the top one "
            "(eq. 14: flat)", "Var[dC/dW] = [n Var W]^d Var[x] Var[dC/ds^d], the same in every layer (eq. 14)",
            theory=worst[1], measured=worst[0], tolerance=TOLERANCE,
            theory_text=_range_text(predicted_w["weight_grad"]), measured_text=_range_text(relative)))
        weights.series.append(Series(name, _depth_axis(len(hidden)), [float(v) for v in relative],
                                     [float(v) for v in predicted_w["weight_grad"]]))
    notes = [f"inputs: {data.name}; E[x^2] of the inputs = {mean_square:.4g} "
             "(the one fact about the data the theory uses)",
             f"at the initial weights: {scale.batches} batches of {scale.batch_size} (back-propagated gradient), "
             f"{scale.samples} single samples (weight gradients); softmax output, cross-entropy, seed {seed}",
             "a per-layer factor is the geometric mean from the top hidden layer down to layer 1; a profile claim "
             "is judged by its layer furthest from the theory"]
    return Reproduction("glorot2010", "Glorot & Bengio (2010), Understanding the difficulty of training deep "
                        "feedforward neural networks", claims, [backprop, weights], notes, histories=runs)


# -- he2015 ------------------------------------------------------------------------------------
HE_INITS = {
    "glorot_uniform": ("Glorot init", "sqrt(n Var W * E[ReLU'(s)^2]) = sqrt(1 * 1/2) (eq. 12 with Glorot's "
                       "n Var W = 1)"),
    "he_normal": ("He init (he_normal)",
                  "sqrt(n Var W * E[ReLU'(s)^2]) = sqrt(2 * 1/2) (eq. 12; eq. 10, equal to eq. 14 for equal widths)"),
}


def he2015(data: Any, scale: Scale, seed: int = 0, say: Callable[[str], None] = print) -> Reproduction:
    """He et al. (2015): ReLU layers under Glorot and He init, and a deep ReLU MLP that trains or stalls.

    Args:
        data: the `gradscope.data.Dataset`.
        scale: the sizes and budgets.
        seed: the weights' and data order's seed. Defaults to `0`.
        say: where progress lines go. Defaults to `print`.
    """
    hidden = [scale.width] * scale.depth
    widths = [data.input_dim, *hidden]
    setup = f"{scale.depth} ReLU layers of {scale.width}"
    claims = []
    backprop = Figure("backprop", f"He et al. (2015): {setup}, back-propagated gradient at initialisation",
                      "hidden layer (1 = nearest the input)",
                      "RMS of d(loss)/d(output), relative to the top hidden layer")
    progress = Progress(len(HE_INITS) * (2 if scale.train_steps else 1), say)
    runs: dict[str, GradientHistory] = {}
    for init, (name, formula) in HE_INITS.items():
        progress(f"{setup}, {name}: {scale.batches} batches of {scale.batch_size} at the initial weights")
        history = measure_at_init(data, hidden, "relu", init, seed=seed, batch_size=scale.batch_size,
                                  batches=scale.batches)
        runs[f"{init}-relu-{scale.depth}x{scale.width}"] = history
        predicted = theory.layer_profile(widths, init, "relu", 1.0)  # ReLU's factor needs no input statistic
        measured = hidden_profile(history, "backprop")
        claims.append(Claim(f"He et al. 2015 section 2.2: {setup}, {name}",
                            "back-propagated RMS: factor per layer toward the input (geometric mean)", formula,
                            theory=theory.per_layer_factor(predicted["backprop"]),
                            measured=theory.per_layer_factor(measured), tolerance=TOLERANCE))
        backprop.series.append(Series(name, _depth_axis(len(hidden)), _relative(measured),
                                      [float(v) for v in predicted["backprop"]]))
    figures = [backprop]
    notes = [f"inputs: {data.name}; softmax output, cross-entropy; seed {seed}",
             f"at the initial weights: {scale.batches} batches of {scale.batch_size}"]
    if scale.train_steps:
        depth_claims, training = depth_experiment(data, scale, seed, progress, runs)
        claims += depth_claims
        figures.append(training)
        notes.append(f"depth experiment: SGD with momentum 0.9 (He et al.'s optimiser), learning rate {scale.lr:g}, "
                     f"batches of {scale.train_batch}, {scale.train_steps} steps; 'stalls' means a training accuracy "
                     f"within {STALL_MARGIN * 100:.0f} points of chance over the last tenth of the steps, "
                     f"'trains' one of {TRAINS_AT:.0%} or more with neither the vanishing nor the stalled rule "
                     "firing (docs/diagnosis.md)")
    return Reproduction("he2015", "He et al. (2015), Delving deep into rectifiers, section 2.2", claims,
                        figures, notes, histories=runs)


def depth_experiment(data: Any, scale: Scale, seed: int, say: Callable[[str], None] = print,
                     runs: dict[str, GradientHistory] | None = None) -> tuple[list[Claim], Figure]:
    """He et al.'s depth experiment in small: the deep ReLU MLP under He init trains, under Glorot init it stalls.

    "Stalls" when the training accuracy over the last tenth of the steps stays within
    `STALL_MARGIN` of chance; "trains" when it reaches `TRAINS_AT` with neither the vanishing nor
    the stalled rule firing. gradscope's findings are shown beside it as evidence.

    Args:
        data: the `gradscope.data.Dataset`.
        scale: the sizes and budget (``train_*``, ``lr``).
        seed: the weights' and data order's seed.
        say: where progress lines go. Defaults to `print`.
        runs: where to put each training's record, by name. Defaults to `None`, nowhere.

    Returns:
        One claim per initializer, and the figure of training accuracy over the steps.
    """
    claims = []
    training = Figure("depth_training", f"He et al. (2015) in small: {scale.train_depth} ReLU layers of "
                      f"{scale.train_width}, SGD", "step", "training accuracy (batch)", log_y=False)
    for init, (name, _) in HE_INITS.items():
        say(f"{scale.train_depth} ReLU layers of {scale.train_width}, {name}: {scale.train_steps} SGD steps")
        history, findings = train_deep_relu(data, scale, init, seed)
        if runs is not None:
            runs[f"{init}-relu-{scale.train_depth}x{scale.train_width}-sgd{scale.train_steps}"] = history
        accuracy = history.scalars["accuracy"]
        last = float(np.nanmean(accuracy[-max(1, len(accuracy) // 10):]))
        first = hidden_profile(history, "backprop", rows=slice(0, 1))
        n_var_w = scale.train_width * theory.weight_variance(init, scale.train_width, scale.train_width)
        factor = theory.backprop_factor(n_var_w, 0.5)
        chance = 1.0 / data.num_classes
        if init == "he_normal":
            expected = f"trains: accuracy {TRAINS_AT:.0%} or more, no vanishing or stalled finding"
            holds = last >= TRAINS_AT and not {"vanishing", "stalled"} & set(findings)
        else:
            expected = f"stalls: accuracy within {STALL_MARGIN * 100:.0f} points of chance ({chance:.0%})"
            holds = last < chance + STALL_MARGIN
        claims.append(Claim(
            f"{scale.train_depth} ReLU layers of {scale.train_width}, {name}; SGD {scale.lr:g} momentum 0.9, "
            f"{scale.train_steps} steps of {scale.train_batch}",
            "training accuracy over the last tenth of the steps, and gradscope's findings",
            f"at the start layer 1 gets {factor:.3g}^{scale.train_depth - 1} = "
            f"{factor ** (scale.train_depth - 1):.2g} of the top hidden layer's gradient (eq. 13)",
            theory_text=expected, measured_text=f"accuracy {last:.1%} (last tenth); findings: "
            f"{', '.join(findings) or 'none'}; layer 1 / top at step 1: {first[0] / first[-1]:.2g}", holds=holds))
        training.series.append(Series(name, [float(s) for s in history.steps], [float(a) for a in accuracy]))
    return claims, training



def train_deep_relu(data: Any, scale: Scale, init: str, seed: int) -> tuple[GradientHistory, list[str]]:
    """Trains the depth experiment's ReLU MLP with SGD and momentum 0.9; returns its record and the rules that fired.

    Args:
        data: the `gradscope.data.Dataset`.
        scale: the sizes and budget (``train_*``, ``lr``).
        init: the kernel initializer.
        seed: the weights' and data order's seed.
    """
    import keras

    import gradscope
    from gradscope.diagnosis import diagnose
    from gradscope.models import lecture_mlp
    from gradscope.monitor import GradientMonitor

    keras.utils.set_random_seed(seed)
    model = lecture_mlp(input_dim=data.input_dim, hidden=[scale.train_width] * scale.train_depth,
                        outputs=data.num_classes, activation="relu", output_activation="softmax", init=init, seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(scale.lr, momentum=0.9))
    monitor = GradientMonitor(activation_stats=False)
    monitor.config = {"num_classes": data.num_classes, "dataset": data.name, "activation": "relu", "init": init,
                      "hidden": [scale.train_width] * scale.train_depth, "optimizer": "sgd (momentum 0.9)",
                      "lr": scale.lr, "batch_size": scale.train_batch, "steps": scale.train_steps, "seed": seed}
    history = gradscope.train(model, data.x_train, data.one_hot(data.y_train), batch_size=scale.train_batch,
                              steps=scale.train_steps, callbacks=[monitor], seed=seed, jit_compile="auto")
    return history, [finding.rule for finding in diagnose(history).findings]


# -- lecture -----------------------------------------------------------------------------------
def lecture(data: Any, scale: Scale, seed: int = 0, say: Callable[[str], None] = print) -> Reproduction:
    """The lecture's claims on its own network: tanh against ReLU, random_uniform against Glorot, tanh'(8).

    Args:
        data: the `gradscope.data.Dataset`.
        scale: the sizes and budgets (``hidden``, ``batches``, ``batch_size``).
        seed: the weights' seed. Defaults to `0`.
        say: where progress lines go. Defaults to `print`.
    """
    hidden = list(scale.hidden)
    widths = [data.input_dim, *hidden]
    net = "lecture network " + "-".join(map(str, [data.input_dim, *hidden, data.num_classes]))
    mean_square = input_mean_square(data, scale.batch_size * scale.batches)
    claims = []
    derivative_fig = Figure("activation_derivative", "tanh against ReLU: the factor f'(s) puts on the gradient",
                            "hidden layer (1 = nearest the input)", "RMS of f'(s) over batch and units", log_y=False)
    spread_fig = Figure("activation_spread", "random_uniform against Glorot: tanh outputs through the layers",
                        "hidden layer (1 = nearest the input)", "RMS of the layer's output")
    records: dict[tuple[str, str], GradientHistory] = {}
    runs = [("tanh", "glorot_uniform"), ("tanh", "he_normal"), ("relu", "glorot_uniform"), ("relu", "he_normal"),
            ("tanh", "random_uniform")]
    progress = Progress(len(runs) + 1, say)
    for activation, init in runs:
        progress(f"{net}, {activation}, {init}: {scale.batches} batches of {scale.batch_size} at the initial weights")
        records[activation, init] = measure_at_init(data, hidden, activation, init, seed=seed,
                                                    batch_size=scale.batch_size, batches=scale.batches,
                                                    output_activation="tanh", loss="mse")
    formulas = {"tanh": "sqrt(E[tanh'(s)^2]), s ~ N(0, q_l), q_l from Glorot eq. 5 (falls as q grows)",
                "relu": "sqrt(P(s > 0)) = sqrt(1/2) whatever the weights (He et al. section 2.2)"}
    for activation, init in runs[:4]:
        predicted = theory.layer_profile(widths, init, activation, mean_square)["derivative_rms"]
        measured = hidden_profile(records[activation, init], "dact_rms")
        worst = _worst(measured, predicted)
        claims.append(Claim(f"{net}, {activation} hidden layers, {init}",
                            "RMS of f'(s), each hidden layer (the factor the activation puts on the gradient)",
                            formulas[activation], theory=worst[1], measured=worst[0], tolerance=TOLERANCE,
                            theory_text=_range_text(predicted), measured_text=_range_text(measured)))
        derivative_fig.series.append(Series(f"{activation}, {init}", _depth_axis(len(hidden)),
                                            [float(v) for v in measured], [float(v) for v in predicted]))
    for init in ("random_uniform", "glorot_uniform"):
        predicted = theory.layer_profile(widths, init, "tanh", mean_square)["act_rms"]
        measured = hidden_profile(records["tanh", init], "act_std")
        worst = _worst(measured, predicted)
        gains = [a * theory.weight_variance(init, a, b) for a, b in zip(widths, widths[1:], strict=False)]
        how = f"n Var W = {_range_text(gains)} by layer" + (", U(-0.05, 0.05)" if init == "random_uniform" else "")
        claims.append(Claim(f"{net}, tanh, {init}", "RMS of each hidden layer's output, layer 1 to the top",
                            f"sqrt(E[tanh(s)^2]), Var(s) = n Var W E[x^2] (eq. 5); {how}",
                            theory=worst[1], measured=worst[0], tolerance=TOLERANCE,
                            theory_text=" ".join(f"{v:.3g}" for v in predicted),
                            measured_text=" ".join(f"{v:.3g}" for v in measured)))
        spread_fig.series.append(Series(f"tanh, {init}", _depth_axis(len(hidden)), [float(v) for v in measured],
                                        [float(v) for v in predicted]))
    progress("tanh'(s) and ReLU'(s) by TensorFlow's autodiff, float64 and float32")
    points = [float(s) for s in np.linspace(0.0, 10.0, 41)]
    tanh64, tanh32 = autodiff("tanh", points, "float64"), autodiff("tanh", points, "float32")
    at8 = points.index(8.0)
    claims.append(Claim("tanh'(8) in float64 (TensorFlow autodiff)", "the gradient of tanh at s = 8",
                        "1 - tanh(s)^2 = sech(s)^2", theory=float(theory.derivative("tanh", 8.0)),
                        measured=float(tanh64[at8]), tolerance=DERIVATIVE_TOLERANCE))
    relu = autodiff("relu", points, "float64")
    derivative_points = Figure("tanh_derivative", "tanh'(s) and ReLU'(s) by TensorFlow's autodiff, beside "
                               "sech^2(s) and the step: the lecture's tanh'(8) = 4.5e-7",
                               "s", "f'(s)", [
                                   Series("tanh'(s), float64", points, [float(v) for v in tanh64],
                                          [float(v) for v in theory.derivative("tanh", np.array(points))]),
                                   Series("tanh'(s), float32 (0 drawn at the bottom edge)", points,
                                          [float(v) for v in tanh32]),
                                   Series("ReLU'(s), float64 (0 at s = 0: the bottom edge)", points,
                                          [float(v) for v in relu],
                                          [float(v) for v in theory.derivative("relu", np.array(points))])])
    notes = [f"inputs: {data.name}; E[x^2] of the inputs = {mean_square:.4g}; the lecture's tanh output and MSE; "
             f"{scale.batches} batches of {scale.batch_size} at the initial weights, seed {seed}",
             "a profile claim is judged by its layer furthest from the theory; the theory takes each pre-activation "
             "as Gaussian, N(0, q), with q carried forward layer by layer",
             f"in float32, TensorFlow's autodiff gives tanh'(8) = {tanh32[at8]:.3g}: its float32 tanh returns "
             f"{theory.tf_autodiff('tanh', [8.0], 'float32')[0][1]:.9g} at s = 8, where the float32 nearest tanh(8) is "
             f"{float(np.float32(np.tanh(8.0))):.9g}"]
    runs = {f"{activation}-{init}-lecture": history for (activation, init), history in records.items()}
    return Reproduction("lecture", "The lecture's claims: tanh against ReLU, random_uniform against Glorot, tanh'(8)",
                        claims, [derivative_fig, spread_fig, derivative_points], notes, histories=runs)


#: Every reproduction ``gradscope reproduce`` knows, by name, with what it reproduces.
REPRODUCTIONS: dict[str, tuple[Callable[..., Reproduction], str]] = {
    "glorot2010": (glorot2010, "Glorot & Bengio (2010): standard against normalized init, 5 tanh layers of 1000"),
    "he2015": (he2015, "He et al. (2015): ReLU under Glorot and He init; a 30-layer ReLU MLP trains or stalls"),
    "lecture": (lecture, "the lecture: tanh against ReLU, random_uniform against Glorot, tanh'(8)"),
}


def reproduce(name: str, data: Any, full: bool = False, seed: int = 0, say: Callable[[str], None] = print,
              scale: Scale | None = None) -> Reproduction:
    """Runs the reproduction ``name`` and returns its record, with the settings and timings in ``config``.

    Args:
        name: a key of `REPRODUCTIONS`.
        data: the `gradscope.data.Dataset`.
        full: the papers' sizes and budgets (`FULL_SCALES`) instead of the defaults (`SCALES`). Defaults to `False`.
        seed: the seed. Defaults to `0`.
        say: where progress lines go. Defaults to `print`.
        scale: sizes and budgets that override both. Defaults to `None`.
    """
    function, _ = REPRODUCTIONS[name]
    scale = scale or (FULL_SCALES if full else SCALES)[name]
    wall, cpu = time.perf_counter(), time.process_time()
    record = function(data, scale, seed=seed, say=say)
    record.config = {"full": full, "seed": seed, "dataset": data.name, "scale": asdict(scale),
                     "wall_seconds": round(time.perf_counter() - wall, 1),
                     "cpu_seconds": round(time.process_time() - cpu, 1)}
    return record


def default_folder(name: str, full: bool) -> Path:
    """Where ``gradscope reproduce NAME`` saves without ``--out``: ``runs/reproduce-NAME`` (``-full`` with --full).

    Example:

    >>> str(default_folder("he2015", full=True))
    'runs/reproduce-he2015-full'
    """
    return Path("runs") / (f"reproduce-{name}" + ("-full" if full else ""))
