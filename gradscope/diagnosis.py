"""Verdicts: named rules with documented thresholds, read off a `GradientHistory`.

Each rule in `RULES` is an object that owns its thresholds and its check:
`rule.check(context)` looks at plain numbers of the record, gathered once in
a `DiagnosisContext`, and when it fires gives a `Finding`: which layers, the
measured value against the threshold, the likely cause and the remedy. No
TensorFlow here: a saved run is diagnosed exactly like a live one.

The central measure is the *ratio to the output layer*: the RMS of the
back-propagated gradient d(loss)/d(output of layer l), divided by the same at
the output layer, as a median over the first and over the last tenth of the
recorded steps (see `depth_ratios`). It is the quantity that shrinks toward
the input in Glorot & Bengio (2010). Runs that did not record it (a model
without tappable layers) fall back to the ratio of weight gradient norms.

To add a rule, subclass `Rule`, give it a `check`, and add one instance to the
table in `RULES` (its position there is the position of its findings).
docs/diagnosis.md holds the table in words; `python -m gradscope.diagnosis`
prints it.

Example:

>>> import numpy as np
>>> from gradscope.history import GradientHistory
>>> h = GradientHistory(["hidden", "output"])
>>> bp = np.tile([0.01, 1.0], (20, 1))  # the hidden layer gets 1/100 of the output layer's gradient
>>> h.append(range(20), {"backprop": bp, "grad_norm": bp})
>>> d = diagnose(h)
>>> print(d.sentences()[0])
layer 1 gets 1/100 of the output layer's back-propagated gradient.
>>> [(f.rule, f.layers) for f in d.findings]
[('vanishing', ['hidden'])]
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from gradscope.history import GradientHistory

#: The remedy when the output layer itself is saturated (the vanishing and
#: stalled findings say it instead of their general remedy).
OUTPUT_SATURATED_REMEDY = (
    "the output layer is saturated, so every gradient starts near 0: give it softmax with cross-entropy "
    "(--output-activation softmax --loss crossentropy), or smaller initial weights there, or a lower learning rate"
)

# The markers around the generated rule table in docs/diagnosis.md.
RULES_TABLE_BEGIN = "<!-- rules:begin -->"
RULES_TABLE_END = "<!-- rules:end -->"


# -- what a diagnosis says ----------------------------------------------------


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
    """One layer's verdict and the numbers behind it."""

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
    """A rule that fired: the layers it names, what it measured, the likely cause and the remedy."""

    rule: str
    layers: list[str]
    message: str
    cause: str
    remedy: str


@dataclass
class Diagnosis:
    """Per-layer verdicts, the findings of every rule that fired, and the numbers they rest on."""

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


# -- measures over the record ---------------------------------------------------


def _median(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=0) if len(a) else np.full(a.shape[1:], np.nan)


def _tenth(rows: int) -> int:
    """Rows in the first (and in the last) tenth of a record: at least one."""
    return max(1, rows // 10)


def depth_ratios(series: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each layer's series relative to the output layer: (verdict, early, late).

    Early and late are medians over the first and the last tenth of the
    rows (at least one row each). The verdict ratio is, per layer, whichever
    of the two lies further from 1 on a log scale: a net that starts
    vanishing and one that drifts into it are both caught.

    Args:
        series: `(steps, layers)` array, the output layer last.

    Returns:
        Three arrays of one value per layer: the verdict ratio, the early and the late ratio.

    Example:

    >>> import numpy as np
    >>> worst, early, late = depth_ratios(np.array([[0.5, 1.0]] * 10 + [[0.01, 1.0]] * 10))
    >>> print(early[0], late[0], worst[0])
    0.5 0.01 0.01
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = series / series[:, -1:]
    k = _tenth(len(rel))
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

    Args:
        history: the record; it needs the `weight_norm` variable series and `fan_in`/`fan_out` in `layer_info`.

    Returns:
        Two arrays of one gain per layer: forward, backward.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"], variables=["dense/kernel"], layer_info=[{"fan_in": 16, "fan_out": 4}])
    >>> h.append([0], {"grad_norm": np.ones((1, 1))}, variable_series={"weight_norm": np.array([[4.0]])})
    >>> forward, backward = weight_gains(h)
    >>> print(forward[0], backward[0])
    2.0 1.0
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


def first_nonfinite(history: GradientHistory, loss_scaled: bool = False) -> NonFinite | None:
    """The first step where anything went NaN/Inf, traced to its layer.

    In the record, a norm is NaN where it was not measured and +inf where
    the tensor held NaN or Inf; weight norms are read after the step's
    update. Forward origins win: the first layer (in forward order) whose
    weights were non-finite before the step (non-finite after it, with a
    finite gradient) or whose outputs are non-finite is where the trouble
    started, since everything after it inherits it. Weights broken outside
    the optimizer on a step whose gradient they also broke show up as that
    layer's output. With finite activations, a non-finite loss comes next,
    then the gradients, searched from the output layer down (the direction
    back-propagation runs), then weights that this step's update made
    non-finite.

    Args:
        history: the record to search.
        loss_scaled: whether the run used loss scaling (mixed precision). Non-finite gradients alone are then the
            loss scaler's business (it skips the step), so they are not reported. Defaults to `False`.

    Returns:
        Where it happened, or None when every recorded value is finite.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"], variables=["dense/kernel"])
    >>> h.append([0, 1], {"nonfinite": np.zeros((2, 1))}, {"loss": [1.0, 1.0]},
    ...          {"grad_norm": np.array([[1.0], [np.inf]]), "weight_norm": np.ones((2, 1))})
    >>> first_nonfinite(h).sentence()
    'non-finite values (NaN/Inf) first appeared at step 1 in the gradient of layer dense (kernel)'
    >>> first_nonfinite(h, loss_scaled=True) is None
    True
    """
    if not len(history):
        return None
    steps = history.steps
    n = len(steps)
    V = len(history.variables)

    def inf(name: str) -> np.ndarray:
        a = history.variable_series.get(name)
        return np.isinf(a).reshape(n, V) if a is not None else np.zeros((n, V), dtype=bool)

    share = history.get("nonfinite")
    # Share of non-finite outputs; NaN where the layer was not measured.
    act = np.nan_to_num(share, nan=0.0).reshape(n, -1) > 0 if share is not None else np.zeros((n, 0), bool)
    gbad = inf("grad_norm")
    after = inf("weight_norm")  # non-finite after the step's update
    # As the step used them: non-finite after this step's update although
    # its gradient was finite, so they were so before it. (Weights that an
    # update made non-finite are flagged at that update's own row, which
    # comes first.)
    used = after & ~gbad
    loss = history.scalars.get("loss")
    # A loss that is NaN on every row was never recorded, not broken.
    lbad = np.isinf(loss) | (np.isnan(loss) & ~np.all(np.isnan(loss))) if loss is not None else np.zeros(n, bool)
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


# -- the numbers every rule reads -------------------------------------------------


class DiagnosisContext:
    """Everything the rules read off one history, computed once.

    The rules never touch the history's arrays themselves: the ratios, the
    first/last-tenth windows, the medians and the chain-rule products are
    worked out here, so every rule sees the same numbers.

    Args:
        history: the record to diagnose; it needs at least one step and one layer.
        num_classes: the number of classes, for the stalled rule's chance level. Defaults to `None`: read from
            `history.config["num_classes"]`, else from the output layer's units.
        rules: the rules to apply, in the order their findings are reported. Defaults to `None`: every rule in
            `RULES`.

    What a rule can read (arrays hold one value per layer, in forward order):
    `measure` ("backprop" or "grad_norm"), `ratios`, `early`, `late` (see
    `depth_ratios`), `saturation`, `dead`, `dact_mean` (medians over all
    steps), `forward_gain`, `backward_gain` (see `weight_gains`),
    `activations`, `nonfinite` and `nonfinite_layers`, the chain-rule
    products `derivative_product`, `derivative_rms_product`,
    `weight_product`, `first_loss`, `final_loss`, `final_accuracy` (medians
    over the first or last tenth), `num_classes`, `steps`, the row windows
    `first_tenth` and `last_tenth`, the per-layer `verdicts`, and the other
    rules' layers through `flagged(name)`.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["hidden", "output"])
    >>> h.append(range(20), {"backprop": np.tile([0.01, 1.0], (20, 1)), "grad_norm": np.ones((20, 2))})
    >>> context = DiagnosisContext(h)
    >>> context.measure, float(context.ratios[0])
    ('backprop', 0.01)
    >>> RULES["vanishing"].check(context)[0].layers
    ['hidden']
    """

    def __init__(
        self, history: GradientHistory, num_classes: int | None = None, rules: Iterable[Rule] | None = None
    ) -> None:
        if not len(history) or not history.layers:
            raise ValueError("the history is empty: nothing was recorded to diagnose")
        self.history = history
        self.rules: dict[str, Rule] = {}
        for rule in RULES.values() if rules is None else rules:
            if rule.name in self.rules:
                raise ValueError(f"two rules are named {rule.name!r}")
            self.rules[rule.name] = rule
        self.layers: list[str] = history.layers
        self.steps = len(history)
        k = _tenth(self.steps)
        self.first_tenth, self.last_tenth = slice(None, k), slice(-k, None)

        # Ratios to the output layer: the back-propagated gradient where the
        # run recorded it, else the weight-gradient norms.
        bp = history.get("backprop")
        self.measure = "backprop" if bp is not None and np.isfinite(bp).any() else "grad_norm"
        series = history[self.measure]
        # Ratios come from the steps where every layer's value is finite; the
        # non-finite steps are the non_finite rule's business.
        finite_rows = np.all(np.isfinite(series), axis=1)
        self.ratios, self.early, self.late = depth_ratios(series[finite_rows] if finite_rows.any() else series)
        self.grad_norm = history["grad_norm"]

        # Per layer, median over all steps.
        self.saturation = self._median("saturation", slice(None))
        self.dead = self._median("dead", slice(None))
        self.dact_mean = self._median("dact_mean", slice(None))
        self.forward_gain, self.backward_gain = weight_gains(history)
        self.activations: list[str | None] = history.info("activation")

        loss_scale = history.scalars.get("loss_scale")
        scaled = loss_scale is not None and bool(np.any(np.nan_to_num(loss_scale, nan=1.0) != 1.0))
        self.nonfinite = first_nonfinite(history, loss_scaled=scaled)
        self.nonfinite_layers: set[str] = set()
        if self.nonfinite is not None:
            self.nonfinite_layers = {
                name for li, name in enumerate(self.layers) if not np.all(np.isfinite(series[:, li]))
            }

        # The chain-rule explanation is made at the start of training, where
        # the weights are the initial ones the gains were read from.
        deep = len(self.layers) > 1
        dact_early = self._median("dact_mean", self.first_tenth)
        drms_early = self._median("dact_rms", self.first_tenth)
        self.derivative_product = float(np.prod(dact_early[1:])) if deep else float("nan")
        self.derivative_rms_product = float(np.prod(drms_early[1:])) if deep else float("nan")
        self.weight_product = float(np.prod(self.backward_gain[1:])) if deep else float("nan")

        loss = history.scalars.get("loss", np.full(self.steps, np.nan))
        acc = history.scalars.get("accuracy", np.full(self.steps, np.nan))
        self.first_loss = float(_median(loss[self.first_tenth, None])[0])
        self.final_loss = float(_median(loss[self.last_tenth, None])[0])
        self.final_accuracy = float(_median(acc[self.last_tenth, None])[0])
        self.num_classes: int | None = num_classes or history.config.get("num_classes") or _output_units(history)

        self._flagged: dict[str, list[str]] = {}
        self.verdicts = self._layer_verdicts()

    def _median(self, name: str, rows: slice) -> np.ndarray:
        if name not in self.history:
            return np.full(len(self.layers), np.nan)
        return _median(self.history[name][rows])

    def _layer_verdicts(self) -> list[LayerVerdict]:
        verdicts = []
        for li, name in enumerate(self.layers):
            if name in self.nonfinite_layers:
                verdict = "non-finite"
            else:
                said = (rule.verdict(self, li) for rule in self.rules.values())
                verdict = next((v for v in said if v is not None), "healthy")
            verdicts.append(
                LayerVerdict(
                    name, verdict, float(self.ratios[li]), float(self.grad_norm[0, li]),
                    float(self.grad_norm[-1, li]), float(self.saturation[li]), float(self.dead[li]),
                    float(self.dact_mean[li]), float(self.forward_gain[li]), self.activations[li],
                )
            )
        return verdicts

    @property
    def output(self) -> str:
        """The output layer's name."""
        return self.layers[-1]

    def flagged(self, rule: str) -> list[str]:
        """The layers the named rule flags; none when that rule is not applied.

        Rules read each other's layers through this to name a cause (vanishing
        because of saturated units, say).
        """
        if rule not in self._flagged:
            self._flagged[rule] = self.rules[rule].flags(self) if rule in self.rules else []
        return self._flagged[rule]

    def judged(self, verdict: str) -> list[str]:
        """The layers whose verdict is `verdict`."""
        return [v.name for v in self.verdicts if v.verdict == verdict]

    def diagnosis(self) -> Diagnosis:
        """Applies every rule, in order, and gathers the verdicts and findings."""
        findings = [finding for rule in self.rules.values() for finding in rule.check(self)]
        return Diagnosis(
            self.measure, self.verdicts, findings, float(self.ratios[0]), float(self.early[0]),
            float(self.late[0]), self.derivative_product, self.derivative_rms_product, self.weight_product,
            self.nonfinite, self.final_loss, self.final_accuracy,
        )


# -- the rules --------------------------------------------------------------------


@dataclass(frozen=True)
class Rule(abc.ABC):
    """A named check with its thresholds, its meaning in words and its remedy.

    A subclass implements `check`; extra thresholds are extra dataclass
    fields, so that every number lives in the `RULES` table and shows in the
    generated docs. Change one for a single diagnosis with
    `dataclasses.replace(RULES["stalled"], min_steps=20)`.

    Args:
        name: the rule's name, as findings report it.
        threshold: the number the rule compares against.
        meaning_format: what firing means, in words; the rule's parameters (`threshold` and any extra field) may
            appear as `str.format` fields, e.g. `"below {threshold:g}"`, so the words follow the numbers.
        remedy: what to try when it fires.
    """

    name: str
    threshold: float
    meaning_format: str
    remedy: str

    @abc.abstractmethod
    def check(self, context: DiagnosisContext) -> list[Finding]:
        """The rule's findings on one history: empty when it does not fire.

        Args:
            context: the numbers of the history being diagnosed.
        """

    def flags(self, context: DiagnosisContext) -> list[str]:
        """The layers this rule flags (other rules read them to name a cause).

        Args:
            context: the numbers of the history being diagnosed.
        """
        return [layer for finding in self.check(context) for layer in finding.layers]

    def verdict(self, context: DiagnosisContext, layer: int) -> str | None:
        """The per-layer verdict this rule gives layer number `layer`, or None.

        Args:
            context: the numbers of the history being diagnosed.
            layer: the layer's index, in forward order.
        """
        return None

    @property
    def meaning(self) -> str:
        return self.meaning_format.format(**self.parameters())

    def parameters(self) -> dict[str, Any]:
        """`threshold` and the rule's extra thresholds, by name."""
        text = {"name", "meaning_format", "remedy"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in text}

    def finding(self, layers: list[str], message: str, cause: str, remedy: str | None = None) -> Finding:
        """A finding of this rule; `remedy` defaults to the rule's."""
        return Finding(self.name, layers, message, cause, self.remedy if remedy is None else remedy)


@dataclass(frozen=True)
class NonFiniteRule(Rule):
    """Fires when anything went NaN/Inf; names the first step, layer and variable (see `first_nonfinite`)."""

    def check(self, context: DiagnosisContext) -> list[Finding]:
        nf = context.nonfinite
        if nf is None:
            return []
        return [self.finding([nf.layer or "-"], nf.sentence() + ".", "numeric overflow or an invalid operation")]


@dataclass(frozen=True)
class VanishingRule(Rule):
    """Layers whose ratio to the output layer is below `threshold`.

    The cause is the first that applies: saturated units, dead ReLUs, a
    product of mean activation derivatives below `derivative_cause_below`,
    weights too small (the small_weights rule fired, or their backward gains
    multiply to below `weight_cause_below`), else depth.
    """

    derivative_cause_below: float
    weight_cause_below: float

    def verdict(self, context: DiagnosisContext, layer: int) -> str | None:
        return self.name if context.ratios[layer] < self.threshold else None

    def flags(self, context: DiagnosisContext) -> list[str]:
        return context.judged(self.name)

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        what = "back-propagated gradient" if context.measure == "backprop" else "weight-gradient norm"
        message = (
            f"The {what} shrinks toward the input: {_layers_get(layers)} "
            f"{_list_ratios(context, layers)} of the output layer's (threshold {self.threshold})."
        )
        # Every gradient starts at the output layer: when its tanh/sigmoid
        # sits at +-1, fixing the hidden layers does not help.
        output_saturated = context.output in context.flagged("saturated")
        remedy = OUTPUT_SATURATED_REMEDY if output_saturated else None
        return [self.finding(layers, message, self.cause(context), remedy)]

    def cause(self, context: DiagnosisContext) -> str:
        """The most likely cause of the shrinkage, in words."""
        saturated, dead = context.flagged("saturated"), context.flagged("dead_relu")
        dprod, wprod = context.derivative_product, context.weight_product
        if saturated:
            return f"saturated units in {', '.join(saturated)}: tanh'(s) and sigmoid'(s) are near 0 there"
        if dead:
            return f"dead ReLUs in {', '.join(dead)}"
        if math.isfinite(dprod) and dprod < self.derivative_cause_below:
            return (
                f"the activation derivatives: f'(s) multiplies to {dprod:.2g} over the layers above layer 1 "
                "(sigmoid'(s) is at most 0.25; tanh'(s) falls toward 0 as |s| grows)"
            )
        if context.flagged("small_weights") or (math.isfinite(wprod) and wprod < self.weight_cause_below):
            return f"weights too small: each layer scales the gradient down (product of weight gains {wprod:.2g})"
        return f"depth: {len(context.layers)} layers multiply factors below 1"


@dataclass(frozen=True)
class ExplodingRule(Rule):
    """Layers whose ratio to the output layer is above `threshold`."""

    def verdict(self, context: DiagnosisContext, layer: int) -> str | None:
        return self.name if context.ratios[layer] > self.threshold else None

    def flags(self, context: DiagnosisContext) -> list[str]:
        return context.judged(self.name)

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        if context.flagged("large_weights"):
            cause = "weights too large"
        else:
            cause = "depth: each layer multiplies the gradient by more than 1"
        message = (
            f"The back-propagated gradient grows toward the input: {_layers_get(layers)} "
            f"{_list_ratios(context, layers)} times the output layer's (threshold {self.threshold:g})."
        )
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class SaturatedRule(Rule):
    """Layers whose median share of outputs in the flat tails is above `threshold`."""

    def flags(self, context: DiagnosisContext) -> list[str]:
        return [name for name, share in zip(context.layers, context.saturation, strict=True) if share > self.threshold]

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = (
            f"Saturated units: {_list_shares(context, layers, context.saturation)} of the outputs sit at +-1 "
            f"(threshold {self.threshold:.0%})."
        )
        if context.flagged("large_weights"):
            cause = "weights too large for tanh/sigmoid"
        else:
            cause = "pre-activations too large, so f'(s) is near 0"
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class DeadReluRule(Rule):
    """Layers whose median share of units that output 0 for the whole batch is above `threshold`."""

    def flags(self, context: DiagnosisContext) -> list[str]:
        return [name for name, share in zip(context.layers, context.dead, strict=True) if share > self.threshold]

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = (
            f"Dead ReLUs: {_list_shares(context, layers, context.dead)} of the units never fire "
            f"(threshold {self.threshold:.0%})."
        )
        cause = "pre-activations below 0 for every sample (negative bias or a too large step)"
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class SmallWeightsRule(Rule):
    """Layers whose initial forward and backward weight gains are both below `threshold`."""

    def flags(self, context: DiagnosisContext) -> list[str]:
        # Too small means too small both ways: forward (the signal) and
        # backward (the gradient). A wide layer after a narrow input is not
        # "too small" just because its forward gain is below 1; Glorot trades
        # the two.
        gains = zip(context.layers, context.forward_gain, context.backward_gain, strict=True)
        return [name for name, fwd, bwd in gains if max(fwd, bwd) < self.threshold]

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = f"Initial weight gains below {self.threshold}: {_list_gains(context, layers)}."
        return [self.finding(layers, message, "weights too small for the layer's fan-in")]


@dataclass(frozen=True)
class LargeWeightsRule(Rule):
    """Layers whose initial gains are both above `threshold` (`relu_threshold` for ReLU layers).

    ReLU zeroes half its inputs, so He initialisation's gains sit at sqrt(2)
    and a ReLU layer gets more room before its weights count as large.
    """

    relu_threshold: float

    def flags(self, context: DiagnosisContext) -> list[str]:
        out = []
        for name, fwd, bwd, act in zip(
            context.layers, context.forward_gain, context.backward_gain, context.activations, strict=False
        ):
            limit = self.relu_threshold if (act or "").startswith("relu") else self.threshold
            if min(fwd, bwd) > limit:
                out.append(name)
        return out

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = f"Initial weight gains above {self.threshold:g}: {_list_gains(context, layers)}."
        return [self.finding(layers, message, "weights too large for the layer's fan-in")]


@dataclass(frozen=True)
class StalledRule(Rule):
    """Training accuracy over the last tenth below `threshold` times chance, after `min_steps` recorded steps.

    Early on every net is near chance, hence `min_steps`.
    """

    min_steps: int

    def check(self, context: DiagnosisContext) -> list[Finding]:
        classes, accuracy = context.num_classes, context.final_accuracy
        if not (classes and math.isfinite(accuracy) and context.steps >= self.min_steps):
            return []
        chance = 1.0 / classes
        if not accuracy < self.threshold * chance:
            return []
        first, final = context.first_loss, context.final_loss
        fell = (first - final) / abs(first) if first else 0.0
        message = (
            f"Training stalled: accuracy {accuracy:.1%} against chance {chance:.1%}; "
            f"the loss changed by {-fell:+.0%}."
        )
        if context.output in context.flagged("saturated"):
            return [self.finding([context.output], message, "the output layer is saturated", OUTPUT_SATURATED_REMEDY)]
        cause = "the gradient reaching the weights is too small to move them"
        return [self.finding([context.output], message, cause)]


#: Every rule, its thresholds and its remedy, in the order findings are
#: reported. docs/diagnosis.md prints this table (`rules_table_markdown`).
RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        NonFiniteRule(
            "non_finite",
            threshold=0.0,
            meaning_format="a gradient, an activation, a weight or the loss became NaN or Inf",
            remedy=(
                "lower the learning rate, clip gradients (clipnorm), "
                "and check the inputs and the loss for log(0) or division by 0"
            ),
        ),
        VanishingRule(
            "vanishing",
            threshold=0.05,
            derivative_cause_below=0.1,
            weight_cause_below=0.2,
            meaning_format="a layer's back-propagated gradient (RMS) is below {threshold:g} of the output layer's",
            remedy=(
                "use ReLU in the hidden layers, Glorot (tanh) or He (ReLU) initialisation, a shallower net, "
                "or batch normalisation"
            ),
        ),
        ExplodingRule(
            "exploding",
            threshold=20.0,
            meaning_format="a layer's back-propagated gradient (RMS) is above {threshold:g} times the output layer's",
            remedy=(
                "use smaller initial weights (Glorot/He), clip gradients (clipnorm), lower the learning rate, "
                "or add normalisation"
            ),
        ),
        SaturatedRule(
            "saturated",
            threshold=0.3,
            meaning_format=(
                "over {threshold:.0%} of a tanh/sigmoid layer's outputs (median over the steps) sit in the flat tails "
                "(|a| >= the saturation threshold, 0.99 by default), where f'(s) is near 0"
            ),
            remedy=(
                "use smaller initial weights (Glorot), normalise the inputs, add batch normalisation, "
                "or switch to ReLU"
            ),
        ),
        DeadReluRule(
            "dead_relu",
            threshold=0.5,
            meaning_format=(
                "over {threshold:.0%} of a ReLU layer's units (median over the steps) output 0 for every sample "
                "in the batch, so they pass no gradient"
            ),
            remedy="use He initialisation, a lower learning rate, LeakyReLU/ELU, and check for large negative biases",
        ),
        SmallWeightsRule(
            "small_weights",
            threshold=0.8,
            meaning_format=(
                "a layer's initial weight gains forward, sqrt(fan_in * Var(W)), and backward, sqrt(fan_out * Var(W)), "
                "are both below {threshold:g}: the layer shrinks the signal (activations pile up at 0) and the gradient"
            ),
            remedy="use Glorot (tanh, sigmoid) or He (ReLU) initialisation instead of a fixed small range",
        ),
        LargeWeightsRule(
            "large_weights",
            threshold=2.0,
            relu_threshold=3.0,
            meaning_format=(
                "a layer's initial weight gains forward and backward are both above {threshold:g} "
                "({relu_threshold:g} for ReLU): the layer amplifies the signal (tanh piles up at +-1) and the gradient"
            ),
            remedy="use Glorot (tanh, sigmoid) or He (ReLU) initialisation",
        ),
        StalledRule(
            "stalled",
            threshold=1.5,
            min_steps=50,
            meaning_format=(
                "after at least {min_steps} recorded steps, training accuracy over the last tenth of them "
                "is below {threshold:g} times chance"
            ),
            remedy=(
                "check the output activation and loss pair (softmax with cross-entropy learns where tanh with MSE "
                "can stall), the initialisation and the learning rate"
            ),
        ),
    ]
}


def diagnose(history: GradientHistory, num_classes: int | None = None) -> Diagnosis:
    """Applies every rule in `RULES` to a history.

    To apply another list of rules, use
    `DiagnosisContext(history, num_classes, rules).diagnosis()`.

    Args:
        history: the record to diagnose; it needs at least one step and one layer.
        num_classes: the number of classes, for the stalled rule's chance level. Defaults to `None`: read from
            `history.config["num_classes"]`, else from the output layer's units.

    Returns:
        The per-layer verdicts and the findings of every rule that fired.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["hidden", "output"])
    >>> h.append(range(20), {"backprop": np.tile([0.5, 1.0], (20, 1)), "grad_norm": np.ones((20, 2))})
    >>> d = diagnose(h)
    >>> d.healthy, [v.verdict for v in d.layers]
    (True, ['healthy', 'healthy'])
    """
    return DiagnosisContext(history, num_classes).diagnosis()


def rules_table_markdown(rules: Iterable[Rule] | None = None) -> str:
    """The rule table as Markdown, as docs/diagnosis.md holds it between its rules markers.

    Args:
        rules: the rules to list. Defaults to `None`: every rule in `RULES`.

    Example:

    >>> print(rules_table_markdown([RULES["exploding"]]).splitlines()[2])  # doctest: +ELLIPSIS
    | `exploding` | threshold = 20 | a layer's back-propagated gradient (RMS) is above 20 times ... |
    """
    rows = ["| rule | thresholds | fires when | remedy |", "| --- | --- | --- | --- |"]
    for rule in RULES.values() if rules is None else rules:
        numbers = ", ".join(f"{key} = {value:g}" for key, value in rule.parameters().items())
        cells = [f"`{rule.name}`", numbers, rule.meaning, rule.remedy]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


# -- wording ----------------------------------------------------------------------


def _layers_get(names: list[str]) -> str:
    return f"{names[0]} gets" if len(names) == 1 else f"layers {', '.join(names)} get"


def _list_ratios(context: DiagnosisContext, names: list[str]) -> str:
    return ", ".join(_fmt_ratio(float(context.ratios[context.layers.index(n)])) for n in names)


def _list_shares(context: DiagnosisContext, names: list[str], shares: np.ndarray) -> str:
    return ", ".join(f"{n} {float(shares[context.layers.index(n)]):.0%}" for n in names)


def _list_gains(context: DiagnosisContext, names: list[str]) -> str:
    return ", ".join(f"{n} {float(context.forward_gain[context.layers.index(n)]):.2f}" for n in names)


def _fmt_ratio(r: float) -> str:
    if not math.isfinite(r):
        return "n/a"
    return f"1/{1 / r:.0f}" if 0 < r < 1 else f"{r:.3g}"


def _output_units(history: GradientHistory) -> int | None:
    units = history.info("units")
    return units[-1] if units and units[-1] and units[-1] > 1 else None


if __name__ == "__main__":
    # Regenerates the table in docs/diagnosis.md: paste it between the rules markers.
    print(RULES_TABLE_BEGIN)
    print(rules_table_markdown())
    print(RULES_TABLE_END)
