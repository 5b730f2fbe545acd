"""Training data for ``gradscope run``: MNIST from files or Keras, or the offline fallback.

One entry point, `load_dataset`, returns a `Dataset`: flattened float32 pixels in
[0, 1], int64 labels, a train and a validation split, and one-line `notices` the
CLI prints (a fallback was used, files were split). Sources, in order:

* ``path``: a folder of standard MNIST IDX files (``.gz`` or not) or an ``.npz``
  with ``x_train, y_train, x_test, y_test``. IDX is parsed here with numpy.
* ``"mnist"``: ``keras.datasets.mnist.load_data()`` (cache or download); when that
  fails, scikit-learn's bundled 8x8 digits, with a notice saying so.
* ``"digits"``: scikit-learn's 8x8 digits directly.

Every bad input raises `DataError` with a one-line message (the CLI exits 2).

Example:

>>> ds = load_dataset("digits", limit=100)
>>> ds.x_train.shape, ds.num_classes
((100, 64), 10)
"""

from __future__ import annotations

import gzip
import math
import os
import socket
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: Names accepted by `load_dataset`.
DATASET_NAMES = ("mnist", "digits")

#: Largest array, in bytes, read from one IDX file or one .npz member (2 GiB;
#: MNIST's training images take 47 MB). A larger declared size is refused
#: before anything is allocated or decompressed.
MAX_ARRAY_BYTES = 2 * 1024**3

#: Most classes an .npz's labels may imply: K = largest label + 1 must not exceed
#: this, nor the number of training samples.
MAX_CLASSES = 1000

#: Classes of MNIST (IDX files, Keras) and of the 8x8 digits: labels must be 0..9.
MNIST_CLASSES = 10

_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
_IDX_EXPECTED = "expected MNIST images (magic 0x00000803) or labels (magic 0x00000801)"
# Deflate cannot do better than about 1032:1, so a gzip file declaring more data
# than that is damaged or hostile: refused before decompressing a byte of it.
_GZIP_MAX_RATIO = 1032
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_PIXELS_ACCEPTED = "images must be uint8 0..255 (any integer type) or floats in [0, 1]"
_MNIST_HOST = "storage.googleapis.com"


class DataError(Exception):
    """Bad or missing training data; the message is one line, fit for a terminal."""


@dataclass(repr=False)
class Dataset:
    """A train/validation split of flattened images in [0, 1] with integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    notices: list[str] = field(default_factory=list)

    @property
    def input_dim(self) -> int:
        """Features per sample: 784 for MNIST, 64 for the 8x8 digits."""
        return int(self.x_train.shape[1])

    def one_hot(self, y: np.ndarray) -> np.ndarray:
        """float32 one-hot rows of ``num_classes`` columns, e.g. for an MSE loss."""
        return np.eye(self.num_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, "
                f"val={self.x_val.shape}, classes={self.num_classes})")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a uint8 IDX file (MNIST images or labels), gzipped or not.

    Only unsigned-byte data with 3 dimensions (images) or 1 (labels) is read. The
    size the header declares is checked against the file, and against
    `MAX_ARRAY_BYTES`, before anything is allocated; any other content raises
    `DataError`.

    Args:
        path: the file; gzip is recognised by its content, not its name.

    Returns:
        A read-only uint8 array of the declared shape.

    Example:

    >>> read_idx("t10k-labels-idx1-ubyte.gz")[:3]      # doctest: +SKIP
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            gzipped = file.read(2) == b"\x1f\x8b"  # gzip's magic, so a renamed file still reads
            file.seek(0)
            if not gzipped:
                return _parse_idx(path, file, size)
            try:
                with gzip.GzipFile(fileobj=file) as stream:
                    return _parse_idx(path, stream, None, max_bytes=size * _GZIP_MAX_RATIO)
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"{path} is a damaged or truncated gzip file ({_reason(err)}); "
                                "expected a gzipped MNIST IDX file") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {_reason(err)}") from None


def _parse_idx(path: Path, stream: BinaryIO, size: int | None, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array in an IDX ``stream``; ``size`` is the file's size when not compressed."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(head)} bytes); {_IDX_EXPECTED}")
    magic = int.from_bytes(head, "big")
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        if magic >> 16:
            why = "an IDX file starts with two zero bytes"
        elif (magic >> 8) & 0xFF != 0x08:
            why = f"data type code 0x{(magic >> 8) & 0xFF:02x}, only 0x08 (unsigned byte) is read"
        else:
            why = f"{magic & 0xFF} dimensions, only 3 (images) or 1 (labels) are read"
        raise DataError(f"{path} is not an MNIST IDX file: magic number 0x{magic:08x} ({why}); {_IDX_EXPECTED}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path} is truncated: its header is incomplete ({4 + len(raw_dims)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python ints: numpy's product would overflow on hostile dims
    if expected > min(MAX_ARRAY_BYTES, max_bytes):
        limit = (f"more than the {MAX_ARRAY_BYTES:,} bytes accepted" if expected > MAX_ARRAY_BYTES
                 else f"more than its {max_bytes // _GZIP_MAX_RATIO:,} compressed bytes can hold")
        raise DataError(f"{path}: its header {dims} declares {expected:,} data bytes, {limit}")
    if size is not None and size - header != expected:  # before reading: the size is known
        raise DataError(f"{path} holds {size - header:,} data bytes, but its header {dims} says {expected:,}")
    raw = stream.read(expected + 1)  # one more, to notice extra data in a gzip stream
    if len(raw) != expected:
        held = f"{len(raw):,}" if len(raw) < expected else f"more than {expected:,}"
        raise DataError(f"{path} holds {held} data bytes, but its header {dims} says {expected:,}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def load_dataset(name: str = "mnist", path: str | os.PathLike | None = None, *,
                 validation_fraction: float = 0.2, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """Load training and validation data; see the module docstring for the sources.

    With ``path`` the files decide and ``name`` is only checked. A source without
    its own validation set is shuffled with ``seed`` and split, putting
    ``validation_fraction`` of it aside. ``limit`` keeps at most that many
    training samples.

    Every input is checked where it enters: images must be numbers, finite, with
    at least one pixel, uint8-scaled integers (0..255) or floats in [0, 1], and
    of one shape in training and validation; labels one whole number 0..K-1 per
    image, K = the largest label + 1. MNIST sources (IDX files, Keras, digits)
    allow labels 0..9 only; an .npz's K must be at least 2, at most `MAX_CLASSES`
    and at most its number of training samples.

    Args:
        name: ``"mnist"`` or ``"digits"``.
        path: a folder of MNIST IDX files or an ``.npz`` file.
        validation_fraction: the share put aside when the source has no validation set.
        seed: seeds that shuffle.
        limit: at most this many training samples.

    Returns:
        A `Dataset`: float32 pixels in [0, 1], int64 labels in 0..num_classes-1.

    Raises:
        DataError: on any bad argument or input, with a one-line message naming it.

    Example:

    >>> load_dataset("digits").notices
    []
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of samples, got {limit}")
    split = _Splitter(validation_fraction, seed)
    if path is not None:
        ds = _from_path(Path(path).expanduser(), split)
    elif name == "digits":
        ds = split.dataset("digits (scikit-learn, 8x8)", *_digits(), classes=MNIST_CLASSES)
    else:
        ds = _keras_mnist_or_digits(split)
    if limit is not None and len(ds.y_train) > limit:
        ds.notices.append(f"kept {limit:,} of the {len(ds.y_train):,} training samples (limit)")
        ds.x_train, ds.y_train = ds.x_train[:limit], ds.y_train[:limit]
    return ds


@dataclass
class _Splitter:
    """Turns (x, y) pairs into a `Dataset`, splitting off validation when needed."""

    fraction: float
    seed: int

    def dataset(self, name: str, x: np.ndarray, y: np.ndarray,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
                classes: int | None, names: tuple[str, ...] = ("images", "labels")) -> Dataset:
        """Checks and converts; ``classes`` is K, or None to infer it from the labels.

        ``names`` says where each array came from, for the messages: two names, or
        four with a validation set.
        """
        x_name, y_name = names[:2]
        x, y = _pixels(x, x_name), _labels(y, len(x), x_name, y_name, classes)
        if x_val is None:
            order = np.random.default_rng(self.seed).permutation(len(y))
            n_val = int(round(len(y) * self.fraction))
            if n_val == 0 or n_val == len(y):
                raise DataError(f"{x_name}: cannot split {len(y):,} samples with validation fraction "
                                f"{self.fraction}; give more samples")
            val, train = order[:n_val], order[n_val:]
            x, y, x_val, y_val = x[train], y[train], x[val], y[val]
            xv_name, yv_name = x_name, y_name
        else:
            xv_name, yv_name = names[2:4]
            x_val, y_val = _pixels(x_val, xv_name), _labels(y_val, len(x_val), xv_name, yv_name, classes)
            if x.shape[1:] != x_val.shape[1:]:
                raise DataError(f"{x_name} holds images of shape {_shape(x)} but {xv_name} of shape "
                                f"{_shape(x_val)}: training and validation images must have the same shape")
        top, top_name = max((int(y.max()), y_name), (int(y_val.max()), yv_name))
        if classes is None:  # inferred: K = largest label + 1, within reason
            if top + 1 > len(y):
                raise DataError(f"{top_name} holds label {top}, implying {top + 1:,} classes for only "
                                f"{len(y):,} training samples: labels must be 0..K-1 with K at most "
                                "the number of training samples")
            if top == 0:
                raise DataError(f"{y_name} and {yv_name} hold only class 0: labels must be 0..K-1 with "
                                "at least 2 classes")
            if yv_name != y_name and int(y_val.max()) > int(y.max()):
                # A class only the validation data has would widen the output
                # layer with a unit no training sample ever asks for.
                raise DataError(f"{yv_name} holds label {int(y_val.max())}, but the training labels "
                                f"go up to {int(y.max())}: every class must appear in training")
        x = x.reshape(len(x), -1)
        x_val = x_val.reshape(len(x_val), -1)
        return Dataset(name, x, y, x_val, y_val, top + 1)

    def label(self) -> str:
        return f"{round((1 - self.fraction) * 100)}/{round(self.fraction * 100)}"


def _reason(err: BaseException) -> str:
    """An exception's message, on one line, for a `DataError`."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _shape(x: np.ndarray) -> str:
    return "x".join(map(str, x.shape[1:]))


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _pixels(x: np.ndarray, name: str) -> np.ndarray:
    """float32 pixels in [0, 1], in the shape given (samples first), or `DataError`."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":  # strings, complex, dates, records, objects
        raise DataError(f"{name} has dtype {x.dtype}: {_PIXELS_ACCEPTED}")
    if x.ndim < 2:
        raise DataError(f"{name} must hold one image per sample (2 or more dimensions), got shape {x.shape}")
    if len(x) == 0 or x[0].size == 0:
        raise DataError(f"{name} holds no {'samples' if len(x) == 0 else 'pixels'} (shape {x.shape}); "
                        "expected samples first, then pixels")
    if x.nbytes > MAX_ARRAY_BYTES:
        raise DataError(f"{name} takes {x.nbytes:,} bytes, more than the {MAX_ARRAY_BYTES:,} accepted")
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{name} holds integer pixels from {lo} to {hi}: integer images must be "
                            "0..255 (the uint8 scale); pass floats in [0, 1] otherwise")
        return (x / 255.0).astype(np.float32)  # MNIST's uint8 scale
    if x.dtype.kind == "f":
        nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        if nan or inf:
            raise DataError(f"{name} holds {nan:,} NaN and {inf:,} infinite pixels: pixels must be finite; "
                            f"{_PIXELS_ACCEPTED}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
        converted = x.astype(np.float32)
    if converted.min() < 0.0 or converted.max() > 1.0:
        raise DataError(f"{name} holds pixels from {x.min():g} to {x.max():g}: float images must already be "
                        "scaled to [0, 1]; pass uint8 0..255 otherwise")
    return converted


def _labels(y: np.ndarray, n: int, x_name: str, y_name: str, classes: int | None) -> np.ndarray:
    """int64 labels in 0..K-1, one per image, or `DataError`; K is ``classes`` or at most `MAX_CLASSES`."""
    y = np.asarray(y)
    accepted = f"labels must be whole numbers 0..{(classes or MAX_CLASSES) - 1}, one per image"
    if y.ndim == 2 and len(y) == n and y.shape[1] > 1:
        raise DataError(f"{y_name} has shape {y.shape}, like one-hot rows: {accepted} (class numbers)")
    if y.ndim != 1:
        raise DataError(f"{y_name} has shape {y.shape}: {accepted} (a 1-D array)")
    if len(y) != n:
        raise DataError(f"{x_name} has {n:,} images but {y_name} {len(y):,} labels: they must match one to one")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            i = _first(bad)
            raise DataError(f"{y_name} holds {int(bad.sum()):,} NaN or infinite labels, e.g. {y[i]} at "
                            f"index {i}: {accepted}")
        bad = y != np.floor(y)
        if bad.any():
            i = _first(bad)
            raise DataError(f"{y_name} holds {int(bad.sum()):,} labels that are not whole numbers, e.g. "
                            f"{y[i]} at index {i}: {accepted}")
    elif y.dtype.kind not in "iu":  # bool, strings, complex, dates, records, objects
        raise DataError(f"{y_name} has dtype {y.dtype}: {accepted} (an integer array)")
    bad = y < 0
    if bad.any():
        i = _first(bad)
        raise DataError(f"{y_name} holds {int(bad.sum()):,} negative labels, e.g. {y[i]} at index {i}: {accepted}")
    limit = classes or MAX_CLASSES
    bad = y >= limit
    if bad.any():  # checked before the cast: a huge float or uint64 label must not wrap around
        i = _first(bad)
        why = f"the data has {classes} classes" if classes else f"at most {MAX_CLASSES:,} classes are accepted"
        raise DataError(f"{y_name} holds {int(bad.sum()):,} labels out of range, e.g. {y[i]} at index {i}: "
                        f"{why}, so {accepted}")
    return y.astype(np.int64)


def _find_idx(folder: Path, prefix: str, kind: str, dim: int) -> Path | None:
    for stem in (f"{prefix}-{kind}-idx{dim}-ubyte", f"{prefix}-{kind}.idx{dim}-ubyte"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, str, str] | None:
    images, labels = _find_idx(folder, prefix, "images", 3), _find_idx(folder, prefix, "labels", 1)
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        raise DataError(f"{folder} has {(images or labels).name} but not its "
                        f"{'labels' if labels is None else 'images'} file")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1:
        raise DataError(f"{images.name} must hold images and {labels.name} labels (swapped?)")
    if len(x) != len(y):
        raise DataError(f"{images.name} has {len(x):,} images but {labels.name} {len(y):,} labels")
    return x, y, images.name, labels.name


def _check_npz_member(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Refuses a member that is not a plain numeric .npy, or declares more than it holds.

    Runs before `numpy.load`, which allocates the declared shape before reading
    and has no size limit of its own.
    """
    # The member numpy will read: the exact name first, then with ".npy".
    member = key if key in archive.namelist() else f"{key}.npy"
    info = archive.getinfo(member)
    if info.file_size > MAX_ARRAY_BYTES:
        raise DataError(f"{path.name}: {key} holds {info.file_size:,} bytes, more than the "
                        f"{MAX_ARRAY_BYTES:,} accepted")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):  # 3.0 only changes the header's text encoding
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path.name}: {key} holds Python objects (a pickled array), which are not loaded "
                        "for safety; save numeric arrays")
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header:
        raise DataError(f"{path.name}: {key} declares shape {shape} of {dtype} ({declared:,} bytes) but "
                        f"holds {info.file_size - header:,} bytes; the file is damaged")


def _read_npz(path: Path, keys: tuple[str, ...] = _NPZ_KEYS) -> list[np.ndarray]:
    if not zipfile.is_zipfile(path):  # else numpy blames pickles, which misleads
        raise DataError(f"{path} is not an .npz archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as archive:
            present = {name.removesuffix(".npy") for name in archive.namelist()}
            missing = set(keys) - present
            if missing:
                raise DataError(f"{path.name} lacks the keys {', '.join(sorted(missing))} "
                                f"(expected {', '.join(keys)})")
            for key in keys:
                _check_npz_member(path, archive, key)
        with np.load(path, allow_pickle=False) as f:  # never unpickle: the file may be hostile
            return [np.asarray(f[key]) for key in keys]
    except (OSError, EOFError, ValueError, KeyError, MemoryError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as err:
        # Damaged archive or .npy header, CRC errors; zipfile raises RuntimeError for an
        # encrypted member and NotImplementedError for an unknown compression method.
        raise DataError(f"cannot read {path}: {_reason(err)}; expected an .npz of numeric arrays "
                        f"{', '.join(keys)}") from None


def npz_keys(path: str | os.PathLike) -> set[str]:
    """The names of the arrays in an ``.npz`` file, read from its index only.

    Args:
        path: the file.

    Raises:
        DataError: the file cannot be read or is not a zip archive.

    Example:

    >>> npz_keys("pairs.npz")  # doctest: +SKIP
    {'x', 'y'}
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path} is not an .npz archive (not a zip file)")
        with zipfile.ZipFile(path) as archive:
            return {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path}: {_reason(err)}") from None


def load_xy(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``x`` and targets ``y`` of any shape and numeric type from an ``.npz`` file.

    Unlike `load_dataset`, nothing is scaled, flattened or split: the arrays
    come back as saved, once checked to be numeric, finite and of one sample
    per row each.

    Args:
        path: an ``.npz`` with arrays ``x`` and ``y`` (``np.savez(path, x=..., y=...)``).

    Returns:
        ``(x, y)``, samples first.

    Raises:
        DataError: a missing key, a damaged file, a non-numeric or non-finite
            array, or ``x`` and ``y`` of different lengths.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     np.savez(f"{folder}/xy.npz", x=np.zeros((4, 3, 2)), y=np.arange(4))
    ...     x, y = load_xy(f"{folder}/xy.npz")
    >>> x.shape, y.shape
    ((4, 3, 2), (4,))
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data path {path} does not exist" if not path.exists() else f"{path} is not a file")
    x, y = _read_npz(path, ("x", "y"))
    for key, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "biuf":
            raise DataError(f"{path.name}: {key} has dtype {array.dtype}; expected numbers")
        if array.ndim == 0 or len(array) == 0:
            raise DataError(f"{path.name}: {key} holds no samples (shape {array.shape}); expected samples first")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataError(f"{path.name}: {key} holds {int((~np.isfinite(array)).sum()):,} NaN or infinite "
                            "values; expected finite numbers")
    if len(x) != len(y):
        raise DataError(f"{path.name}: x has {len(x):,} samples but y {len(y):,}: they must match one to one")
    return x, y


def _from_path(path: Path, split: _Splitter) -> Dataset:
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"{path} is neither a folder of MNIST IDX files nor an .npz file")
        arrays = _read_npz(path)
        return split.dataset(path.stem, *arrays, classes=None, names=tuple(f"{path.name}: {k}" for k in _NPZ_KEYS))
    train, test = _read_pair(path, "train"), _read_pair(path, "t10k")
    if train and test:
        return split.dataset("mnist", *train[:2], *test[:2], classes=MNIST_CLASSES, names=(*train[2:], *test[2:]))
    if not (train or test):
        raise DataError(f"no MNIST IDX files in {path} (expected train-images-idx3-ubyte[.gz] "
                        "and friends, or t10k-*)")
    which = "test" if test else "training"
    pair = test or train
    ds = split.dataset(f"mnist ({which} files split {split.label()})", *pair[:2], classes=MNIST_CLASSES,
                       names=pair[2:])
    ds.notices.append(f"only the {len(ds.y_train) + len(ds.y_val):,} {which} images were found in "
                      f"{path}: using {len(ds.y_train):,} to train and {len(ds.y_val):,} to validate")
    return ds


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target  # pixel values are 0..16


def keras_mnist_cache() -> Path:
    """Where ``keras.datasets.mnist.load_data()`` keeps its download."""
    # Where keras.utils.get_file looks: Keras home, or /tmp/.keras when home is
    # read-only (Keras creates a missing home when it is imported).
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    if home.exists() and not os.access(home, os.W_OK):
        home = Path("/tmp" if Path("/tmp").is_dir() else tempfile.gettempdir()) / ".keras"
    return home / "datasets" / "mnist.npz"


def _host_resolves(host: str, seconds: float = 3.0) -> bool:
    # getaddrinfo ignores socket timeouts and can block for long without a resolver,
    # so ask in a daemon thread and stop waiting after `seconds`.
    answer: list[bool] = []

    def ask() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(answer)


def load_keras_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``keras.datasets.mnist.load_data()``, failing fast instead of hanging offline."""
    cache = keras_mnist_cache()
    shown = str(cache).replace(str(Path.home()), "~", 1)
    if not cache.is_file() and not _host_resolves(_MNIST_HOST):
        raise OSError(f"no network and no cache at {shown}")  # skips importing TF for nothing
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # a stalled download must not freeze the CLI
    try:
        return keras.datasets.mnist.load_data()
    except Exception as err:  # keras raises a bare Exception on URL failures
        # Keras words it "URL fetch failure on <url>: <errno> -- <reason>"; keep the reason.
        reason = str(err).split(" -- ")[-1].splitlines()[0][:100] if str(err) else type(err).__name__
        raise OSError(reason if cache.is_file() else f"download failed, no cache at {shown}: {reason}") from err
    finally:
        socket.setdefaulttimeout(previous)


def _keras_mnist_or_digits(split: _Splitter) -> Dataset:
    try:
        (x, y), (x_val, y_val) = load_keras_mnist()
    except Exception as err:
        ds = split.dataset("digits (scikit-learn, 8x8)", *_digits(), classes=MNIST_CLASSES)
        total = len(ds.y_train) + len(ds.y_val)
        ds.notices.append(f"MNIST could not be loaded ({err}): using scikit-learn's bundled 8x8 "
                          f"digits instead ({total:,} images, {ds.input_dim} inputs). "
                          "Pass --data PATH to use MNIST files.")
        return ds
    return split.dataset("mnist", x, y, x_val, y_val, classes=MNIST_CLASSES,
                         names=("Keras MNIST x_train", "y_train", "x_test", "y_test"))
