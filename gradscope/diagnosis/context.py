"""The numbers every rule reads: `DiagnosisContext` works them out once per history."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gradscope.diagnosis.curves import FittingCurves
from gradscope.diagnosis.findings import Diagnosis, LayerVerdict
from gradscope.diagnosis.measures import depth_ratios, median, tenth, trunk_reference, weight_gains, weight_growth
from gradscope.diagnosis.nonfinite import first_nonfinite
from gradscope.diagnosis.rules import RULES, Rule
from gradscope.history import GradientHistory


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
    `depth_ratios`; `reference` is the layer each is compared with, see
    `trunk_reference`), `main_path` and `depth_judged` (the layers the
    vanishing and exploding rules judge), `branch_layers`, `saturation`, `dead`, `dact_mean` (medians over all
    steps), `forward_gain`, `backward_gain` (see `weight_gains`), `weight_growth`,
    `activations`, `nonfinite` and `nonfinite_layers`, the chain-rule
    products `derivative_product`, `derivative_rms_product`,
    `weight_product`, `first_loss`, `final_loss`, `final_accuracy` (medians
    over the first or last tenth), `num_classes`, `steps`, the row windows
    `first_tenth` and `last_tenth`, the per-layer `verdicts`, and the other
    rules' layers through `flagged(name)`, and `curves` (`FittingCurves`: training and validation loss and
    accuracy at each epoch end).

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
        k = tenth(self.steps)
        self.first_tenth, self.last_tenth = slice(None, k), slice(-k, None)

        # Ratios to the output layer: the back-propagated gradient where the
        # run recorded it, else the weight-gradient norms.
        bp = history.get("backprop")
        self.measure = "backprop" if bp is not None and np.isfinite(bp).any() else "grad_norm"
        series = history[self.measure]
        # Ratios come from the steps where every layer's value is finite; the
        # non-finite steps are the non_finite rule's business.
        finite_rows = np.all(np.isfinite(series), axis=1)
        self.reference = trunk_reference(history)
        self.ratios, self.early, self.late = depth_ratios(series[finite_rows] if finite_rows.any() else series,
                                                          self.reference)
        self.grad_norm = history["grad_norm"]
        # Where a skip connection goes around a layer (a residual branch),
        # its gradient does not decide whether the input gets one: depth is
        # judged along the main path. A normalisation layer's few parameters
        # make its weight-gradient norm small whatever flows through it, so
        # without the back-propagated gradient it is not judged for depth.
        self.main_path = np.array([info.get("main_path", True) is not False for info in self._infos()])
        normalization = np.array([bool(info.get("normalization")) for info in self._infos()])
        self.depth_judged = self.main_path & ~(normalization if self.measure == "grad_norm" else False)
        self.branch_layers = [n for n, main in zip(self.layers, self.main_path, strict=True) if not main]

        # Per layer, median over all steps.
        self.saturation = self._series_median("saturation", slice(None))
        self.dead = self._series_median("dead", slice(None))
        self.dact_mean = self._series_median("dact_mean", slice(None))
        self.forward_gain, self.backward_gain = weight_gains(history)
        self.weight_growth = weight_growth(history)
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
        # The products run along the main path (every layer, in a plain net).
        above = np.flatnonzero(self.main_path)[1:]
        deep = len(above) > 0
        dact_early = self._series_median("dact_mean", self.first_tenth)
        drms_early = self._series_median("dact_rms", self.first_tenth)
        self.derivative_product = float(np.prod(dact_early[above])) if deep else float("nan")
        self.derivative_rms_product = float(np.prod(drms_early[above])) if deep else float("nan")
        self.weight_product = float(np.prod(self.backward_gain[above])) if deep else float("nan")

        loss = history.scalars.get("loss", np.full(self.steps, np.nan))
        acc = history.scalars.get("accuracy", np.full(self.steps, np.nan))
        self.first_loss = float(median(loss[self.first_tenth, None])[0])
        self.final_loss = float(median(loss[self.last_tenth, None])[0])
        self.final_accuracy = float(median(acc[self.last_tenth, None])[0])
        self.num_classes: int | None = num_classes or history.config.get("num_classes") or _output_units(history)
        self.curves = FittingCurves.of(history.evaluations)  # training and validation, per epoch

        self._flagged: dict[str, list[str]] = {}
        self.verdicts = self._layer_verdicts()

    def _infos(self) -> list[dict]:
        infos = list(self.history.layer_info)
        return infos + [{}] * (len(self.layers) - len(infos))

    def _series_median(self, name: str, rows: slice) -> np.ndarray:
        if name not in self.history:
            return np.full(len(self.layers), np.nan)
        return median(self.history[name][rows])

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
            self.nonfinite, self.final_loss, self.final_accuracy, self.branch_layers,
            self.layers[self.reference[0]] if self.reference[0] != len(self.layers) - 1 else None,
        )


def _output_units(history: GradientHistory) -> int | None:
    units = history.info("units")
    return units[-1] if units and units[-1] and units[-1] > 1 else None
