"""The rules: each an object with its name, thresholds, meaning, check and remedy; `RULES` holds them in report order.

`rule.check(context)` looks at the numbers of a `DiagnosisContext` and,
when the rule fires, gives a `Finding`: which layers, the measured value
against the threshold, the likely cause and the remedy.

To add a rule, subclass `Rule`, give it a `check`, and add one instance to the
table in `RULES` (its position there is the position of its findings); to
try one without the table, `diagnose(history, rules=[*RULES.values(), rule])`.
docs/diagnosis.md holds the table in words (`rules_table_markdown`);
`python -m gradscope.diagnosis` prints it.

Example:

>>> RULES["vanishing"].threshold, RULES["vanishing"].meaning[:80]
(0.05, "a layer's back-propagated gradient (RMS) is below 0.05 of the output layer's (a ")
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from gradscope.diagnosis.findings import Finding, fmt_ratio

if TYPE_CHECKING:  # for annotations only: the context module imports this one
    from gradscope.diagnosis.context import DiagnosisContext

#: The remedy when the output layer itself is saturated (the vanishing and
#: stalled findings say it instead of their general remedy).
OUTPUT_SATURATED_REMEDY = (
    "the output layer is saturated, so every gradient starts near 0: give it softmax with cross-entropy "
    "(--output-activation softmax --loss crossentropy), or smaller initial weights there, or a lower learning rate"
)

#: The cause the vanishing, exploding and saturated findings name when the
#: diverged rule fired: their symptoms are its consequences.
DIVERGED_CAUSE = "training diverged: the weights grew during training (see the diverged finding)"

# The markers around the generated rule table in docs/diagnosis.md.
RULES_TABLE_BEGIN = "<!-- rules:begin -->"
RULES_TABLE_END = "<!-- rules:end -->"


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
class DivergedRule(Rule):
    """Training diverged: the loss over the last tenth of the steps is `threshold` times or more its value over
    the first tenth (or became NaN/Inf), or a layer's kernel norm grew `threshold`-fold or more from the start.

    A diverged run's other symptoms (saturated units, gradients that
    explode or vanish, large weights) are its consequences, so the other
    rules name divergence as their cause when this one fires.
    """

    def flags(self, context: DiagnosisContext) -> list[str]:
        grown = [n for n, g in zip(context.layers, context.weight_growth, strict=True) if g >= self.threshold]
        return grown or ([context.output] if self._loss_growth(context) >= self.threshold else [])

    def _loss_growth(self, context: DiagnosisContext) -> float:
        """Late loss over early loss; +inf when a finite loss became NaN/Inf; NaN when unknown."""
        first, final = context.first_loss, context.final_loss
        if not (math.isfinite(first) and first > 0):
            return float("nan")
        if math.isfinite(final):
            return final / first
        # NaN also means "not recorded": only a traced non-finite value counts.
        return float("inf") if (math.isinf(final) or context.nonfinite is not None) else float("nan")

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        parts = []
        growth = self._loss_growth(context)
        if growth >= self.threshold:
            parts.append(f"the loss grew from {context.first_loss:.3g} to {context.final_loss:.3g}"
                         if math.isfinite(growth) else f"the loss went from {context.first_loss:.3g} to NaN/Inf")
        grown = [(n, g) for n, g in zip(context.layers, context.weight_growth, strict=True) if g >= self.threshold]
        if grown:
            factors = ", ".join(f"{n} x{g:.3g}" if math.isfinite(g) else f"{n} to NaN/Inf" for n, g in grown)
            parts.append(f"kernel norms grew from the start: {factors}")
        message = f"Training diverged: {'; '.join(parts)} (threshold x{self.threshold:g})."
        return [self.finding(layers, message, "steps too large: the updates push the weights away faster "
                                              "than the loss can pull them back")]


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
        judged = context.depth_judged[layer]
        return self.name if judged and context.ratios[layer] < self.threshold else None

    def flags(self, context: DiagnosisContext) -> list[str]:
        return context.judged(self.name)

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        what = "back-propagated gradient" if context.measure == "backprop" else "weight-gradient norm"
        message = (
            f"The {what} shrinks toward the input: {_layers_get(layers)} "
            f"{_list_ratios(context, layers)} of {_reference(context, layers)} (threshold {self.threshold})."
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
        if context.flagged("diverged"):
            return DIVERGED_CAUSE
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
        judged = context.depth_judged[layer]
        return self.name if judged and context.ratios[layer] > self.threshold else None

    def flags(self, context: DiagnosisContext) -> list[str]:
        return context.judged(self.name)

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        if context.flagged("diverged"):
            cause = DIVERGED_CAUSE
        elif context.flagged("large_weights"):
            cause = "initial weights too large"
        else:
            cause = "depth: each layer multiplies the gradient by more than 1"
        message = (
            f"The back-propagated gradient grows toward the input: {_layers_get(layers)} "
            f"{_list_ratios(context, layers)} times {_reference(context, layers)} (threshold {self.threshold:g})."
        )
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class WeakBranchRule(Rule):
    """Layers inside a residual (or parallel) branch whose ratio to the output layer is below `threshold`.

    A skip connection carries the gradient around such a layer, so the
    layers before it still get theirs: this is not vanishing toward the
    input, but the branch itself learns slowly.
    """

    def verdict(self, context: DiagnosisContext, layer: int) -> str | None:
        inside = not context.main_path[layer]
        return "weak branch" if inside and context.ratios[layer] < self.threshold else None

    def flags(self, context: DiagnosisContext) -> list[str]:
        return context.judged("weak branch")

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = (
            f"Inside residual branches, {_layers_get(layers)} {_list_ratios(context, layers)} of "
            f"{_reference(context, layers)} back-propagated gradient (threshold {self.threshold:g}); skip "
            "connections carry the gradient around them, so the layers before them are not starved."
        )
        saturated = [n for n in context.flagged("saturated") if n in layers]
        dead = [n for n in context.flagged("dead_relu") if n in layers]
        if saturated or dead:
            cause = f"saturated or dead units inside the branch ({', '.join(saturated + dead)})"
        else:
            cause = "the branch scales the gradient down (a normalisation scale near 0, or small weights)"
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class SaturatedRule(Rule):
    """Layers whose median share of outputs in the flat tails is above `threshold`."""

    def flags(self, context: DiagnosisContext) -> list[str]:
        return _above(context, context.saturation, self.threshold)

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        message = (
            f"Saturated units: {_list_shares(context, layers, context.saturation)} of the outputs sit at +-1 "
            f"(threshold {self.threshold:.0%})."
        )
        if context.flagged("diverged"):
            cause = DIVERGED_CAUSE
        elif context.flagged("large_weights"):
            cause = "weights too large for tanh/sigmoid"
        else:
            cause = "pre-activations too large, so f'(s) is near 0"
        return [self.finding(layers, message, cause)]


@dataclass(frozen=True)
class DeadReluRule(Rule):
    """Layers whose median share of units that output 0 for the whole batch is above `threshold`."""

    def flags(self, context: DiagnosisContext) -> list[str]:
        return _above(context, context.dead, self.threshold)

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

    def limit(self, activation: str | None) -> float:
        """The threshold a layer with this activation is held to."""
        return self.relu_threshold if (activation or "").startswith("relu") else self.threshold

    def flags(self, context: DiagnosisContext) -> list[str]:
        layers = zip(context.layers, context.forward_gain, context.backward_gain, context.activations, strict=False)
        return [name for name, fwd, bwd, act in layers if min(fwd, bwd) > self.limit(act)]

    def check(self, context: DiagnosisContext) -> list[Finding]:
        layers = self.flags(context)
        if not layers:
            return []
        limits = {self.limit(context.activations[context.layers.index(n)]) for n in layers}
        above = (f"{self.threshold:g} ({self.relu_threshold:g} for ReLU)" if len(limits) > 1
                 else f"{limits.pop():g}")
        message = f"Initial weight gains above {above}: {_list_gains(context, layers)}."
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


@dataclass(frozen=True)
class OverfittingRule(Rule):
    """Validation loss rose after its lowest point while training loss fell, or training accuracy stays far above
    validation accuracy; reads `context.curves` (epoch ends with a validation evaluation).

    The rise counts when the lowest validation loss is at least `patience` epochs back, the median of the last
    `patience` validation losses is `threshold` (a share) or more above it, and the training loss is now below its
    value at that epoch. The gap counts when training accuracy minus validation accuracy, median over the last
    `patience` epochs, is above `gap`. Medians over several epochs keep one noisy evaluation from firing it.
    """

    patience: int
    gap: float

    def check(self, context: DiagnosisContext) -> list[Finding]:
        curves = context.curves
        if len(curves) < self.patience + 1:
            return []
        best = int(np.argmin(curves.val_loss))
        last = slice(-self.patience, None)
        lowest, late = float(curves.val_loss[best]), float(np.median(curves.val_loss[last]))
        rose = (len(curves) - 1 - best >= self.patience and late >= (1 + self.threshold) * lowest
                and curves.loss[-1] < curves.loss[best])
        gap = float(np.median(curves.accuracy[last] - curves.val_accuracy[last]))  # NaN without accuracies
        if not (rose or gap > self.gap):
            return []
        parts = []
        if rose:
            parts.append(f"validation loss rose from {lowest:.3g} at epoch {curves.epochs[best]} to {late:.3g} "
                         f"(+{late / lowest - 1:.0%}, threshold +{self.threshold:.0%}) while training loss fell "
                         f"from {curves.loss[best]:.3g} to {curves.loss[-1]:.3g}")
        if gap > self.gap:
            parts.append(f"training accuracy is {100 * gap:.1f} points above validation accuracy "
                         f"(threshold {100 * self.gap:g})")
        message = (f"Overfitting: {'; '.join(parts)}. Validation loss was lowest at epoch {curves.epochs[best]} "
                   f"of {curves.epochs[-1]}: early stopping would have stopped there.")
        samples = context.history.config.get("train_samples")
        data = f" ({samples:,} training samples)" if isinstance(samples, int) else ""
        cause = f"the model has more capacity than the data{data} can pin down, so it also learns their noise"
        return [self.finding([], message, cause)]


#: The rules whose findings explain low accuracy before the model's size does: underfitting is silent when one fires.
GRADIENT_RULES = ("non_finite", "diverged", "vanishing", "exploding", "saturated", "dead_relu", "small_weights",
                  "large_weights", "stalled")


@dataclass(frozen=True)
class UnderfittingRule(Rule):
    """Training and validation accuracy both below `threshold` (medians over the last `window` epoch ends, after at
    least `window` of them), and no rule of `GRADIENT_RULES` fired to explain it."""

    window: int

    def check(self, context: DiagnosisContext) -> list[Finding]:
        curves = context.curves
        if len(curves) < self.window:
            return []
        train = float(np.median(curves.accuracy[-self.window:]))
        val = float(np.median(curves.val_accuracy[-self.window:]))
        if not (train < self.threshold and val < self.threshold):  # NaN (no accuracy): not judged
            return []
        if any(context.flagged(name) for name in GRADIENT_RULES):
            return []
        message = (f"Underfitting: training accuracy {train:.1%} and validation accuracy {val:.1%} are both below "
                   f"{self.threshold:.0%} after {curves.epochs[-1]} epochs, and no gradient finding explains it.")
        return [self.finding([], message, "a model too small for the task, or training too short")]


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
        DivergedRule(
            "diverged",
            threshold=100.0,
            meaning_format=(
                "the loss over the last tenth of the steps is {threshold:g} times its value over the first tenth "
                "or more (or became NaN/Inf), or a layer's kernel norm grew {threshold:g}-fold or more from the start"
            ),
            remedy=(
                "lower the learning rate (10x at a time), clip gradients (clipnorm=1.0), "
                "or warm the learning rate up over the first steps"
            ),
        ),
        VanishingRule(
            "vanishing",
            threshold=0.05,
            derivative_cause_below=0.1,
            weight_cause_below=0.2,
            meaning_format=(
                "a layer's back-propagated gradient (RMS) is below {threshold:g} of the output layer's (a layer with "
                "spatial or sequence outputs: of the last such layer's, since pooling divides the gradient)"
            ),
            remedy=(
                "use ReLU in the hidden layers, Glorot (tanh) or He (ReLU) initialisation, a shallower net, "
                "or batch normalisation"
            ),
        ),
        ExplodingRule(
            "exploding",
            threshold=20.0,
            meaning_format=(
                "a layer's back-propagated gradient (RMS) is above {threshold:g} times the output layer's (a layer "
                "with spatial or sequence outputs: the last such layer's)"
            ),
            remedy=(
                "use smaller initial weights (Glorot/He), clip gradients (clipnorm), lower the learning rate, "
                "or add normalisation"
            ),
        ),
        WeakBranchRule(
            "weak_branch",
            threshold=0.05,
            meaning_format=(
                "a layer inside a residual or parallel branch (one a skip connection goes around) gets a "
                "back-propagated gradient below {threshold:g} of the output layer's; the vanishing and exploding "
                "rules judge only the main path"
            ),
            remedy=(
                "harmless early on when a branch's last normalisation starts at zero scale; otherwise check the "
                "branch's initialisation, its activations and its normalisation"
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
        OverfittingRule(
            "overfitting",
            threshold=0.1,
            patience=3,
            gap=0.1,
            meaning_format=(
                "at epoch ends with a validation evaluation: the median validation loss of the last {patience} is "
                "{threshold:.0%} or more above its lowest value, reached {patience} or more epochs earlier, while "
                "the training loss fell since; or training accuracy minus validation accuracy (median of the last "
                "{patience}) is above {gap:.0%}. The finding names the epoch of lowest validation loss"
            ),
            remedy=(
                "more data; data augmentation (--augment); weight decay (--weight-decay); dropout (--dropout); "
                "an ensemble (--ensemble); a smaller model (--layers); early stopping at the epoch of lowest "
                "validation loss (keras.callbacks.EarlyStopping(restore_best_weights=True))"
            ),
        ),
        UnderfittingRule(
            "underfitting",
            threshold=0.6,
            window=3,
            meaning_format=(
                "training and validation accuracy (medians over the last {window} epoch ends) are both below "
                "{threshold:.0%}, and no gradient rule (vanishing, exploding, saturated, dead_relu, stalled, ...) "
                "fired to explain it"
            ),
            remedy="a larger model (wider or more --layers), or more epochs",
        ),
    ]
}


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


def _reference(context: DiagnosisContext, names: list[str]) -> str:
    """Whose gradient the layers are compared with: "the output layer's", or the trunk's end."""
    refs = {context.layers[context.reference[context.layers.index(n)]] for n in names}
    if refs == {context.output}:
        return "the output layer's"
    return f"{refs.pop()}'s" if len(refs) == 1 else f"their reference layer's ({', '.join(sorted(refs))})"


def _list_ratios(context: DiagnosisContext, names: list[str]) -> str:
    return ", ".join(fmt_ratio(float(context.ratios[context.layers.index(n)])) for n in names)


def _above(context: DiagnosisContext, shares: np.ndarray, threshold: float) -> list[str]:
    """The layers whose share (saturated outputs, dead units) is above ``threshold``."""
    return [name for name, share in zip(context.layers, shares, strict=True) if share > threshold]


def _list_shares(context: DiagnosisContext, names: list[str], shares: np.ndarray) -> str:
    return ", ".join(f"{n} {float(shares[context.layers.index(n)]):.0%}" for n in names)


def _list_gains(context: DiagnosisContext, names: list[str]) -> str:
    return ", ".join(f"{n} {float(context.forward_gain[context.layers.index(n)]):.2f}" for n in names)
