"""What a diagnosis says: the result dataclasses and their sentences.

`diagnose` returns a `Diagnosis`: one `LayerVerdict` per layer, the `Finding`
of every rule that fired and, when the run went NaN or Inf, a `NonFinite`
naming where. Plain data, and the sentences a report prints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NonFinite:
    """Where a run first went NaN or Inf."""

    step: int
    layer: str | None
    variable: str | None
    where: str  # "weights", "activations", "loss" or "gradients"
    replica: int | None = None  # under tf.distribute, the one replica that went bad

    def sentence(self) -> str:
        place = {
            "weights": f"the weights of layer {self.layer} ({self.variable})",
            "activations": f"the output of layer {self.layer}",
            "loss": "the loss",
            "gradients": f"the gradient of layer {self.layer} ({self.variable})",
        }[self.where]
        on = f" (on replica {self.replica} only)" if self.replica is not None else ""
        return f"non-finite values (NaN/Inf) first appeared at step {self.step} in {place}{on}"


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
    #: Layers inside residual (or parallel) branches, which the main path's verdict does not judge.
    branch_layers: list[str] = field(default_factory=list)
    #: The layer the first layer is compared with when it is not the output layer (the end of a convolutional trunk).
    first_reference: str | None = None

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
        of = "the output layer's" if self.first_reference is None else f"{self.first_reference}'s"
        return f"{prefix}layer 1 gets {share} of {of} {what}"

    def sentences(self) -> list[str]:
        out = [self.shrink_sentence() + "."]
        if self.first_reference is not None:
            out.append(f"Layer 1 is compared with {self.first_reference}, not with the output layer: a layer with "
                       "spatial or sequence outputs with the last such layer (pooling divides the gradient among "
                       "positions), and under several optimizers each network with its own last layer.")
        if math.isfinite(self.early_ratio) and math.isfinite(self.late_ratio):
            out.append(
                f"The ratio is {fmt_ratio(self.early_ratio)} over the first tenth of the steps "
                f"and {fmt_ratio(self.late_ratio)} over the last."
            )
        if self.branch_layers:
            n, total = len(self.branch_layers), len(self.layers)
            main = [v.name for v in self.layers if v.name not in self.branch_layers]
            out.append(
                f"{n} of the {total} layers sit inside residual or parallel branches that skip connections go "
                "around, so the gradient reaches the layers before them whatever these branches do: vanishing "
                f"and exploding toward the input are judged along the main path ({_few(main)}), the layers inside "
                "branches by the weak_branch rule."
            )
        elif math.isfinite(self.derivative_product) and self.measure == "backprop":
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

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython shows a returned Diagnosis (``monitor.summary()`` as a cell's last line) with this:
        # one line under the printed table, not the dataclass' every field.
        rules = ", ".join(f.rule for f in self.findings) or "none"
        printer.text(f"<Diagnosis: {self.shrink_sentence()}; rules fired: {rules}>")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sentences"] = self.sentences()
        return d


def _few(names: list[str], shown: int = 4) -> str:
    """Names in a sentence: the first few and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def fmt_ratio(r: float) -> str:
    """A ratio to the output layer in words: a share below 1 as 1/n, else the number; "n/a" when not finite.

    Args:
        r: the ratio.

    Example:

    >>> fmt_ratio(0.025), fmt_ratio(30.0), fmt_ratio(float("nan"))
    ('1/40', '30', 'n/a')
    """
    if not math.isfinite(r):
        return "n/a"
    return f"1/{1 / r:.0f}" if 0 < r < 1 else f"{r:.3g}"
