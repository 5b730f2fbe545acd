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

The package, one job a module:

    findings.py   what a diagnosis says: NonFinite, LayerVerdict, Finding, Diagnosis
    measures.py   ratios to the output layer, weight gains, the first/last tenth
    nonfinite.py  first_nonfinite: where a run first went NaN or Inf
    context.py    DiagnosisContext: the numbers every rule reads, computed once
    curves.py     FittingCurves: training and validation loss and accuracy per epoch
    rules.py      Rule, the rules, the RULES table, rules_table_markdown
    __main__.py   python -m gradscope.diagnosis prints the table for docs/diagnosis.md

To add a rule, subclass `Rule`, give it a `check`, and add one instance to the
table in `RULES` in rules.py (its position there is the position of its
findings), or pass it to `diagnose(..., rules=...)` without touching the table.

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

from collections.abc import Iterable

from gradscope.diagnosis.context import DiagnosisContext
from gradscope.diagnosis.findings import Diagnosis, Finding, LayerVerdict, NonFinite
from gradscope.diagnosis.measures import depth_ratios, trunk_reference, weight_gains, weight_growth
from gradscope.diagnosis.nonfinite import first_nonfinite
from gradscope.diagnosis.rules import (
    OUTPUT_SATURATED_REMEDY,
    RULES,
    RULES_TABLE_BEGIN,
    RULES_TABLE_END,
    DeadReluRule,
    ExplodingRule,
    LargeWeightsRule,
    NonFiniteRule,
    Rule,
    SaturatedRule,
    SmallWeightsRule,
    StalledRule,
    VanishingRule,
    WeakBranchRule,
    rules_table_markdown,
)
from gradscope.history import GradientHistory

__all__ = [
    "OUTPUT_SATURATED_REMEDY",
    "RULES",
    "RULES_TABLE_BEGIN",
    "RULES_TABLE_END",
    "DeadReluRule",
    "Diagnosis",
    "DiagnosisContext",
    "ExplodingRule",
    "Finding",
    "LargeWeightsRule",
    "LayerVerdict",
    "NonFinite",
    "NonFiniteRule",
    "Rule",
    "SaturatedRule",
    "SmallWeightsRule",
    "StalledRule",
    "VanishingRule",
    "WeakBranchRule",
    "depth_ratios",
    "diagnose",
    "first_nonfinite",
    "rules_table_markdown",
    "trunk_reference",
    "weight_gains",
    "weight_growth",
]


def diagnose(
    history: GradientHistory, num_classes: int | None = None, *, rules: Iterable[Rule] | None = None
) -> Diagnosis:
    """Applies every rule in `RULES` (or the rules given) to a history.

    Args:
        history: the record to diagnose; it needs at least one step and one layer.
        num_classes: the number of classes, for the stalled rule's chance level. Defaults to `None`: read from
            `history.config["num_classes"]`, else from the output layer's units.
        rules: the rules to apply, in the order their findings are reported, e.g. `[*RULES.values(), my_rule]`.
            Defaults to `None`: every rule in `RULES`.

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
    >>> from dataclasses import replace
    >>> stricter = replace(RULES["vanishing"], threshold=0.6)  # 0.5 of the output layer's now counts as vanishing
    >>> [(f.rule, f.layers) for f in diagnose(h, rules=[stricter]).findings]
    [('vanishing', ['hidden'])]
    """
    return DiagnosisContext(history, num_classes, rules).diagnosis()
