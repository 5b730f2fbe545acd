"""Verdicts: named rules with documented thresholds, read off a `GradientHistory`.

Each rule looks at plain numbers of the record and, when it fires, gives a
`Finding`: which layers, the measured value against the threshold, the
likely cause and the remedy the lecture gives. No TensorFlow here: a saved run
is diagnosed exactly like a live one.

The central measure is the *ratio to the output layer*: the RMS of the
back-propagated gradient d(loss)/d(output of layer l), divided by the same at
the output layer, as a median over the first and over the last tenth of the
recorded steps (see `depth_ratios`). It is the quantity
that shrinks toward the input in Glorot & Bengio (2010). Runs that did not
record it (a model without tappable layers) fall back to the ratio of weight
gradient norms.

Example:

>>> d = diagnose(load_run("runs/tanh"))     # doctest: +SKIP
>>> print(d.sentences()[0])                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gradscope.history import GradientHistory


@dataclass(frozen=True)
class Rule:
    name: str
    threshold: float
    meaning: str
    remedy: str


#: Every rule, its threshold and its remedy. The README prints this table.
RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "non_finite",
            0.0,
            "a gradient, an activation, a weight or the loss became NaN or Inf",
            "lower the learning rate, clip gradients (clipnorm), and check the inputs and the loss for log(0) or division by 0",
        ),
        Rule(
            "vanishing",
            0.05,
            "a layer's back-propagated gradient (RMS) is below 0.05 of the output layer's",
            "use ReLU in the hidden layers, Glorot (tanh) or He (ReLU) initialisation, a shallower net, or batch normalisation",
        ),
        Rule(
            "exploding",
            20.0,
            "a layer's back-propagated gradient (RMS) is above 20 times the output layer's",
            "use smaller initial weights (Glorot/He), clip gradients (clipnorm), lower the learning rate, or add normalisation",
        ),
        Rule(
            "saturated",
            0.3,
            "over 30% of a tanh/sigmoid layer's outputs sit in the flat tails (|a| >= the saturation threshold, 0.99 by default), where f'(s) is near 0",
            "use smaller initial weights (Glorot), normalise the inputs, add batch normalisation, or switch to ReLU",
        ),
        Rule(
            "dead_relu",
            0.5,
            "half or more of a ReLU layer's units output 0 for every sample in the batch, so they pass no gradient",
            "use He initialisation, a lower learning rate, LeakyReLU/ELU, and check for large negative biases",
        ),
        Rule(
            "small_weights",
            0.8,
            "a layer's initial weight gains forward, sqrt(fan_in * Var(W)), and backward, sqrt(fan_out * Var(W)), are both below 0.8: the layer shrinks the signal (activations pile up at 0) and the gradient",
            "use Glorot (tanh, sigmoid) or He (ReLU) initialisation instead of a fixed small range",
        ),
        Rule(
            "large_weights",
            2.0,
            "a layer's initial weight gains forward and backward are both above 2 (3 for ReLU): the layer amplifies the signal (tanh piles up at +-1) and the gradient",
            "use Glorot (tanh, sigmoid) or He (ReLU) initialisation",
        ),
        Rule(
            "stalled",
            1.5,
            "after at least 50 recorded steps, training accuracy over the last tenth of them is below 1.5 times chance",
            "check the output activation and loss pair (softmax with cross-entropy learns where tanh with MSE can stall), the initialisation and the learning rate",
        ),
    ]
}


#: The remedy when the output layer itself is saturated (the vanishing and
#: stalled findings say it instead of their general remedy).
OUTPUT_SATURATED_REMEDY = (
    "the output layer is saturated, so every gradient starts near 0: give it softmax with cross-entropy "
    "(--output-activation softmax --loss crossentropy), or smaller initial weights there, or a lower learning rate"
)

#: The stalled rule needs this many recorded steps: early on every net is near chance.
STALL_MIN_STEPS = 50


@dataclass
class NonFinite:
    """Where a run first went NaN or Inf."""

    step: int
    layer: str | None
    variable: str | None
    where: str  # "weights", "activations", "loss" or "gradients"

    def sentence(self) -> str:
        place = {
            "weights": f"the weights of layer {self.layer} ({self.variable})",
            "activations": f"the output of layer {self.layer}",
            "loss": "the loss",
            "gradients": f"the gradient of layer {self.layer} ({self.variable})",
        }[self.where]
        return f"non-finite values (NaN/Inf) first appeared at step {self.step} in {place}"


@dataclass
class LayerVerdict:
    name: str
    verdict: str  # healthy / vanishing / exploding / non-finite
    ratio: float  # to the output layer: first or last tenth, whichever is further from 1
    grad_first: float
    grad_last: float
    saturation: float
    dead: float
    dact_mean: float
    gain: float
    activation: str | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Finding:
    rule: str
    layers: list[str]
    message: str
    cause: str
    remedy: str


@dataclass
class Diagnosis:
    measure: str  # "backprop" or "grad_norm"
    layers: list[LayerVerdict]
    findings: list[Finding]
    first_ratio: float  # first watched layer / output layer (the verdict's ratio)
    early_ratio: float  # the same over the first tenth of the steps
    late_ratio: float  # and over the last tenth
    derivative_product: float  # product of mean f'(s), layer 2 to the output, early
    derivative_rms_product: float  # product of RMS f'(s) over the same layers
    weight_product: float  # product of backward weight gains sqrt(fan_out Var W), at the start
    nonfinite: NonFinite | None
    final_loss: float
    final_accuracy: float

    @property
    def healthy(self) -> bool:
        return not self.findings

    def shrink_sentence(self, label: str = "") -> str:
        """'layer 1 gets 1/37 of the output layer's back-propagated gradient'."""
        what = "back-propagated gradient" if self.measure == "backprop" else "gradient norm"
        r = self.first_ratio
        prefix = f"{label}: " if label else ""
        if not math.isfinite(r):
            return f"{prefix}the first layer's {what} is not finite"
        share = f"1/{1 / r:.0f}" if 0 < r < 1 else f"{r:.2g}x"
        return f"{prefix}layer 1 gets {share} of the output layer's {what}"

    def sentences(self) -> list[str]:
        out = [self.shrink_sentence() + "."]
        if math.isfinite(self.early_ratio) and math.isfinite(self.late_ratio):
            out.append(
                f"The ratio is {_fmt_ratio(self.early_ratio)} over the first tenth of the steps "
                f"and {_fmt_ratio(self.late_ratio)} over the last."
            )
        if math.isfinite(self.derivative_product) and self.measure == "backprop":
            predicted = self.derivative_rms_product * self.weight_product
            out.append(
                f"Chain rule, at the start: the mean activation derivatives f'(s) of the layers above layer 1 "
                f"multiply to {self.derivative_product:.3g} (their RMS to {self.derivative_rms_product:.3g}), "
                f"the weights' backward gains to {self.weight_product:.3g}; "
                f"predicted ratio {predicted:.3g}, measured {self.early_ratio:.3g}."
            )
        if not self.findings:
            out.append("Verdict: healthy. No rule fired.")
        for f in self.findings:
            out.append(f"[{f.rule}] {f.message} Cause: {f.cause}. Remedy: {f.remedy}.")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sentences"] = self.sentences()
        return d


def _median(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=0) if len(a) else np.full(a.shape[1:], np.nan)


def depth_ratios(series: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each layer's series relative to the output layer: (verdict, early, late).

    Early and late are medians over the first and the last tenth of the
    recorded steps (at least one step each). The verdict ratio is, per layer,
    whichever of the two lies further from 1 on a log scale: a net that
    starts vanishing and one that drifts into it are both caught.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = series / series[:, -1:]
    n = len(rel)
    k = max(1, n // 10)
    early, late = _median(rel[:k]), _median(rel[-k:])
    with np.errstate(divide="ignore", invalid="ignore"):
        pick_late = np.abs(np.log(late)) > np.abs(np.log(early))
    worst = np.where(np.isfinite(late) & (pick_late | ~np.isfinite(early)), late, early)
    return worst, early, late


def weight_gains(history: GradientHistory) -> tuple[np.ndarray, np.ndarray]:
    """Forward gain sqrt(fan_in Var(W)) and backward gain sqrt(fan_out Var(W)) of each kernel.

    Read from the first recorded kernel norm (the weights after the first
    recorded update, which at the usual learning rates are the initial ones
    to about 0.1%): ||W||^2 = fan_in * fan_out * Var(W), assuming zero-mean
    weights. NaN for layers without a 2-D+ kernel or never measured.
    """
    fwd = np.full(len(history.layers), np.nan)
    bwd = np.full(len(history.layers), np.nan)
    wn = history.variable_series.get("weight_norm")
    if wn is None or not len(history):
        return fwd, bwd
    for li, (name, info) in enumerate(zip(history.layers, history.layer_info, strict=False)):
        key = f"{name}/kernel"
        if key in history.variables and info.get("fan_in") and info.get("fan_out"):
            column = wn[:, history.variables.index(key)]
            measured = column[~np.isnan(column)]  # NaN: a step that did not measure weights
            if len(measured):
                fwd[li] = measured[0] / math.sqrt(info["fan_out"])
                bwd[li] = measured[0] / math.sqrt(info["fan_in"])
    return fwd, bwd


def first_nonfinite(history: GradientHistory, since_row: int = 0, loss_scaled: bool = False) -> NonFinite | None:
    """The first step where anything went NaN/Inf, traced to its layer.

    In the record, a norm is NaN where it was not measured and +inf where
    the tensor held NaN or Inf; weight norms are read after the step's
    update. Forward origins win: the first layer (in forward order) whose
    weights were non-finite before the step (non-finite after it, with a
    finite gradient) or whose outputs are non-finite is where the trouble
    started, since everything after it inherits it. Weights broken outside
    the optimizer on a step whose gradient they also broke show up as that
    layer's output. With finite
    activations, a non-finite loss comes next, then the gradients, searched
    from the output layer down (the direction back-propagation runs), then
    weights that this step's update made non-finite. Under loss scaling,
    non-finite gradients alone are the loss scaler's business (it skips the
    step), so they are not reported.
    """
    if len(history) <= since_row:
        return None
    rows = slice(since_row, None)
    steps = history.steps[rows]
    n = len(steps)
    V = len(history.variables)

    def inf(name: str) -> np.ndarray:
        a = history.variable_series.get(name)
        return np.isinf(a[rows]).reshape(n, V) if a is not None else np.zeros((n, V), dtype=bool)

    share = history.get("nonfinite")
    # Share of non-finite outputs; NaN where the layer was not measured.
    act = np.nan_to_num(share[rows], nan=0.0).reshape(n, -1) > 0 if share is not None else np.zeros((n, 0), bool)
    gbad = inf("grad_norm")
    after = inf("weight_norm")  # non-finite after the step's update
    # As the step used them: non-finite after this step's update although
    # its gradient was finite, so they were so before it. (Weights that an
    # update made non-finite are flagged at that update's own row, which
    # comes first.)
    used = after & ~gbad
    loss = history.scalars.get("loss")
    lbad = np.isinf(loss[rows]) | (np.isnan(loss[rows]) & ~np.all(np.isnan(loss))) if loss is not None else np.zeros(n, bool)
    nan_rows = act.any(1) | used.any(1) | lbad | after.any(1) | (gbad.any(1) & (not loss_scaled))
    if not nan_rows.any():
        return None
    r = int(np.argmax(nan_rows))
    step = int(steps[r])
    var_layer = [v.split("/", 1)[0] for v in history.variables]

    def layer_vars(layer: str, mask: np.ndarray) -> list[str]:
        return [v.split("/", 1)[1] for vi, v in enumerate(history.variables) if var_layer[vi] == layer and mask[r, vi]]

    # 1. Forward: the first layer (in forward order) whose weights, as the
    #    step used them, or whose output is non-finite. Everything after it
    #    inherits the trouble, and a ReLU can even hide it (relu(NaN) is 0
    #    on some kernels), so the weights are checked as well as the outputs.
    for li, layer in enumerate(history.layers):
        bad_w = layer_vars(layer, used)
        if bad_w:
            return NonFinite(step, layer, bad_w[0], "weights")
        if act.shape[1] > li and act[r, li]:
            bad = layer_vars(layer, gbad) or layer_vars(layer, after)
            return NonFinite(step, layer, bad[0] if bad else None, "activations")
    # 2. A finite forward pass with a non-finite loss: the loss itself.
    if lbad[r]:
        return NonFinite(step, None, None, "loss")
    # 3. Backward: the gradient nearest the output, where back-propagation starts.
    if not loss_scaled:
        for vi in range(V - 1, -1, -1):
            if gbad[r, vi]:
                layer, var = history.variables[vi].split("/", 1)
                return NonFinite(step, layer, var, "gradients")
    # 4. Weights this step's update made non-finite.
    for vi in range(V):
        if after[r, vi]:
            layer, var = history.variables[vi].split("/", 1)
            return NonFinite(step, layer, var, "weights")
    return NonFinite(step, None, None, "gradients")


def diagnose(history: GradientHistory, num_classes: int | None = None) -> Diagnosis:
    """Applies every rule in `RULES` to a history; see the module docstring."""
    L = len(history.layers)
    if not len(history) or not L:
        raise ValueError("the history is empty: nothing was recorded to diagnose")
    bp = history.get("backprop")
    measure = "backprop" if bp is not None and np.isfinite(bp).any() else "grad_norm"
    series = history[measure]
    # Ratios come from the steps where every layer's value is finite; the
    # non-finite steps are the non_finite rule's business.
    finite_rows = np.all(np.isfinite(series), axis=1)
    ratios, early, late = depth_ratios(series[finite_rows] if finite_rows.any() else series)
    grad = history["grad_norm"]
    nan = np.full(L, np.nan)
    sat = _median(history["saturation"]) if "saturation" in history else nan
    dead = _median(history["dead"]) if "dead" in history else nan
    dact = _median(history["dact_mean"]) if "dact_mean" in history else nan
    fwd_gain, bwd_gain = weight_gains(history)
    acts = history.info("activation")
    loss_scale = history.scalars.get("loss_scale")
    scaled = loss_scale is not None and bool(np.any(np.nan_to_num(loss_scale, nan=1.0) != 1.0))
    nonfinite = first_nonfinite(history, loss_scaled=scaled)
    nonfinite_layers = set()
    if nonfinite is not None:
        nonfinite_layers = {
            name for li, name in enumerate(history.layers) if not np.all(np.isfinite(series[:, li]))
        }

    verdicts: list[LayerVerdict] = []
    for li, name in enumerate(history.layers):
        r = float(ratios[li])
        if name in nonfinite_layers:
            v = "non-finite"
        elif r < RULES["vanishing"].threshold:
            v = "vanishing"
        elif r > RULES["exploding"].threshold:
            v = "exploding"
        else:
            v = "healthy"
        verdicts.append(
            LayerVerdict(
                name, v, r, float(grad[0, li]), float(grad[-1, li]), float(sat[li]), float(dead[li]),
                float(dact[li]), float(fwd_gain[li]), acts[li],
            )
        )

    findings: list[Finding] = []
    if nonfinite is not None:
        findings.append(_finding("non_finite", [nonfinite.layer or "-"], nonfinite.sentence() + ".", "numeric overflow or an invalid operation"))
    saturated = [v.name for v in verdicts if v.saturation > RULES["saturated"].threshold]
    dead_layers = [v.name for v in verdicts if v.dead > RULES["dead_relu"].threshold]
    # Too small means too small both ways: forward (the signal) and backward
    # (the gradient). A wide layer after a narrow input is not "too small"
    # just because its forward gain is below 1; Glorot trades the two.
    small = [
        name for li, name in enumerate(history.layers)
        if max(fwd_gain[li], bwd_gain[li]) < RULES["small_weights"].threshold
    ]
    large = [
        name for li, name in enumerate(history.layers)
        if min(fwd_gain[li], bwd_gain[li])
        > (3.0 if (acts[li] or "").startswith("relu") else RULES["large_weights"].threshold)
    ]
    # The chain-rule explanation is made at the start of training, where the
    # weights are the initial ones the gains were read from.
    k = max(1, len(history) // 10)
    dact_early = _median(history["dact_mean"][:k]) if "dact_mean" in history else nan
    drms_early = _median(history["dact_rms"][:k]) if "dact_rms" in history else nan
    dprod = float(np.prod(dact_early[1:])) if L > 1 else float("nan")
    drms = float(np.prod(drms_early[1:])) if L > 1 else float("nan")
    wprod = float(np.prod(bwd_gain[1:])) if L > 1 else float("nan")

    vanishing = [v.name for v in verdicts if v.verdict == "vanishing"]
    if vanishing:
        cause = _vanishing_cause(saturated, dead_layers, small, dprod, wprod, L)
        msg = (
            f"The back-propagated gradient shrinks toward the input: {_layers_get(vanishing)} "
            f"{_list_ratios(verdicts, vanishing)} of the output layer's (threshold {RULES['vanishing'].threshold})."
        )
        if measure == "grad_norm":
            msg = msg.replace("back-propagated gradient", "weight-gradient norm")
        finding = _finding("vanishing", vanishing, msg, cause)
        if history.layers[-1] in saturated:
            # Every gradient starts at the output layer: when its tanh/sigmoid
            # sits at +-1, fixing the hidden layers does not help.
            finding.remedy = OUTPUT_SATURATED_REMEDY
        findings.append(finding)
    exploding = [v.name for v in verdicts if v.verdict == "exploding"]
    if exploding:
        cause = "weights too large" if large else "depth: each layer multiplies the gradient by more than 1"
        msg = (
            f"The back-propagated gradient grows toward the input: {_layers_get(exploding)} "
            f"{_list_ratios(verdicts, exploding)} times the output layer's (threshold {RULES['exploding'].threshold:g})."
        )
        findings.append(_finding("exploding", exploding, msg, cause))
    if saturated:
        msg = f"Saturated units: {_list_share(verdicts, saturated, 'saturation')} of the outputs sit at +-1 (threshold {RULES['saturated'].threshold:.0%})."
        cause = "weights too large for tanh/sigmoid" if large else "pre-activations too large, so f'(s) is near 0"
        findings.append(_finding("saturated", saturated, msg, cause))
    if dead_layers:
        msg = f"Dead ReLUs: {_list_share(verdicts, dead_layers, 'dead')} of the units never fire (threshold {RULES['dead_relu'].threshold:.0%})."
        findings.append(_finding("dead_relu", dead_layers, msg, "pre-activations below 0 for every sample (negative bias or a too large step)"))
    if small:
        gains = ", ".join(f"{n} {verdicts[history.layers.index(n)].gain:.2f}" for n in small)
        findings.append(_finding("small_weights", small, f"Initial weight gains below {RULES['small_weights'].threshold}: {gains}.", "weights too small for the layer's fan-in"))
    if large:
        gains = ", ".join(f"{n} {verdicts[history.layers.index(n)].gain:.2f}" for n in large)
        findings.append(_finding("large_weights", large, f"Initial weight gains above {RULES['large_weights'].threshold:g}: {gains}.", "weights too large for the layer's fan-in"))

    loss = history.scalars.get("loss", np.full(len(history), np.nan))
    acc = history.scalars.get("accuracy", np.full(len(history), np.nan))
    tail = max(1, len(history) // 10)
    final_loss = float(_median(loss[-tail:][:, None])[0]) if len(loss) else float("nan")
    first_loss = float(_median(loss[:tail][:, None])[0]) if len(loss) else float("nan")
    final_acc = float(_median(acc[-tail:][:, None])[0]) if len(acc) else float("nan")
    classes = num_classes or history.config.get("num_classes") or _output_units(history)
    if classes and math.isfinite(final_acc) and len(history) >= STALL_MIN_STEPS:
        chance = 1.0 / classes
        fell = (first_loss - final_loss) / abs(first_loss) if first_loss else 0.0
        if final_acc < RULES["stalled"].threshold * chance:
            out = history.layers[-1]
            cause = "the output layer is saturated" if out in saturated else "the gradient reaching the weights is too small to move them"
            finding = _finding(
                "stalled",
                [out],
                f"Training stalled: accuracy {final_acc:.1%} against chance {chance:.1%}; the loss changed by {-fell:+.0%}.",
                cause,
            )
            if out in saturated:
                finding.remedy = OUTPUT_SATURATED_REMEDY
            findings.append(finding)
    return Diagnosis(
        measure, verdicts, findings, float(ratios[0]), float(early[0]), float(late[0]),
        dprod, drms, wprod, nonfinite, final_loss, final_acc,
    )


def _vanishing_cause(saturated, dead, small, dprod, wprod, L) -> str:
    if saturated:
        return f"saturated units in {', '.join(saturated)}: tanh'(s) and sigmoid'(s) are near 0 there"
    if dead:
        return f"dead ReLUs in {', '.join(dead)}"
    if math.isfinite(dprod) and dprod < 0.1:
        return (
            f"the activation derivatives: f'(s) multiplies to {dprod:.2g} over the layers above layer 1 "
            "(sigmoid'(s) is at most 0.25; tanh'(s) falls toward 0 as |s| grows)"
        )
    if small or (math.isfinite(wprod) and wprod < 0.2):
        return f"weights too small: each layer scales the gradient down (product of weight gains {wprod:.2g})"
    return f"depth: {L} layers multiply factors below 1"


def _layers_get(names: list[str]) -> str:
    return f"{names[0]} gets" if len(names) == 1 else f"layers {', '.join(names)} get"


def _finding(rule: str, layers: list[str], message: str, cause: str) -> Finding:
    return Finding(rule, layers, message, cause, RULES[rule].remedy)


def _list_ratios(verdicts: list[LayerVerdict], names: list[str]) -> str:
    by = {v.name: v for v in verdicts}
    return ", ".join(f"{_fmt_ratio(by[n].ratio)}" for n in names)


def _fmt_ratio(r: float) -> str:
    if not math.isfinite(r):
        return "n/a"
    return f"1/{1 / r:.0f}" if 0 < r < 1 else f"{r:.3g}"


def _list_share(verdicts: list[LayerVerdict], names: list[str], attr: str) -> str:
    by = {v.name: v for v in verdicts}
    return ", ".join(f"{n} {getattr(by[n], attr):.0%}" for n in names)


def _output_units(history: GradientHistory) -> int | None:
    units = history.info("units")
    return units[-1] if units and units[-1] and units[-1] > 1 else None
