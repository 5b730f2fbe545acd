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

A long run streams (`GradientHistory.stream_to`): its rows are written to
the run folder in chunks as they arrive and only the newest stay in
memory, so memory stays flat however long the run; reading a whole series
then reads the chunks back. `GradientHistory.overview` and
``load_run(folder, buckets=N)`` give a long run down-sampled to ``N`` rows
(the median of each bucket of steps, with the minimum and maximum in
``history.spread``), for the summary and the plots.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from gradscope.evaluations import Evaluations
from gradscope.history_chunks import CHUNKS_DIR, ChunkStore, chunk_files

# 2: in the variable series, NaN means "not measured" and +inf "non-finite";
#    weight norms are read after the step's update.
# 3: the history may be streamed: chunk files in history/ (run.json says
#    "history": "chunks"), histograms in histograms.npz. Folders with
#    history.npz are still written as version 2.
FORMAT_VERSION = 3
_NPZ_VERSION = 2
RUN_FILE = "run.json"
RUN_FORMAT = "gradscope-run"
COMPARISON_FILE = "comparison.json"
COMPARISON_FORMAT = "gradscope-comparison"
HISTORY_FILE = "history.npz"
HISTOGRAMS_FILE = "histograms.npz"
#: Rows a history keeps whole before `GradientHistory.overview` down-samples it, and the buckets it then makes.
OVERVIEW_ROWS = 20_000
OVERVIEW_BUCKETS = 1_000
# The three kinds of series and their keys in a saved archive.
_PREFIXES = ("layer/", "scalar/", "variable/")
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
        #: Where the rows stream to, or None while they all stay in memory (`stream_to`).
        self.stream: ChunkStore | None = None
        #: The bucket minima and maxima of a down-sampled history (`overview`), else None.
        self.spread: Spread | None = None
        self.evaluations = Evaluations()  # training and validation loss and accuracy (gradscope.evaluations)
        # Rows live in preallocated arrays that double when full, so an
        # append costs O(rows appended) and reading returns views: a long run
        # flushed every few steps never re-copies its whole past. A streamed
        # history keeps only rows from `_offset` on; those before are on disk.
        self._n = 0
        self._offset = 0
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
        if self.stream is not None:
            self._forget_written()
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
        if self.stream is not None and len(self) - self.stream.rows >= self.stream.chunk_rows:
            self._write_pending()

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
        return self._column(-1, "steps")

    @property
    def names(self) -> list[str]:
        """The per-layer series available, e.g. ``["backprop", "grad_norm", ...]``."""
        return sorted(self._parts[0])

    @property
    def scalars(self) -> dict[str, np.ndarray]:
        return {k: self._column(1, k) for k in self._parts[1]}

    @property
    def variable_series(self) -> dict[str, np.ndarray]:
        return {k: self._column(2, k) for k in self._parts[2]}

    def __getitem__(self, name: str) -> np.ndarray:
        series = self._parts[0]
        if name not in series:
            raise KeyError(f"no per-layer series {name!r}; available: {', '.join(sorted(series))}")
        return self._column(0, name)

    def __contains__(self, name: object) -> bool:
        return name in self._parts[0]

    def __len__(self) -> int:
        return self._offset + self._n

    def get(self, name: str) -> np.ndarray | None:
        """The series, or None where this run did not record it."""
        return self[name] if name in self._parts[0] else None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this history holds in memory (rows of a streamed history on disk not counted).

        Example:

        >>> h = GradientHistory(["dense"])
        >>> h.append([0], {"grad_norm": np.ones((1, 1))})
        >>> h.nbytes  # room for 64 rows: steps and one series of one layer
        1024
        """
        return self._steps.nbytes + sum(a.nbytes for part in self._parts for a in part.values())

    def rows(self, name: str, start: int = 0) -> np.ndarray:
        """One per-layer series from row ``start`` on; of a streamed history, only its chunks from there are read.

        Example:

        >>> h = GradientHistory(["dense"])
        >>> h.append([0, 1, 2], {"grad_norm": np.array([[3.0], [2.0], [1.0]])})
        >>> h.rows("grad_norm", 1).tolist()
        [[2.0], [1.0]]
        """
        if name not in self._parts[0]:
            self[name]  # the KeyError naming what there is
        return self._column(0, name, min(max(int(start), 0), len(self)))

    def since(self, row: int) -> GradientHistory:
        """The rows from ``row`` on, as a history of their own (views where they are in memory).

        Example:

        >>> h = GradientHistory(["dense"])
        >>> h.append([0, 1, 2], {"grad_norm": np.ones((3, 1))})
        >>> h.since(1).steps.tolist()
        [1, 2]
        """
        start = min(max(int(row), 0), len(self))
        view = GradientHistory(self.layers, variables=self.variables, layer_info=self.layer_info, config=self.config)
        view._n = len(self) - start
        view._steps = self._column(-1, "steps", start)
        # Each array is exactly as long as its rows, so an append to the view
        # grows (copies) it first and never writes into this history.
        view._parts = tuple({k: self._column(i, k, start) for k in part} for i, part in enumerate(self._parts))
        return view

    def _column(self, part: int, key: str, start: int = 0) -> np.ndarray:
        """Rows ``start`` on of one array (``part`` -1: the steps): a view of memory, plus chunks read back."""
        memory = (self._steps if part < 0 else self._parts[part][key])[: self._n]
        if start >= self._offset:
            return memory[start - self._offset:]
        name = "steps" if part < 0 else _PREFIXES[part] + key
        pieces = [_chunk_rows(c.path, name, memory.shape[1:], max(start - c.first, 0), self._offset - c.first)
                  for c in self.stream.covering(start, self._offset)]
        return np.concatenate([*pieces, memory]).astype(memory.dtype, copy=False)

    def blocks(self) -> Iterator[dict[str, np.ndarray]]:
        """The rows in blocks (streamed chunks, then memory), named as in ``history.npz``: one pass over a run."""
        for chunk in self.stream.covering(0, self._offset) if self._offset else ():
            with np.load(chunk.path, allow_pickle=False) as loaded:
                arrays = {k: loaded[k] for k in loaded.files}
            yield {k: v[: self._offset - chunk.first] for k, v in arrays.items()}
        if self._n:
            yield self._arrays(0, self._n)

    def overview(self, max_rows: int = OVERVIEW_ROWS, buckets: int = OVERVIEW_BUCKETS) -> GradientHistory:
        """The history to summarise and plot: itself when short, else down-sampled to ``buckets`` rows.

        A streamed history of up to ``max_rows`` rows is read back whole;
        a longer one (streamed or not) is read in one pass, a block at a
        time, into the median of each bucket of steps (`gradscope.downsample`).

        Args:
            max_rows: the most rows kept whole. Defaults to `20_000`.
            buckets: rows of the down-sampled history. Defaults to `1_000`.

        Example:

        >>> h = GradientHistory(["dense"])
        >>> h.append(range(10), {"grad_norm": np.arange(10.0).reshape(10, 1)})
        >>> small = h.overview(max_rows=4, buckets=2)
        >>> small["grad_norm"].ravel().tolist(), small.spread.high["grad_norm"].ravel().tolist()
        ([2.0, 7.0], [4.0, 9.0])
        """
        if len(self) > max_rows:
            from gradscope.downsample import downsample

            return downsample(self.blocks(), len(self), buckets, like=self)
        if not self._offset:
            return self
        whole = self._empty_like()
        for block in self.blocks():
            whole.append_arrays(block)
        return whole

    def _empty_like(self) -> GradientHistory:
        h = GradientHistory(self.layers, variables=self.variables, layer_info=self.layer_info, config=self.config)
        h.histograms = self.histograms
        h.evaluations = self.evaluations
        return h

    def append_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Appends rows given as ``history.npz`` names them (``steps``, ``layer/grad_norm``, ...)."""
        parts: list[dict[str, np.ndarray]] = [{}, {}, {}]
        for key, value in arrays.items():
            for i, prefix in enumerate(_PREFIXES):
                if key.startswith(prefix):
                    parts[i][key[len(prefix):]] = value
        self.append(arrays["steps"], *parts)

    def _arrays(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Memory rows ``lo`` to ``hi - 1`` as ``history.npz`` names them."""
        arrays: dict[str, np.ndarray] = {"steps": self._steps[lo:hi]}
        for prefix, part in zip(_PREFIXES, self._parts, strict=True):
            arrays.update({prefix + k: v[lo:hi] for k, v in part.items()})
        return arrays

    def info(self, key: str) -> list[Any]:
        """One field of ``layer_info`` for every layer, None where absent."""
        return [d.get(key) for d in self.layer_info]

    def __repr__(self) -> str:
        return (
            f"GradientHistory(layers={len(self.layers)}, steps={len(self)}, "
            f"series={self.names}, scalars={sorted(self.scalars)})"
        )

    # -- streaming --------------------------------------------------------------
    def stream_to(self, folder: str | os.PathLike, chunk_rows: int = 256) -> Path:
        """From now on, writes rows to the run folder ``folder`` in chunks and keeps only the newest in memory.

        ``run.json`` is written at once, so the folder loads (`load_run`)
        whatever happens next; each `chunk_rows` rows appended are written
        as a chunk and then dropped from memory. `sync` writes the rows
        still pending, `save` finishes the folder. Reading a whole series
        reads the chunks back: prefer `since`, `rows` and `overview`.

        Args:
            folder: the run folder (made if missing; it should hold no other run).
            chunk_rows: rows per chunk. Defaults to `256`.

        Example:

        >>> import tempfile
        >>> h = GradientHistory(["dense"])
        >>> folder = h.stream_to(tempfile.mkdtemp(), chunk_rows=2)
        >>> h.append(range(5), {"grad_norm": np.ones((5, 1))})
        >>> h.sync()
        >>> len(h), len(load_run(folder))
        (5, 5)
        """
        self.stream = ChunkStore(folder, chunk_rows)
        self._write_meta(self.stream.folder, in_progress=True)
        return self.stream.folder

    def sync(self) -> None:
        """Writes the rows not yet in a chunk, the histograms and ``run.json`` to the stream's folder."""
        if self.stream is None:
            return
        if len(self) > self.stream.rows:
            self._write_pending()
        self._write_histograms(self.stream.folder)
        self._write_meta(self.stream.folder, in_progress=True)

    def _write_pending(self) -> None:
        lo = self.stream.rows - self._offset
        self.stream.write(self.stream.rows, self._arrays(lo, self._n))

    def _forget_written(self) -> None:
        """Drops the rows already in chunks from memory, into new arrays (views handed out stay valid)."""
        written = self.stream.rows - self._offset
        if written <= 0:
            return
        keep = self._n - written
        capacity = max(keep, 64)

        def tail(a: np.ndarray) -> np.ndarray:
            out = np.full((capacity,) + a.shape[1:], 0 if a.dtype.kind == "i" else np.nan, dtype=a.dtype)
            out[:keep] = a[written: self._n]
            return out

        self._steps = tail(self._steps)
        self._parts = tuple({k: tail(v) for k, v in part.items()} for part in self._parts)
        self._offset += written
        self._n = keep

    # -- the run folder -------------------------------------------------------
    def save(self, folder: str | os.PathLike, summary: dict[str, Any] | None = None) -> Path:
        """Writes ``run.json`` and ``history.npz`` (and ``summary.json``) into ``folder``.

        A streamed history writes its pending rows and copies its chunks
        (nothing to copy when ``folder`` is the one it streams to) instead
        of ``history.npz``. Each file is written to a temporary name and
        renamed, so a crash never leaves a half-written file behind.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.stream is not None:
            self.sync()
            if not same_folder(folder, self.stream.folder):
                _copy_chunks(self.stream.folder, folder)
            self._write_histograms(folder)
        else:
            arrays = self._arrays(0, self._n)
            arrays.update(self._histogram_arrays())
            atomic_write(folder / HISTORY_FILE, lambda f: np.savez(f, **arrays), binary=True)
        self.evaluations.save(folder)
        self._write_meta(folder)
        if summary is not None:
            atomic_write(folder / SUMMARY_FILE, lambda f: f.write(dumps_json(summary)))
        return folder

    def _histogram_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for moment, h in self.histograms.items():
            arrays[f"hist/{moment}/ranges"] = np.asarray(h["ranges"], np.float64)
            arrays[f"hist/{moment}/counts"] = np.asarray(h["counts"], np.float64)
        return arrays

    def _write_histograms(self, folder: Path) -> None:
        arrays = self._histogram_arrays()
        atomic_write(folder / HISTOGRAMS_FILE, lambda f: np.savez(f, **arrays), binary=True)

    def _write_meta(self, folder: Path, in_progress: bool = False) -> None:
        meta = {
            "format": RUN_FORMAT,
            "version": _NPZ_VERSION if self.stream is None else FORMAT_VERSION,
            "layers": self.layers,
            "variables": self.variables,
            "layer_info": self.layer_info,
            "config": self.config,
            "histogram_steps": {m: int(h["step"]) for m, h in self.histograms.items()},
        }
        if self.stream is not None:
            # A folder still "in_progress" is a run that was still training
            # (or crashed): every chunk in it loads.
            meta.update({"history": "chunks", "in_progress": in_progress})
        atomic_write(folder / RUN_FILE, lambda f: f.write(dumps_json(meta)))


class Spread:
    """The minimum and maximum of each bucket of a down-sampled history.

    Attributes:
        low: the bucket minima, a history of the same layers and steps.
        high: the bucket maxima.
        sizes: rows in each bucket.
        rows: the rows of the history that was down-sampled.
    """

    def __init__(self, low: GradientHistory, high: GradientHistory, sizes: np.ndarray, rows: int) -> None:
        self.low, self.high, self.sizes, self.rows = low, high, sizes, int(rows)

    def __repr__(self) -> str:
        return f"Spread(buckets={len(self.sizes)}, rows={self.rows})"


def same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` are the same folder (links followed)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _copy_chunks(source: Path, target: Path) -> None:
    import shutil

    (target / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    for chunk in chunk_files(source):
        shutil.copyfile(chunk.path, target / CHUNKS_DIR / chunk.path.name)


def _chunk_rows(path: Path, name: str, tail: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Rows ``lo`` to ``hi - 1`` of one array of a chunk; NaN where the chunk lacks the series."""
    with np.load(path, allow_pickle=False) as loaded:
        if name in loaded.files:
            return loaded[name][lo:hi]
        rows = len(loaded["steps"][lo:hi])
    return np.full((rows,) + tail, np.nan)


class RunFolderError(ValueError):
    """A run or comparison folder that cannot be read, or a place a run cannot go.

    `load_run` and `comparison_runs` raise it for anything that keeps a
    folder from loading (a missing or unreadable file, a file that is not
    JSON or not a numpy archive, a field or an array of the wrong type or
    shape); `gradscope.run_folder.claim_run_folder` raises it for an
    unusable ``--out``. The message is one line and names the path.

    Attributes:
        path: the file or folder at fault.

    Example:

    >>> import tempfile
    >>> try:
    ...     load_run(tempfile.mkdtemp())
    ... except RunFolderError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    not a gradscope run folder (no run.json)
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(problem.split())  # one line, whatever the cause said
        super().__init__(f"{path}: {self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from both arguments (the default would pass only the message).
        return type(self), (self.path, self.problem)


def load_run(folder: str | os.PathLike, buckets: int | None = None) -> GradientHistory:
    """Loads a run folder written by `GradientHistory.save` (or streamed to), whole or down-sampled.

    Every field and array is checked first, so a damaged or hand-edited
    folder gives one `RunFolderError` naming the file and what is wrong,
    never a traceback from deep inside numpy or the renderers.

    Args:
        folder: the run folder (``run.json``, and ``history.npz`` or the
            chunks of a streamed run in ``history/``).
        buckets: down-sample a run of more rows to this many: the median of
            each bucket of consecutive steps, with the minima and maxima in
            ``history.spread`` (`gradscope.downsample`). A streamed run is
            then read a chunk at a time, never whole. Defaults to `None`,
            every row.

    Raises:
        RunFolderError: the folder is not a readable run.

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
    if not run_file.exists():
        if not folder.exists():
            raise RunFolderError(folder, "no such folder")
        raise RunFolderError(folder, f"not a gradscope run folder (no {RUN_FILE})")
    meta = _read_json_object(run_file)
    _check_format(meta, run_file, RUN_FORMAT)
    version = meta.get("version", 1)
    if not _is_int(version) or version < 1:
        raise RunFolderError(run_file, f"'version' must be a positive integer, not {_kind(version)}")
    if version > FORMAT_VERSION:
        raise RunFolderError(
            run_file, f"written by a newer gradscope (format version {version}; this one reads 1 to {FORMAT_VERSION})"
        )
    layers = _string_list(meta, "layers", run_file, required=True)
    variables = _string_list(meta, "variables", run_file)
    layer_info = meta.get("layer_info")
    if layer_info is not None:
        if not isinstance(layer_info, list) or len(layer_info) != len(layers):
            raise RunFolderError(run_file, f"'layer_info' must be a list of {len(layers)} objects, one per layer")
        for i, info in enumerate(layer_info):
            _check_facts(info, _LAYER_FACTS, f"layer_info[{i}]", run_file)
    config = meta.get("config", {})
    _check_facts(config, _CONFIG_FACTS, "config", run_file)
    moments = meta.get("histogram_steps", {})
    if not isinstance(moments, dict) or not all(_is_int(s) for s in moments.values()):
        raise RunFolderError(run_file, "'histogram_steps' must map each moment to an integer step")

    history = GradientHistory(layers, variables=variables, layer_info=layer_info, config=config)
    hist_keys = [f"hist/{m}/{part}" for m in moments for part in ("ranges", "counts")]
    if meta.get("history") == "chunks":
        chunks = chunk_files(folder)
        rows = chunks[-1].end if chunks else 0
        blocks: Iterable[dict[str, np.ndarray]] = _chunk_blocks(chunks, len(layers), len(variables), version)
        hist_path = folder / HISTOGRAMS_FILE
        hist_arrays = _read_npz(hist_path, hist_keys, wanted=()) if hist_keys else {}
    else:
        hist_path = folder / HISTORY_FILE
        hist_arrays = _read_npz(hist_path, ["steps", *hist_keys])
        blocks = [_checked_block(hist_path, hist_arrays, len(layers), len(variables), version)]
        rows = len(blocks[0]["steps"])
    check = _ArrayCheck(hist_path, hist_arrays)
    for moment, step in moments.items():
        history.histograms[moment] = {
            "step": step,
            "ranges": check(f"hist/{moment}/ranges", (len(layers), 2), "layers x 2"),
            "counts": check(f"hist/{moment}/counts", (len(layers), None), "layers x bins"),
        }
    history.evaluations = Evaluations.load(folder)
    if buckets is not None and rows > buckets:
        from gradscope.downsample import downsample

        return downsample(blocks, rows, buckets, like=history)
    for block in blocks:
        history.append_arrays(block)
    return history


def load_overview(folder: str | os.PathLike) -> GradientHistory:
    """The run at ``folder`` as `GradientHistory.overview` gives it: whole, or down-sampled when long.

    What the summary and the plots of a saved run read; a long streamed run
    is read a chunk at a time.

    Example:

    >>> import tempfile
    >>> h = GradientHistory(["dense"])
    >>> h.append(range(3), {"grad_norm": np.ones((3, 1))})
    >>> len(load_overview(h.save(tempfile.mkdtemp())))
    3
    """
    chunks = chunk_files(folder)
    if not chunks:
        return load_run(folder).overview()
    return load_run(folder, buckets=OVERVIEW_BUCKETS if chunks[-1].end > OVERVIEW_ROWS else None)


def _checked_block(path: Path, arrays: dict[str, np.ndarray], width: int, n_vars: int,
                   version: int) -> dict[str, np.ndarray]:
    """The rows of one archive (``history.npz`` or a chunk), each array checked for shape and type."""
    check = _ArrayCheck(path, arrays)
    steps = check("steps", (None,), "steps", integer=True)
    n = len(steps)
    shapes = {"layer/": ((n, width), "steps x layers"), "scalar/": ((n,), "steps"),
              "variable/": ((n, n_vars), "steps x variables")}
    block = {"steps": steps}
    for key in arrays:
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            block[key] = check(key, *shapes[prefix])
            if version < 2 and prefix == "variable/":
                # Version 1 measured every variable on every step and wrote
                # NaN for a non-finite norm: that is +inf now.
                values = block[key]
                measured = ~np.all(np.isnan(values), axis=0)
                block[key] = np.where(np.isnan(values) & measured, np.inf, values)
    return block


def _chunk_blocks(chunks: list, width: int, n_vars: int, version: int) -> Iterator[dict[str, np.ndarray]]:
    """The chunks of a streamed run, checked, one at a time (so a long run is never all in memory)."""
    end = 0
    for chunk in chunks:
        if chunk.first != end:
            raise RunFolderError(chunk.path, f"starts at row {chunk.first}, but the chunks before end at row {end}")
        block = _checked_block(chunk.path, _read_npz(chunk.path, ["steps"]), width, n_vars, version)
        if len(block["steps"]) != chunk.rows:
            raise RunFolderError(chunk.path, f"holds {len(block['steps'])} rows; its name says {chunk.rows}")
        end = chunk.end
        yield block


def comparison_runs(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """The runs a comparison folder (``gradscope compare``) lists: ``[(label, run folder), ...]``.

    Each run's folder must lie inside the comparison folder: an absolute
    path, a ``..`` or a symbolic link leading out of it is refused, so a
    copied or downloaded comparison cannot make ``gradscope report`` read
    (or draw plots beside) files elsewhere. The run folders themselves are
    not read: pass each to `load_run`.

    Args:
        folder: the comparison folder, holding ``comparison.json``.

    Raises:
        RunFolderError: ``comparison.json`` is missing, not JSON, of the
            wrong shape, or names a folder outside the comparison.

    Example:

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> runs = [{"label": "tanh/glorot_uniform", "folder": "tanh-glorot_uniform"}]
    >>> _ = (folder / COMPARISON_FILE).write_text(json.dumps({"format": "gradscope-comparison", "runs": runs}))
    >>> [(label, path.name) for label, path in comparison_runs(folder)]
    [('tanh/glorot_uniform', 'tanh-glorot_uniform')]
    """
    folder = Path(folder)
    path = folder / COMPARISON_FILE
    if not path.exists():
        raise RunFolderError(folder, f"not a gradscope comparison folder (no {COMPARISON_FILE})")
    meta = _read_json_object(path)
    _check_format(meta, path, COMPARISON_FORMAT)
    entries = meta.get("runs")
    if not isinstance(entries, list):
        raise RunFolderError(path, f"'runs' must be a list, not {_kind(entries)}")
    root = os.path.realpath(folder)
    runs: list[tuple[str, Path]] = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("label"), str)
                and isinstance(entry.get("folder"), str)):
            raise RunFolderError(path, f"runs[{i}] must be an object with a string 'label' and 'folder'")
        label, name = entry["label"], entry["folder"]
        if label in (seen for seen, _ in runs):
            raise RunFolderError(path, f"the label {label!r} appears twice")
        relative = Path(name)
        # realpath also follows symbolic links, so a link inside the folder
        # that points elsewhere is refused like "../x".
        inside = "\0" not in name and os.path.realpath(folder / relative)
        if (relative.is_absolute() or ".." in relative.parts or not inside or inside == root
                or os.path.commonpath([root, inside]) != root):
            raise RunFolderError(path, f"run {label!r} names the folder {name!r}, which is not inside {folder}")
        runs.append((label, folder / relative))
    return runs


# Facts the diagnosis and the renderers read, with the types they need
# (None allowed where a model may not have the fact); other keys are free.
_INT_OR_NONE = (int, type(None))
_STR_OR_NONE = (str, type(None))
_LAYER_FACTS: dict[str, tuple[type, ...]] = {
    "name": _STR_OR_NONE, "class": _STR_OR_NONE, "activation": _STR_OR_NONE, "output_shape": _STR_OR_NONE,
    "units": _INT_OR_NONE, "fan_in": _INT_OR_NONE, "fan_out": _INT_OR_NONE, "params": (int,),
}
_CONFIG_FACTS: dict[str, tuple[type, ...]] = {"name": _STR_OR_NONE, "num_classes": _INT_OR_NONE}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFolderError(path, f"cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    try:
        # bytes: json picks UTF-8/16/32 itself; a wrong encoding is a ValueError.
        # Deep nesting ends in RecursionError, which is just as malformed.
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RunFolderError(path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RunFolderError(path, f"not a JSON object but {_kind(meta)}")
    return meta


def _check_format(meta: dict[str, Any], path: Path, expected: str) -> None:
    found = meta.get("format", expected)  # early files had no "format"
    if found != expected:
        shown = repr(found[:40]) if isinstance(found, str) else _kind(found)
        raise RunFolderError(path, f"not a {expected} file (format {shown})")


def _string_list(meta: dict[str, Any], key: str, path: Path, required: bool = False) -> list[str]:
    if key not in meta and not required:
        return []
    value = meta.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RunFolderError(path, f"{key!r} must be a list of strings, not {_kind(value)}")
    return value


def _check_facts(facts: Any, types: dict[str, tuple[type, ...]], where: str, path: Path) -> None:
    if not isinstance(facts, dict):
        raise RunFolderError(path, f"{where!r} must be an object, not {_kind(facts)}")
    for key, allowed in types.items():
        value = facts.get(key)
        if key not in facts:
            continue
        if isinstance(value, bool) or not isinstance(value, allowed) or (_is_int(value) and value < 0):
            kinds = " or ".join("null" if t is type(None) else ("a non-negative integer" if t is int else "a string")
                                for t in allowed)
            raise RunFolderError(path, f"{where}.{key} must be {kinds}, not {_kind(value)}")


def _read_npz(path: Path, required: list[str], wanted: tuple[str, ...] = ("steps", *_PREFIXES)
              ) -> dict[str, np.ndarray]:
    """The arrays of an archive that `load_run` reads (unknown names are skipped)."""
    if not path.exists():
        raise RunFolderError(path, "missing")
    try:
        # No pickles: a run folder may come from anywhere.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise RunFolderError(path, "a single numpy array, not a .npz archive")
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files if k.startswith(wanted) or k in required}
    except RunFolderError:
        raise
    except Exception as exc:
        # A damaged archive fails in zipfile, zlib, struct or numpy's header
        # parser, each with its own exception type; all mean the same here.
        # numpy's own text advises loading pickles unsafely: not advice to pass on.
        if "Object arrays" in str(exc):
            raise RunFolderError(path, "holds an array of Python objects (pickled), which is never loaded") from None
        if "pickle" in str(exc):
            raise RunFolderError(path, "not a numpy archive (numpy would read it as pickled Python objects, "
                                       "which are never loaded)") from None
        reason = " ".join(str(exc).split())[:200]
        raise RunFolderError(path, f"not a readable numpy archive ({type(exc).__name__}: {reason})") from None
    for key in required:
        if key not in arrays:
            raise RunFolderError(path, f"no array {key!r}")
    return arrays


class _ArrayCheck:
    """Checks one array of ``history.npz`` for shape and dtype, and converts it."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self.path, self.arrays = path, arrays

    def __call__(self, key: str, shape: tuple[int | None, ...], meaning: str, integer: bool = False) -> np.ndarray:
        arr = self.arrays[key]
        kinds = "iu" if integer else "biuf"  # no strings, complex numbers, dates or records
        if arr.dtype.kind not in kinds:
            wanted = "integers" if integer else "numbers"
            raise RunFolderError(self.path, f"array {key!r} holds {arr.dtype} values, not {wanted}")
        if arr.ndim != len(shape) or any(w is not None and g != w for g, w in zip(arr.shape, shape, strict=False)):
            expected = ", ".join("any" if w is None else str(w) for w in shape)
            expected = f"({expected},)" if len(shape) == 1 else f"({expected})"
            raise RunFolderError(self.path, f"array {key!r} has shape {arr.shape}, expected {expected} ({meaning})")
        return arr.astype(np.int64 if integer else np.float64)

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


def current_umask() -> int:
    """The process's umask, read without a window in which it is changed (where the OS allows).

    Example:

    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        # Linux reports it in /proc (since 4.7): reading it changes nothing.
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and set it back. Setting 0o077, not
    # 0, means a file another thread creates in between is made more
    # private, never more open, than asked.
    old = os.umask(0o077)
    os.umask(old)
    return old


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], binary: bool = False) -> None:
    """Writes one file through ``write(f)`` all or nothing: to a temporary name beside it, then renamed.

    A failed or interrupted write leaves the old file (if any) and no
    temporary behind. The file gets the permissions ``open()`` would give
    it (0666 less the umask), not mkstemp's private 0600. An `OSError`
    that names no file is given ``path`` as its ``filename``.

    Args:
        path: the file to write.
        write: called with the open temporary file.
        binary: open it in binary mode (else text, UTF-8).

    Example:

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, lambda f: f.write("hello"))
    >>> target.read_text()
    'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            os.chmod(tmp, 0o666 & ~current_umask())
            write(f)
            # On disk before the rename, so a crash cannot leave the new
            # name pointing at an empty file.
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # "No space left on device" says where
        raise
