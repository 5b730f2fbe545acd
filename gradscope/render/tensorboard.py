"""TensorBoard event files from a record: per-step scalars, activation histograms, the verdict.

`TensorBoardWriter` turns a `GradientHistory` (and a `Diagnosis`) into an
event file that ``tensorboard --logdir DIR`` shows. It reads records only and
imports no TensorFlow: it builds the `tensorboard` package's own protocol
buffers and writes them with its record writer, so a saved run is exported
exactly as a live one is written, on a machine without TensorFlow.

What is written (tags are flat and predictable; see `layer_tags`):

======================  ====================================================
``grad_norm/<layer>``   L2 norm of the layer's weight gradient, every step
``backprop/<layer>``    RMS of d(loss)/d(layer output), every step
``saturation/<layer>``  share of tanh/sigmoid outputs in the flat tails
``dead/<layer>``        share of units that output 0 for the whole batch
``update_ratio/<layer>``  ||update|| / ||weights|| of the step
``loss``, ``accuracy``  the training batch's loss and accuracy
``activations/<layer>``  histogram of the layer's outputs (start and end)
``verdict``             the diagnosis in words and the per-layer table (text)
======================  ====================================================

A value that is NaN in the record (not measured at that step, or not
defined for that layer, like the saturation of a ReLU layer) is not written;
an infinite one is.

Example:

>>> import tempfile
>>> import numpy as np
>>> from gradscope.history import GradientHistory
>>> h = GradientHistory(["dense", "dense 1"])
>>> h.append([0, 1], {"grad_norm": np.ones((2, 2))}, {"loss": np.array([2.0, 1.5])})
>>> with TensorBoardWriter(tempfile.mkdtemp()) as board:
...     board.write(h)
2
>>> layer_tags(h.layers)
['dense', 'dense_1']
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from gradscope.diagnosis import Diagnosis
from gradscope.history import GradientHistory

#: The per-layer series written, one scalar tag ``<series>/<layer>`` each.
LAYER_SERIES = ("grad_norm", "backprop", "saturation", "dead", "update_ratio")
#: The whole-model series written, one tag each, under their own names.
SCALAR_SERIES = ("loss", "accuracy")
HISTOGRAM_PREFIX = "activations"
VERDICT_TAG = "verdict"

# What TensorFlow's summary names allow; "/" is left out, so a layer name
# never opens a level of its own under the series.
_UNSAFE = re.compile(r"[^\w.\-]")


def layer_tags(layers: Sequence[str]) -> list[str]:
    """The tag part of each layer name: TensorBoard-safe and unique, in the layers' order.

    Every character other than a letter, a digit, ``_``, ``-`` or ``.``
    becomes ``_``. When two names come out the same, the later ones get
    ``_2``, ``_3``, ... (in the layers' order), so every layer keeps a tag.

    Args:
        layers: the layer names, e.g. ``history.layers``.

    Example:

    >>> layer_tags(["dense", "conv 1", "conv:1", "résumé"])
    ['dense', 'conv_1', 'conv_1_2', 'résumé']
    """
    tags: list[str] = []
    for name in layers:
        base = _UNSAFE.sub("_", name) or "_"
        tag, n = base, 1
        while tag in tags:
            n += 1
            tag = f"{base}_{n}"
        tags.append(tag)
    return tags


def verdict_markdown(history: GradientHistory, diagnosis: Diagnosis) -> str:
    """The diagnosis as Markdown for TensorBoard's Text tab: its sentences, then a per-layer table.

    Args:
        history: the record the diagnosis was made from.
        diagnosis: the diagnosis.

    Example:

    >>> from gradscope.diagnosis import diagnose
    >>> h = GradientHistory(["hidden", "output"])
    >>> h.append(range(20), {"backprop": np.tile([0.01, 1.0], (20, 1)), "grad_norm": np.ones((20, 2))})
    >>> print(verdict_markdown(h, diagnose(h)).splitlines()[0])
    layer 1 gets 1/100 of the output layer's back-propagated gradient.
    """
    lines = [*(sentence + "\n" for sentence in diagnosis.sentences())]
    lines.append(f"{len(history)} recorded steps, {len(history.layers)} layers.\n")
    lines.append("| # | layer | verdict | ratio to output | grad first | grad last | saturation | dead |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for i, v in enumerate(diagnosis.layers, 1):
        numbers = (v.ratio, v.grad_first, v.grad_last, v.saturation, v.dead)
        cells = " | ".join("-" if not np.isfinite(x) else f"{x:.3g}" for x in numbers)
        name = v.name.replace("|", "\\|")
        lines.append(f"| {i} | {name} | {v.verdict} | {cells} |")
    return "\n".join(lines) + "\n"


class RecordFile(Protocol):
    """Where the event records go: one ``write(bytes)`` a record."""

    def write(self, record: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class PlainRecordFile:
    """TFRecord framing (length, CRC32C) in Python, from the `tensorboard` package: no TensorFlow needed."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "xb")
        self._records = RecordWriter(self._file)

    def write(self, record: bytes) -> None:
        self._records.write(record)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def open_record_file(path: Path, native: bool | None = None) -> RecordFile:
    """A new file of TFRecords (the event file format) at ``path``.

    The `tensorboard` package computes each record's CRC32C in pure Python,
    about a quarter of a microsecond a byte; TensorFlow's own writer does it
    in C++. So TensorFlow's is used where it is already imported (always,
    while training); it is never imported here. Both write the same bytes.

    Args:
        path: the file to make; it must not exist.
        native: use TensorFlow's writer. Defaults to `None`: where TensorFlow is imported.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "events.out.tfevents.0.example"
    >>> records = open_record_file(path, native=False)
    >>> records.write(b"hello"); records.close()
    >>> len(path.read_bytes())  # 8 length, 4 CRC, 5 data, 4 CRC
    21
    """
    tf = sys.modules.get("tensorflow")
    if native is None:
        native = tf is not None and hasattr(tf, "io")
    if not native:
        return PlainRecordFile(path)
    if path.exists():  # TensorFlow's writer would replace it; the plain one refuses
        raise FileExistsError(17, "File exists", str(path))
    import tensorflow as tf

    return tf.io.TFRecordWriter(str(path))


class TensorBoardWriter:
    """Writes a record into a TensorBoard log folder, adding only what is new at each call.

    Call `write` with the history as it grows (`GradientMonitor` does, each
    time it fetches rows): each call writes the rows and activation histograms
    not written yet, one event per step. A different history (a new record)
    starts again from its first row. The event file is made at the first
    write, and each call leaves it complete on disk.

    Args:
        logdir: the folder to write into (made if missing); point
            ``tensorboard --logdir`` at it or at a folder above it.

    Example:

    >>> import tempfile
    >>> h = GradientHistory(["dense"])
    >>> h.append([0, 1, 2], {"grad_norm": np.ones((3, 1))})
    >>> board = TensorBoardWriter(tempfile.mkdtemp())
    >>> board.write(h), board.write(h)
    (3, 0)
    >>> board.close()
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        self.logdir = Path(logdir)
        self._path: Path | None = None
        self._records: RecordFile | None = None
        self._history: GradientHistory | None = None
        self._rows = 0  # rows of _history written
        self._moments: set[tuple[str, int]] = set()  # histograms written: (moment, step)
        self._described: set[str] = set()  # tags whose metadata is written (once a file, as tf.summary does)
        self._heads: dict[str, bytes] = {}  # a scalar value's encoding up to its float, by tag

    def __repr__(self) -> str:
        return f"TensorBoardWriter({str(self.logdir)!r}, rows={self._rows})"

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def path(self) -> Path | None:
        """The event file, once made."""
        return self._path if self._records is not None else None

    def open(self) -> Path:
        """Makes the folder and the event file now (else the first write does); returns the file.

        Raises:
            OSError: the folder or the file cannot be made.
        """
        if self._records is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            # The name TensorBoard looks for ("tfevents"), made unique as tf.summary makes it.
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{id(self)}"
            self._path = self.logdir / f"{name}.gradscope"
            self._records = open_record_file(self._path)
            self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
            self._records.flush()
        return self._path

    def write(self, history: GradientHistory) -> int:
        """Writes the rows and activation histograms of ``history`` not written yet; returns the rows written.

        Args:
            history: the record (the same object as it grows).
        """
        if history is not self._history:
            self._history, self._rows, self._moments = history, 0, set()
        new = history.since(self._rows)
        if len(new):
            self._write_rows(new)
        self._rows = len(history)
        for moment, hist in history.histograms.items():
            if (moment, int(hist["step"])) not in self._moments:
                self._moments.add((moment, int(hist["step"])))
                self._write_histograms(history.layers, hist)
        self.flush()
        return len(new)

    def write_verdict(self, history: GradientHistory, diagnosis: Diagnosis) -> None:
        """Writes the diagnosis as the text summary ``verdict``, at the history's last step.

        Args:
            history: the record the diagnosis was made from.
            diagnosis: the diagnosis.
        """
        step = int(history.steps[-1]) if len(history) else 0
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[verdict_markdown(history, diagnosis).encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        )
        summary = summary_pb2.Summary(value=[self._value(VERDICT_TAG, tensor, text_metadata)])
        self._add(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        self.flush()

    def flush(self) -> None:
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        """Closes the event file; a later write opens a new one."""
        if self._records is not None:
            self._records.close()
            self._records = None
            self._described, self._heads = set(), {}

    # -- building events -----------------------------------------------------------------
    def _write_rows(self, rows: GradientHistory) -> None:
        tags = layer_tags(rows.layers)
        columns: list[tuple[str, np.ndarray]] = []  # (tag, value of each row)
        for series in LAYER_SERIES:
            values = rows.get(series)
            if values is not None:
                columns += [(f"{series}/{tag}", values[:, i]) for i, tag in enumerate(tags)]
        scalars = rows.scalars
        columns += [(name, scalars[name]) for name in SCALAR_SERIES if name in scalars]
        if not columns:
            return
        tags = [tag for tag, _ in columns]
        table = np.stack([c for _, c in columns], axis=1).astype("<f4")  # TensorBoard's scalars are float32
        kept = ~np.isnan(table)  # NaN: not written
        floats = table.tobytes()
        width = 4 * len(tags)
        # Encoded by hand, tens of times faster than a message per value: a
        # deep model writes thousands of values a step. The first value of
        # each tag goes through the protocol buffers, with its metadata.
        self.open()
        now = struct.pack("<d", time.time())
        for r, step in enumerate(rows.steps.tolist()):
            parts = []
            at = r * width
            for c in np.flatnonzero(kept[r]).tolist():
                tag, value = tags[c], floats[at + 4 * c: at + 4 * c + 4]
                if tag in self._heads:
                    parts += (self._heads[tag], value)
                else:
                    parts.append(self._first_scalar(tag, table[r, c]))
            if parts:
                summary = b"".join(parts)
                self._records.write(b"\x09" + now + b"\x10" + _varint(step) + b"\x2a" + _varint(len(summary)) + summary)

    def _write_histograms(self, layers: Sequence[str], hist: dict[str, Any]) -> None:
        counts = np.asarray(hist["counts"], np.float64)
        ranges = np.asarray(hist["ranges"], np.float64)
        values = []
        for tag, row, (lo, hi) in zip(layer_tags(layers), counts, ranges, strict=False):
            # A layer with no activation statistics has no samples.
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo and row.sum() > 0):
                continue
            edges = np.linspace(lo, hi, len(row) + 1)
            # TensorBoard's histogram layout: one (left edge, right edge, count) row per bin.
            buckets = np.stack([edges[:-1], edges[1:], row], axis=1)
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_DOUBLE, double_val=buckets.ravel().tolist(),
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in buckets.shape]),
            )
            values.append(self._value(f"{HISTOGRAM_PREFIX}/{tag}", tensor, histogram_metadata))
        if values:
            summary = summary_pb2.Summary(value=values)
            self._add(event_pb2.Event(wall_time=time.time(), step=int(hist["step"]), summary=summary))

    def _value(self, tag: str, tensor: tensor_pb2.TensorProto, plugin: Any) -> summary_pb2.Summary.Value:
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        if tag not in self._described:
            # The plugin's metadata is read from a tag's first value in a file; later ones need none.
            self._described.add(tag)
            value.metadata.CopyFrom(plugin.create_summary_metadata(display_name=None, description=None))
        return value

    def _first_scalar(self, tag: str, value: np.float32) -> bytes:
        """The tag's first value (with the plugin's metadata), encoded as one ``Summary.value`` field."""
        encoded = self._value(tag, _float_tensor(float(value)), scalar_metadata).SerializeToString()
        self._heads[tag] = _scalar_head(tag)
        return b"\x0a" + _varint(len(encoded)) + encoded

    def _add(self, event: event_pb2.Event) -> None:
        self.open()
        self._records.write(event.SerializeToString())


_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()


def _float_tensor(value: float) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value], tensor_shape=_SCALAR_SHAPE)


# The protocol buffer encoding of a scalar, field by field (see event.proto,
# summary.proto and tensor.proto): Event {1: wall_time (double), 2: step
# (varint), 5: summary}; Summary {1: value, repeated}; Summary.Value {1: tag,
# 8: tensor}; TensorProto {1: dtype = DT_FLOAT (1), 2: shape = {}, 5: float_val (packed)}.
_FLOAT_TENSOR = b"\x08\x01\x12\x00\x2a\x04"  # followed by the 4 bytes of the float


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _scalar_head(tag: str) -> bytes:
    """A ``Summary.value`` field holding a float32 scalar under ``tag``, all but the float's 4 bytes."""
    name = tag.encode("utf-8")
    tensor = _FLOAT_TENSOR + b"\0\0\0\0"
    value = b"\x0a" + _varint(len(name)) + name + b"\x42" + _varint(len(tensor)) + tensor
    return b"\x0a" + _varint(len(value)) + value[:-4]


def export_run(history: GradientHistory, diagnosis: Diagnosis, logdir: str | os.PathLike) -> Path:
    """Writes a whole record into a new event file in ``logdir``; returns the file.

    The same file `GradientMonitor(tensorboard=...)` writes while training:
    every step's scalars, the activation histograms and the verdict.

    Args:
        history: the record, e.g. `gradscope.history.load_run` of a run folder.
        diagnosis: its diagnosis (`gradscope.diagnosis.diagnose`).
        logdir: the folder to write into (made if missing).

    Raises:
        OSError: the folder or the file cannot be written.

    Example:

    >>> import tempfile
    >>> from gradscope.diagnosis import diagnose
    >>> h = GradientHistory(["dense"])
    >>> h.append([0, 1], {"grad_norm": np.ones((2, 1))})
    >>> export_run(h, diagnose(h), tempfile.mkdtemp()).name.startswith("events.out.tfevents.")
    True
    """
    with TensorBoardWriter(logdir) as board:
        path = board.open()
        board.write(history)
        board.write_verdict(history, diagnosis)
    return path
