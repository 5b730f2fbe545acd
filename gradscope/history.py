"""The plain record of a run: `GradientHistory`, and the run folder it saves to.

Nothing here imports TensorFlow, so a saved run can be loaded, diagnosed and
rendered on a machine without it.

Shape of the record:

* ``history.layers``: layer names in forward order (input side first).
* ``history.steps``: 1-D int64 array, the global step of each row.
* ``history[name]``: float64 array ``(len(steps), len(layers))`` for each
  per-layer series (``history.names``), e.g. ``"grad_norm"``.
* ``history.scalars[name]``: float64 array ``(len(steps),)``, e.g. ``"loss"``.
* ``history.variables``: ``"layer/variable"`` names, and
  ``history.variable_series[name]`` arrays ``(len(steps), len(variables))``.
* ``history.layer_info``: one dict per layer (units, activation, params, ...).
* ``history.config``: free-form JSON-able facts about the run.
* ``history.histograms``: activation histograms at moments of training,
  ``{"start": {...}, "end": {...}}``, each with ``step`` (int), ``ranges``
  ``(layers, 2)`` (the low and high edge of each layer's bins) and
  ``counts`` ``(layers, bins)``.

Standard per-layer series (a run records those its model allows):

==================  =========================================================
``grad_norm``       L2 norm of d(loss)/d(weights) over the layer's trainable
                    variables (unscaled under mixed precision)
``weight_norm``     L2 norm of the layer's trainable variables after the
                    step's update (the weights the next step uses)
``update_ratio``    ||the optimizer's update|| / ||the weights after it||
``backprop``        RMS over batch and units of d(loss)/d(layer output)
``act_mean``        mean of the layer's output
``act_std``         standard deviation of the layer's output
``saturation``      share of outputs in the flat tails (tanh: |a| >= 0.99;
                    sigmoid: a <= 0.01 or a >= 0.99); NaN for other activations
``dead``            share of units that output 0 for every sample (ReLU-like)
``dact_mean``       mean activation derivative f'(s) over units and batch
``dact_rms``        root mean square of f'(s): the factor the gradient's RMS
                    is multiplied by when it passes the activation
``nonfinite``       1 where any of the layer's outputs is NaN or Inf, else 0
==================  =========================================================

Variable series: ``grad_norm``, ``weight_norm``, ``update_norm``. In them,
NaN means "not measured at that step" (``weights_every``) and +inf means
"the tensor held NaN or Inf".
Scalars: ``loss``, ``accuracy``, ``epoch``, ``loss_scale``.

Example:

>>> import numpy as np
>>> h = GradientHistory(["dense", "dense_1"])
>>> h.append([0, 1], {"grad_norm": np.ones((2, 2))}, {"loss": np.array([1.0, 0.5])})
>>> h["grad_norm"].shape
(2, 2)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# 2: in the variable series, NaN means "not measured" and +inf "non-finite";
#    weight norms are read after the step's update.
FORMAT_VERSION = 2
RUN_FILE = "run.json"
HISTORY_FILE = "history.npz"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"


class GradientHistory:
    """Per-step, per-layer statistics of one training run (numpy only)."""

    def __init__(
        self,
        layers: Iterable[str],
        *,
        variables: Iterable[str] = (),
        layer_info: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.layers: list[str] = list(layers)
        self.variables: list[str] = list(variables)
        self.layer_info: list[dict[str, Any]] = (
            layer_info if layer_info is not None else [{"name": n} for n in self.layers]
        )
        self.config: dict[str, Any] = dict(config or {})
        self.histograms: dict[str, dict[str, Any]] = {}
        # Rows live in preallocated arrays that double when full, so an
        # append costs O(rows appended) and reading returns views: a long run
        # flushed every few steps never re-copies its whole past.
        self._n = 0
        self._steps = np.zeros(0, np.int64)
        self._parts: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {}, {})

    # -- building -----------------------------------------------------------
    def append(
        self,
        steps: Iterable[int],
        series: Mapping[str, np.ndarray],
        scalars: Mapping[str, np.ndarray] | None = None,
        variable_series: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Appends rows: ``series`` are ``(rows, layers)``, scalars ``(rows,)``.

        A series absent from some appends is NaN in those rows.
        """
        steps = np.asarray(steps if isinstance(steps, np.ndarray) else list(steps), np.int64).reshape(-1)
        n = len(steps)
        if n == 0:
            return
        widths = (len(self.layers), None, len(self.variables))
        chunks = (
            {k: _rows(v, n, widths[0], k) for k, v in series.items()},
            {k: np.asarray(v, np.float64).reshape(n) for k, v in (scalars or {}).items()},
            {k: _rows(v, n, widths[2], k) for k, v in (variable_series or {}).items()},
        )
        self._reserve(self._n + n)
        lo, hi = self._n, self._n + n
        self._steps[lo:hi] = steps
        for part, chunk, width in zip(self._parts, chunks, widths, strict=False):
            for key, values in chunk.items():
                if key not in part:
                    part[key] = np.full((len(self._steps),) + (() if width is None else (width,)), np.nan)
                part[key][lo:hi] = values
            for key in part.keys() - chunk.keys():
                part[key][lo:hi] = np.nan
        self._n = hi

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._steps):
            return
        capacity = max(rows, 2 * len(self._steps), 64)

        def grow(a: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((capacity,) + a.shape[1:], fill, dtype=a.dtype)
            out[: self._n] = a[: self._n]
            return out

        self._steps = grow(self._steps, 0)
        for part in self._parts:
            for key in part:
                part[key] = grow(part[key], np.nan)

    # -- reading ------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        return self._steps[: self._n]

    @property
    def names(self) -> list[str]:
        """The per-layer series available, e.g. ``["backprop", "grad_norm", ...]``."""
        return sorted(self._parts[0])

    @property
    def scalars(self) -> dict[str, np.ndarray]:
        return {k: v[: self._n] for k, v in self._parts[1].items()}

    @property
    def variable_series(self) -> dict[str, np.ndarray]:
        return {k: v[: self._n] for k, v in self._parts[2].items()}

    def __getitem__(self, name: str) -> np.ndarray:
        series = self._parts[0]
        if name not in series:
            raise KeyError(f"no per-layer series {name!r}; available: {', '.join(sorted(series))}")
        return series[name][: self._n]

    def __contains__(self, name: object) -> bool:
        return name in self._parts[0]

    def __len__(self) -> int:
        return self._n

    def get(self, name: str) -> np.ndarray | None:
        """The series, or None where this run did not record it."""
        return self[name] if name in self._parts[0] else None

    def since(self, row: int) -> GradientHistory:
        """The rows from ``row`` on, as a history of their own (views, no copy).

        Example:

        >>> h = GradientHistory(["dense"])
        >>> h.append([0, 1, 2], {"grad_norm": np.ones((3, 1))})
        >>> h.since(1).steps.tolist()
        [1, 2]
        """
        start, stop = min(max(int(row), 0), self._n), self._n
        view = GradientHistory(self.layers, variables=self.variables, layer_info=self.layer_info, config=self.config)
        view._n = stop - start
        view._steps = self._steps[start:stop]
        # Each array is exactly as long as its rows, so an append to the view
        # grows (copies) it first and never writes into this history.
        view._parts = tuple({k: v[start:stop] for k, v in part.items()} for part in self._parts)
        return view

    def info(self, key: str) -> list[Any]:
        """One field of ``layer_info`` for every layer, None where absent."""
        return [d.get(key) for d in self.layer_info]

    def __repr__(self) -> str:
        return (
            f"GradientHistory(layers={len(self.layers)}, steps={len(self)}, "
            f"series={self.names}, scalars={sorted(self.scalars)})"
        )

    # -- the run folder -------------------------------------------------------
    def save(self, folder: str | os.PathLike, summary: dict[str, Any] | None = None) -> Path:
        """Writes ``run.json`` and ``history.npz`` (and ``summary.json``) into ``folder``.

        Each file is written to a temporary name and renamed, so a crash never
        leaves a half-written file behind.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"steps": self.steps}
        arrays.update({f"layer/{k}": self[k] for k in self.names})
        arrays.update({f"scalar/{k}": v for k, v in self.scalars.items()})
        arrays.update({f"variable/{k}": v for k, v in self.variable_series.items()})
        for moment, h in self.histograms.items():
            arrays[f"hist/{moment}/ranges"] = np.asarray(h["ranges"], np.float64)
            arrays[f"hist/{moment}/counts"] = np.asarray(h["counts"], np.float64)
        atomic_write(folder / HISTORY_FILE, lambda f: np.savez(f, **arrays), binary=True)
        meta = {
            "format": "gradscope-run",
            "version": FORMAT_VERSION,
            "layers": self.layers,
            "variables": self.variables,
            "layer_info": self.layer_info,
            "config": self.config,
            "histogram_steps": {m: int(h["step"]) for m, h in self.histograms.items()},
        }
        atomic_write(folder / RUN_FILE, lambda f: f.write(dumps_json(meta)))
        if summary is not None:
            atomic_write(folder / SUMMARY_FILE, lambda f: f.write(dumps_json(summary)))
        return folder


def load_run(folder: str | os.PathLike) -> GradientHistory:
    """Loads a run folder written by `GradientHistory.save`.

    Example:

    >>> import tempfile
    >>> h = GradientHistory(["dense"])
    >>> h.append([0, 1], {"grad_norm": np.array([[0.5], [0.25]])})
    >>> folder = h.save(tempfile.mkdtemp())
    >>> load_run(folder)["grad_norm"][-1].tolist()
    [0.25]
    """
    folder = Path(folder)
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{folder} is not a gradscope run folder (no {RUN_FILE})")
    meta = json.loads(run_file.read_text())
    history = GradientHistory(
        meta["layers"],
        variables=meta.get("variables", []),
        layer_info=meta.get("layer_info"),
        config=meta.get("config", {}),
    )
    with np.load(folder / HISTORY_FILE) as data:
        steps = data["steps"]
        series = {k[6:]: data[k] for k in data.files if k.startswith("layer/")}
        scalars = {k[7:]: data[k] for k in data.files if k.startswith("scalar/")}
        var_series = {k[9:]: data[k] for k in data.files if k.startswith("variable/")}
        for moment, step in meta.get("histogram_steps", {}).items():
            history.histograms[moment] = {
                "step": step,
                "ranges": data[f"hist/{moment}/ranges"],
                "counts": data[f"hist/{moment}/counts"],
            }
    if meta.get("version", 1) < 2:
        # Version 1 measured every variable on every step and wrote NaN for
        # a non-finite norm: that is +inf now.
        for name, values in var_series.items():
            measured = ~np.all(np.isnan(values), axis=0)
            var_series[name] = np.where(np.isnan(values) & measured, np.inf, values)
    history.append(steps, series, scalars, var_series)
    return history


def _rows(value: Any, n: int, width: int, name: str) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    if arr.shape != (n, width):
        raise ValueError(f"series {name!r} has shape {arr.shape}, expected {(n, width)}")
    return arr


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def atomic_write(path: Path, write, binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
