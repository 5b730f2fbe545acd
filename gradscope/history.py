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
``weight_norm``     L2 norm of the layer's trainable variables, as the step
                    used them (before its update)
``update_ratio``    ||the optimizer's update|| / ||weights before it||
``backprop``        RMS over batch and units of d(loss)/d(layer output)
``act_mean``        mean of the layer's output
``act_std``         standard deviation of the layer's output
``saturation``      share of outputs in the flat tails (tanh: |a| > 0.99;
                    sigmoid: a < 0.01 or a > 0.99); NaN for other activations
``dead``            share of units that output 0 for every sample (ReLU-like)
``dact_mean``       mean activation derivative f'(s) over units and batch
``dact_rms``        root mean square of f'(s): the factor the gradient's RMS
                    is multiplied by when it passes the activation
==================  =========================================================

Variable series: ``grad_norm``, ``weight_norm``, ``update_norm``.
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
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

FORMAT_VERSION = 1
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
        # Rows arrive in chunks (one per flush from the device); they are
        # concatenated lazily so that appending stays O(chunk).
        self._chunks: list[tuple[np.ndarray, dict, dict, dict]] = []
        self._cache: tuple[np.ndarray, dict, dict, dict] | None = None

    # -- building -----------------------------------------------------------
    def append(
        self,
        steps: Iterable[int],
        series: Mapping[str, np.ndarray],
        scalars: Mapping[str, np.ndarray] | None = None,
        variable_series: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Appends rows: ``series`` are ``(rows, layers)``, scalars ``(rows,)``."""
        steps = np.asarray(list(steps) if not isinstance(steps, np.ndarray) else steps, np.int64)
        n = len(steps)
        if n == 0:
            return
        chunk_series = {k: _rows(v, n, len(self.layers), k) for k, v in series.items()}
        chunk_scalars = {k: np.asarray(v, np.float64).reshape(n) for k, v in (scalars or {}).items()}
        chunk_vars = {
            k: _rows(v, n, len(self.variables), k) for k, v in (variable_series or {}).items()
        }
        self._chunks.append((steps, chunk_series, chunk_scalars, chunk_vars))
        self._cache = None

    def _merged(self) -> tuple[np.ndarray, dict, dict, dict]:
        if self._cache is None:
            self._cache = _concat(self._chunks, len(self.layers), len(self.variables))
            # Keep one merged chunk so memory is not held twice.
            self._chunks = [self._cache] if len(self._cache[0]) else []
        return self._cache

    # -- reading ------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        return self._merged()[0]

    @property
    def names(self) -> list[str]:
        """The per-layer series available, e.g. ``["backprop", "grad_norm", ...]``."""
        return sorted(self._merged()[1])

    @property
    def scalars(self) -> dict[str, np.ndarray]:
        return self._merged()[2]

    @property
    def variable_series(self) -> dict[str, np.ndarray]:
        return self._merged()[3]

    def __getitem__(self, name: str) -> np.ndarray:
        series = self._merged()[1]
        if name not in series:
            raise KeyError(f"no per-layer series {name!r}; available: {', '.join(sorted(series))}")
        return series[name]

    def __contains__(self, name: object) -> bool:
        return name in self._merged()[1]

    def __len__(self) -> int:
        return len(self.steps)

    def get(self, name: str) -> np.ndarray | None:
        """The series, or None where this run did not record it."""
        return self._merged()[1].get(name)

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
        steps, series, scalars, var_series = self._merged()
        arrays: dict[str, np.ndarray] = {"steps": steps}
        arrays.update({f"layer/{k}": v for k, v in series.items()})
        arrays.update({f"scalar/{k}": v for k, v in scalars.items()})
        arrays.update({f"variable/{k}": v for k, v in var_series.items()})
        for moment, h in self.histograms.items():
            arrays[f"hist/{moment}/ranges"] = np.asarray(h["ranges"], np.float64)
            arrays[f"hist/{moment}/counts"] = np.asarray(h["counts"], np.float64)
        _atomic_write(folder / HISTORY_FILE, lambda f: np.savez(f, **arrays), binary=True)
        meta = {
            "format": "gradscope-run",
            "version": FORMAT_VERSION,
            "layers": self.layers,
            "variables": self.variables,
            "layer_info": self.layer_info,
            "config": self.config,
            "histogram_steps": {m: int(h["step"]) for m, h in self.histograms.items()},
        }
        _atomic_write(folder / RUN_FILE, lambda f: f.write(_dumps(meta)))
        if summary is not None:
            _atomic_write(folder / SUMMARY_FILE, lambda f: f.write(_dumps(summary)))
        return folder


def load_run(folder: str | os.PathLike) -> GradientHistory:
    """Loads a run folder written by `GradientHistory.save`.

    Example:

    >>> h = load_run("runs/tanh")          # doctest: +SKIP
    >>> h["grad_norm"][-1]                 # doctest: +SKIP
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
    if len(steps):
        history.append(steps, series, scalars, var_series)
    else:
        history._cache = (steps, series, scalars, var_series)
    return history


def load_summary(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The saved ``summary.json`` of a run folder, or None."""
    path = Path(folder) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(value: Any, n: int, width: int, name: str) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    if arr.shape != (n, width):
        raise ValueError(f"series {name!r} has shape {arr.shape}, expected {(n, width)}")
    return arr


def _concat(chunks: list, n_layers: int, n_vars: int) -> tuple[np.ndarray, dict, dict, dict]:
    if not chunks:
        return np.zeros(0, np.int64), {}, {}, {}
    if len(chunks) == 1:
        return chunks[0]
    steps = np.concatenate([c[0] for c in chunks])
    out = []
    for part, width in ((1, n_layers), (2, None), (3, n_vars)):
        keys = sorted({k for c in chunks for k in c[part]})
        merged = {}
        for k in keys:
            pieces = []
            for c in chunks:
                n = len(c[0])
                if k in c[part]:
                    pieces.append(c[part][k])
                else:  # a series that started later: earlier rows are unknown
                    pieces.append(np.full((n,) if width is None else (n, width), np.nan))
            merged[k] = np.concatenate(pieces)
        out.append(merged)
    return steps, out[0], out[1], out[2]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _atomic_write(path: Path, write, binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
