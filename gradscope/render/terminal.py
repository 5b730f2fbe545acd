"""rich renderers of records: per-layer tables, the end-of-run summary, the
side-by-side comparison, the model table and the derivatives table.

They read records (a `GradientHistory`, a `Diagnosis`, plain dicts and
lists), never a model, and import no TensorFlow, so a saved run is shown
again exactly as it was shown live. The view shown while training is in
`gradscope.render.live`.

Example:

>>> import numpy as np
>>> from gradscope.history import GradientHistory
>>> h = GradientHistory(["h1", "out"], layer_info=[{"units": 4}, {"units": 2}])
>>> h.append([0, 1], {"grad_norm": np.array([[0.01, 1.0], [0.002, 1.0]])})
>>> Console(width=100, color_system=None).print(layer_table(h))
┏━━━━━━━┳━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━┓
┃ layer ┃ units ┃ grad_norm ┃ backprop ┃ ratio to output ┃ saturation ┃ dead ┃
┡━━━━━━━╇━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━┩
│ h1    │     4 │  2.00e-03 │        - │        2.00e-03 │          - │    - │
│ out   │     2 │         1 │        - │               1 │          - │    - │
└───────┴───────┴───────────┴──────────┴─────────────────┴────────────┴──────┘
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gradscope.diagnosis import Diagnosis
from gradscope.history import GradientHistory

_VERDICT_STYLE = {"healthy": "green", "vanishing": "yellow", "exploding": "red", "non-finite": "bold red",
                  "weak branch": "yellow"}
_SUMMARY_COLUMNS = (
    "#", "layer", "shape", "params", "activation", "grad first", "grad last", "ratio to output", "sat.", "dead",
    "f'(s)", "verdict",
)
_VERDICT_RANK = {"non-finite": 4, "exploding": 3, "vanishing": 2, "weak branch": 1}
#: Layers a table shows one by one; a deeper model's table shows that many, the worst first, grouped by block.
MAX_TABLE_LAYERS = 30
_COMPARISON_COLUMNS = ("configuration", "layer", "grad_norm", "backprop", "ratio", "saturated", "dead", "f'(s)",
                       "verdict")


def default_console() -> Console:
    """A console for standard output.

    Off a terminal rich assumes 80 columns, too narrow for the summary
    table, so a console of 140 columns is returned there.

    Example:

    >>> default_console().print("ready")
    ready
    """
    console = Console()
    return console if console.is_terminal else Console(width=140)


def fmt(x: float, digits: int = 3) -> str:
    """A compact number: '1.23e-05', '0.456', and '-' for NaN or None.

    Args:
        x: the number (None and NaN print as '-', infinities as 'inf').
        digits: significant digits.

    Example:

    >>> fmt(4.5e-7), fmt(0.1234), fmt(12345.0), fmt(float("nan")), fmt(0.5, 4)
    ('4.50e-07', '0.123', '1.23e+04', '-', '0.5')
    """
    if x is None or not isinstance(x, (int, float, np.floating)) or not math.isfinite(float(x)):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
    x = float(x)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def pct(x: float) -> str:
    """'42%', or '-' where the value was not measured.

    Args:
        x: a share between 0 and 1, or NaN.

    Example:

    >>> pct(0.42), pct(float("nan"))
    ('42%', '-')
    """
    return f"{x:.0%}" if math.isfinite(x) else "-"


def unit_label(history: GradientHistory, layer: int) -> str:
    """A layer's name in the tables: with the activation layer its
    statistics are measured after, when it has one (``conv → relu``).

    Args:
        history: the record.
        layer: the layer's index.

    Example:

    >>> h = GradientHistory(["conv", "out"], layer_info=[{"activation_layer": "relu"}, {}])
    >>> unit_label(h, 0), unit_label(h, 1)
    ('conv → relu', 'out')
    """
    name = history.layers[layer]
    info = history.layer_info[layer] if layer < len(history.layer_info) else {}
    act = info.get("activation_layer")
    return f"{name} → {act}" if act else name


def layer_optimizers(history: GradientHistory) -> list[str] | None:
    """The optimizer that updates each layer, when several optimizers share the model; else None.

    Args:
        history: the record.

    Example:

    >>> h = GradientHistory(["d", "g"], layer_info=[{"optimizer": "d_optimizer"}, {"optimizer": "g_optimizer"}])
    >>> layer_optimizers(h)
    ['d_optimizer', 'g_optimizer']
    """
    names = [str(info.get("optimizer") or "-") for info in history.layer_info]
    return names if len(set(names) - {"-"}) > 1 else None


def layer_table(history: GradientHistory, row: int = -1, title: str | None = None,
                max_layers: int | None = MAX_TABLE_LAYERS) -> Table:
    """Layer, units, grad_norm, back-propagated gradient and ratio to the output, at one row.

    The ratio is of the back-propagated gradient where the run recorded it,
    else of grad_norm. A model of more than ``max_layers`` layers shows its
    ``max_layers`` worst (see `shown_layers`: the ratio furthest from 1,
    dead and saturated units, non-finite values first) and says how many
    are hidden.

    Args:
        history: the record.
        row: which recorded row (default: the last).
        title: the table's title, if any.
        max_layers: the most layers shown; `None` shows all. Defaults to `30`.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["h1", "out"])
    >>> h.append([0], {"grad_norm": np.array([[0.5, 2.0]]), "dead": np.array([[0.25, 0.0]])})
    >>> Console(width=100, color_system=None).print(layer_table(h, title="step 0"))
    step 0
    ┏━━━━━━━┳━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━┓
    ┃ layer ┃ units ┃ grad_norm ┃ backprop ┃ ratio to output ┃ saturation ┃ dead ┃
    ┡━━━━━━━╇━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━┩
    │ h1    │     - │       0.5 │        - │            0.25 │          - │  25% │
    │ out   │     - │         2 │        - │               1 │          - │   0% │
    └───────┴───────┴───────────┴──────────┴─────────────────┴────────────┴──────┘
    """
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("layer", "units", "grad_norm", "backprop", "ratio to output", "saturation", "dead"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    if not len(history):
        return table
    # Only that row is read: of a streamed record, from memory.
    one = history.since(range(len(history))[row])
    missing = np.full(len(history.layers), np.nan)
    grad = one["grad_norm"][0]
    bp_row = one["backprop"][0] if "backprop" in one else missing
    ref = bp_row if np.isfinite(bp_row[-1]) and bp_row[-1] > 0 else grad
    sat = one["saturation"][0] if "saturation" in one else None
    dead = one["dead"][0] if "dead" in one else None
    units = history.info("units")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ref / ref[-1] if ref[-1] else missing
    badness = [_badness(ratios[li], grad[li], sat[li] if sat is not None else np.nan,
                        dead[li] if dead is not None else np.nan, 0) for li in range(len(history.layers))]
    groups, hidden = shown_layers(history.layers, badness, max_layers)
    for group in groups:
        for k, li in enumerate(group):
            table.add_row(
                unit_label(history, li),
                str(units[li] or "-"),
                fmt(grad[li]),
                fmt(bp_row[li]),
                fmt(ratios[li]),
                pct(sat[li]) if sat is not None else "-",
                pct(dead[li]) if dead is not None else "-",
                end_section=hidden > 0 and k == len(group) - 1,
            )
    if hidden:
        table.caption = hidden_line(hidden, len(history.layers))
    return table


def layer_block(name: str) -> str:
    """The block a layer belongs to, read from its name.

    A path's folder (``encoder/mha/query``: ``encoder/mha``), a Keras
    application's block (``conv2_block1_1_conv``: ``conv2_block1``), else
    the name without its number (``dense_12``: ``dense``).

    Example:

    >>> layer_block("encoder/mha/query"), layer_block("conv2_block1_1_conv"), layer_block("dense_12")
    ('encoder/mha', 'conv2_block1', 'dense')
    """
    if "/" in name:
        return name.rsplit("/", 1)[0]
    block = re.match(r"(.*?block_?\d+)", name)
    return block.group(1) if block else re.sub(r"_\d+$", "", name)


def shown_layers(names: Sequence[str], badness: Sequence[float], limit: int | None) -> tuple[list[list[int]], int]:
    """Which layers a table shows, in which order: ``(groups of layer indices, hidden count)``.

    Up to ``limit`` layers: all, in forward order, one group. More: the
    ``limit`` worst (highest ``badness``), grouped by `layer_block`; the
    block with the worst layer first, and in each block the worst first.

    Args:
        names: the layers, in forward order.
        badness: a number per layer; higher is worse, NaN counts as healthy.
        limit: the most layers shown, or `None` for all.

    Example:

    >>> names = ["block1_a", "block1_b", "block2_a", "block2_b", "out"]
    >>> shown_layers(names, [2.5, 3.0, 2.0, 0.0, 0.5], limit=3)
    ([[1, 0], [2]], 2)
    """
    if limit is None or len(names) <= limit:
        return [list(range(len(names)))], 0
    score = [b if b == b else 0.0 for b in badness]  # NaN: nothing measured, nothing wrong
    worst = sorted(range(len(names)), key=lambda i: -score[i])[: max(int(limit), 0)]
    blocks: dict[str, list[int]] = {}
    for i in worst:  # worst first, so each block's list and the blocks' order follow badness
        blocks.setdefault(layer_block(names[i]), []).append(i)
    return list(blocks.values()), len(names) - len(worst)


def hidden_line(hidden: int, total: int) -> str:
    """The line under a table that shows only some layers.

    Example:

    >>> hidden_line(70, 100)
    '70 of 100 layers hidden: the 30 worst are shown, worst first, grouped by block'
    """
    return (f"{hidden} of {total} layers hidden: the {total - hidden} worst are shown, worst first, "
            "grouped by block")


def _badness(ratio: float, grad: float, saturation: float, dead: float, verdict_rank: int) -> float:
    """How far a layer is from healthy: its verdict, then its ratio's distance from 1 in decades, dead and
    saturated shares."""
    if not math.isfinite(grad):
        return math.inf
    share = sum(x for x in (saturation, dead) if math.isfinite(x))
    decades = abs(math.log10(ratio)) if math.isfinite(ratio) and ratio > 0 else 0.0
    return 100.0 * verdict_rank + decades + share


def summary_table(history: GradientHistory, diagnosis: Diagnosis, max_layers: int | None = MAX_TABLE_LAYERS) -> Table:
    """Layer, shape, params, activation, first/last grad norm, ratio, verdict.

    A model of more than ``max_layers`` layers shows its ``max_layers``
    worst (the verdicts non-finite, exploding and vanishing first, then the
    ratio furthest from 1), grouped by block (`shown_layers`), and says how
    many are hidden.

    Args:
        history: the record (layer facts and the number of recorded steps).
        diagnosis: `diagnose(history)`: the per-layer numbers and verdicts.
        max_layers: the most layers shown; `None` shows all. Defaults to `30`.

    Example:

    >>> import numpy as np
    >>> from gradscope.diagnosis import diagnose
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["h1", "out"], layer_info=[{"params": 40}, {"params": 10}])
    >>> h.append(range(20), {"grad_norm": np.tile([0.5, 1.0], (20, 1))})
    >>> Console(width=200, color_system=None).print(summary_table(h, diagnose(h)))
    gradscope summary
    ...
    │ 1 │ h1    │ -     │     40 │ -          │        0.5 │       0.5 │ ...
    ...
    """
    table = Table(title="gradscope summary", title_justify="left")
    optimizers = layer_optimizers(history)
    columns = _SUMMARY_COLUMNS + (("optimizer",) if optimizers else ())
    for col in columns:
        table.add_column(col, justify="left" if col in ("layer", "shape", "activation", "verdict", "optimizer")
                         else "right")
    verdicts = list(zip(diagnosis.layers, history.layer_info, strict=False))
    badness = [_badness(v.ratio, 0.0, v.saturation, v.dead, _VERDICT_RANK.get(v.verdict, 0)) for v, _ in verdicts]
    groups, hidden = shown_layers([v.name for v, _ in verdicts], badness, max_layers)
    for li, last in ((li, hidden > 0 and k == len(g) - 1) for g in groups for k, li in enumerate(g)):
        v, info = verdicts[li]
        style = _VERDICT_STYLE.get(v.verdict, "")
        table.add_row(
            str(li + 1),
            unit_label(history, li),
            str(info.get("output_shape") or "-"),
            f"{info.get('params', 0):,}",
            str(v.activation or "-"),
            fmt(v.grad_first),
            fmt(v.grad_last),
            fmt(v.ratio),
            pct(v.saturation),
            pct(v.dead),
            fmt(v.dact_mean),
            Text(v.verdict, style=style),
            *([optimizers[li]] if optimizers else []),
            end_section=last,
        )
    total = sum(int(i.get("params") or 0) for i in history.layer_info)
    steps = f"{len(history)} recorded steps"
    if history.spread is not None:
        steps = f"{history.spread.rows} recorded steps (down-sampled to the medians of {len(history)} buckets)"
    table.caption = (
        f"{total:,} trainable parameters; ratio = {diagnosis.measure} relative to the output layer, median over the "
        f"first or the last tenth of {steps}, whichever is further from 1"
    )
    if diagnosis.first_reference is not None:
        table.caption += f" (layer 1 relative to {diagnosis.first_reference}, the end of its trunk or network)"
    if diagnosis.branch_layers:
        table.caption += (f"; {len(diagnosis.branch_layers)} layers sit inside residual branches (judged by "
                          "weak_branch, not vanishing)")
    if hidden:
        table.caption = hidden_line(hidden, len(verdicts)) + "\n" + table.caption
    return table


def print_summary(history: GradientHistory, diagnosis: Diagnosis, console: Console | None = None) -> None:
    """Prints the summary table, the final loss and the diagnosis in words.

    Args:
        history: the record.
        diagnosis: `diagnose(history)`.
        console: where to print (default: `default_console()`).

    Example:

    >>> import numpy as np
    >>> from gradscope.diagnosis import diagnose
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["h1", "out"])
    >>> h.append(range(20), {"grad_norm": np.tile([0.5, 1.0], (20, 1))}, {"loss": np.full(20, 0.25)})
    >>> print_summary(h, diagnose(h), console=Console(width=200, color_system=None))
    gradscope summary
    ...
    final training loss 0.25
    Diagnosis
    ...
    """
    console = console or default_console()
    console.print(summary_table(history, diagnosis))
    loss, acc = diagnosis.final_loss, diagnosis.final_accuracy
    if math.isfinite(loss):
        accuracy = f", accuracy {acc:.1%}" if math.isfinite(acc) else ""
        console.print(f"{_final_words(history)} {fmt(loss, 4)}" + accuracy, highlight=False)
    console.print(Text("Diagnosis", style="bold"))
    for sentence in diagnosis.sentences():
        # markup=False: "[vanishing]" is the rule's name, not a rich style tag.
        console.print("  " + sentence, highlight=False, markup=False)


def _final_words(history: GradientHistory) -> str:
    """'final training loss', unless later steps ran unrecorded (``every > 1``)."""
    last_run = history.config.get("last_step")
    last_recorded = int(history.steps[-1]) if len(history) else None
    if isinstance(last_run, int) and last_recorded is not None and last_run > last_recorded:
        return f"training loss at the last recorded steps (to step {last_recorded}; training ran to step {last_run})"
    return "final training loss"


def model_table(model: Mapping[str, Any]) -> Table:
    """Each layer's output shape, activation and parameter count, and the total.

    Args:
        model: a plain record of the model, ``{"name": str, "total_params": int,
            "layers": [{"name": str, "output_shape": str, "activation": str | None, "params": int}, ...]}``.

    Example:

    >>> record = {"name": "mlp", "total_params": 130, "layers": [
    ...     {"name": "hidden", "output_shape": "(None, 8)", "activation": "tanh", "params": 40},
    ...     {"name": "output", "output_shape": "(None, 10)", "activation": None, "params": 90}]}
    >>> Console(width=80, color_system=None).print(model_table(record))
    model mlp
    ┏━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━┓
    ┃ layer  ┃ output shape ┃ activation ┃ params ┃
    ┡━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━┩
    │ hidden │ (None, 8)    │ tanh       │     40 │
    │ output │ (None, 10)   │ -          │     90 │
    └────────┴──────────────┴────────────┴────────┘
                     total 130 parameters
    """
    table = Table(title=f"model {model['name']}", title_justify="left")
    for col in ("layer", "output shape", "activation", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for layer in model["layers"]:
        table.add_row(layer["name"], layer["output_shape"], layer["activation"] or "-", f"{layer['params']:,}")
    table.caption = f"total {model['total_params']:,} parameters"
    return table


def comparison_table(results: Mapping[str, tuple[GradientHistory, Diagnosis]]) -> Table:
    """Side-by-side table: one section per configuration, a row per layer and a ``[final]`` row.

    Args:
        results: ``{label: (history, diagnosis)}``, in the order to show.

    Example:

    >>> import numpy as np
    >>> from gradscope.diagnosis import diagnose
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["h1", "out"])
    >>> h.append(range(20), {"grad_norm": np.tile([0.5, 1.0], (20, 1))}, {"loss": np.full(20, 0.25)})
    >>> Console(width=200, color_system=None).print(comparison_table({"tanh/glorot": (h, diagnose(h))}))
    side by side (last step; ratio = verdict ratio to the output layer)
    ...
    │ tanh/glorot   │ h1      │       0.5 │        - │   0.5 │ ...
    │               │ out     │         1 │        - │     1 │ ...
    │               │ [final] │ loss 0.25 │        - │       │ ...
    ...
    """
    table = Table(title="side by side (last step; ratio = verdict ratio to the output layer)", title_justify="left")
    for col in _COMPARISON_COLUMNS:
        table.add_column(col, justify="left" if col in ("configuration", "layer", "verdict") else "right")
    for label, (history, diagnosis) in results.items():
        bp = history.get("backprop")
        for li, v in enumerate(diagnosis.layers):
            table.add_row(
                label if li == 0 else "", v.name, fmt(history["grad_norm"][-1, li]),
                fmt(bp[-1, li]) if bp is not None else "-", fmt(v.ratio),
                pct(v.saturation), pct(v.dead), fmt(v.dact_mean), v.verdict,
            )
        loss, acc = diagnosis.final_loss, diagnosis.final_accuracy
        table.add_row("", escape("[final]"), f"loss {fmt(loss, 4)}", f"acc {acc:.1%}" if math.isfinite(acc) else "-",
                      "", "", "", "", ", ".join(f.rule for f in diagnosis.findings) or "healthy", end_section=True)
    return table


def print_comparison(results: Mapping[str, tuple[GradientHistory, Diagnosis]], console: Console) -> None:
    """Prints `comparison_table`, then one sentence per configuration.

    Args:
        results: ``{label: (history, diagnosis)}``, in the order to show.
        console: where to print.

    Example:

    >>> import numpy as np
    >>> from gradscope.diagnosis import diagnose
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["h1", "out"])
    >>> h.append(range(20), {"grad_norm": np.tile([0.5, 1.0], (20, 1))})
    >>> print_comparison({"relu/he": (h, diagnose(h))}, Console(width=200, color_system=None))
    side by side (last step; ratio = verdict ratio to the output layer)
    ...
    relu/he: ...
    """
    console.print(comparison_table(results))
    for label, (_, diagnosis) in results.items():
        console.print(diagnosis.shrink_sentence(label) + ".", highlight=False)


def derivatives_table(rows: Sequence[Mapping[str, float]], float32: Sequence[tuple[float, float, float]] | None = None
                      ) -> Table:
    """The lecture's table of f'(s) for tanh, sigmoid and ReLU, with TensorFlow's float32 tanh beside it.

    Args:
        rows: ``{"s", "tanh", "sigmoid", "relu"}`` per point, as `gradscope.theory.derivative_table` gives.
        float32: ``(s, tanh(s), tanh'(s))`` per row, in float32 as `gradscope.theory.float32_autodiff`
            gives; None leaves those two columns out.

    Example:

    >>> rows = [{"s": 0.0, "tanh": 1.0, "sigmoid": 0.25, "relu": 0.0},
    ...         {"s": 8.0, "tanh": 4.5e-07, "sigmoid": 3.35e-04, "relu": 1.0}]
    >>> Console(width=100, color_system=None).print(derivatives_table(rows, [(0.0, 0.0, 1.0), (8.0, 1.0, 0.0)]))
    activation derivatives f'(s), float64
    ┏━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
    ┃ s ┃ tanh'(s) ┃ sigmoid'(s) ┃ ReLU'(s) ┃ tanh(s) float32 ┃ tanh'(s) TF float32 autodiff ┃
    ┡━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
    │ 0 │ 1.00e+00 │    2.50e-01 │        0 │               0 │                     1.00e+00 │
    │ 8 │ 4.50e-07 │    3.35e-04 │        1 │               1 │                            0 │
    └───┴──────────┴─────────────┴──────────┴─────────────────┴──────────────────────────────┘
    """
    table = Table(title="activation derivatives f'(s), float64", title_justify="left")
    table.add_column("s", justify="right")
    for name in ("tanh'(s)", "sigmoid'(s)", "ReLU'(s)"):
        table.add_column(name, justify="right")
    if float32 is not None:
        table.add_column("tanh(s) float32", justify="right")
        table.add_column("tanh'(s) TF float32 autodiff", justify="right")
    for k, row in enumerate(rows):
        cells = [f"{row['s']:g}", f"{row['tanh']:.2e}", f"{row['sigmoid']:.2e}", f"{row['relu']:g}"]
        if float32:
            _, y, g = float32[k]
            # An exact 0 is the point of the column (float32 tanh rounded to 1): print it as 0, not 0.00e+00.
            cells += [f"{y:.9g}", f"{g:.2e}" if g else "0"]
        table.add_row(*cells)
    return table


def print_derivatives(rows: Sequence[Mapping[str, float]], console: Console, chain_factor: float,
                      float32: Sequence[tuple[float, float, float]] | None = None) -> None:
    """Prints `derivatives_table` and what it means for a deep tanh net.

    Args:
        rows: ``{"s", "tanh", "sigmoid", "relu"}`` per point, as `gradscope.theory.derivative_table` gives.
        console: where to print.
        chain_factor: tanh'(2) ** 5, the share of the gradient five tanh layers at s = 2 pass.
        float32: ``(s, tanh(s), tanh'(s))`` per row in float32, or None to leave those columns out.

    Example:

    >>> rows = [{"s": 8.0, "tanh": 4.5e-07, "sigmoid": 3.35e-04, "relu": 1.0}]
    >>> print_derivatives(rows, Console(width=100, color_system=None), 1.3e-5, [(8.0, 1.0, 0.0)])
    activation derivatives f'(s), float64
    ...
    The chain rule multiplies one such factor per layer: five tanh layers at s = 2 pass 1.3e-05 of the gradient; ...
    In float32, TensorFlow's tanh rounds to exactly 1.0 where s is large enough, so autodiff gives a derivative ...
    """
    console.print(derivatives_table(rows, float32))
    console.print(
        "The chain rule multiplies one such factor per layer: five tanh layers at s = 2 pass "
        f"{chain_factor:.1e} of the gradient; ReLU passes 1 wherever it is active.",
        highlight=False,
    )
    if float32 and any(y == 1.0 for _, y, _ in float32):
        console.print(
            "In float32, TensorFlow's tanh rounds to exactly 1.0 where s is large enough, so autodiff "
            "gives a derivative of exactly 0 there: saturation in its purest form.",
            highlight=False,
        )
