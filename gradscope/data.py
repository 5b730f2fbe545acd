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
import os
import socket
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Names accepted by `load_dataset`.
DATASET_NAMES = ("mnist", "digits")

_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
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

    >>> read_idx("t10k-labels-idx1-ubyte.gz")[:3]      # doctest: +SKIP
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic, so a renamed file still reads
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        raise DataError(f"{path} is not an MNIST IDX file: magic number 0x{magic:08x}, "
                        f"expected 0x{_IMAGES_MAGIC:08x} (images) or 0x{_LABELS_MAGIC:08x} (labels)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is incomplete")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header:,} data bytes, "
                        f"but its header {dims} says {expected:,}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_dataset(name: str = "mnist", path: str | os.PathLike | None = None, *,
                 validation_fraction: float = 0.2, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """Load training and validation data; see the module docstring for the sources.

    With ``path`` the files decide and ``name`` is only checked. A source without
    its own validation set is shuffled with ``seed`` and split, putting
    ``validation_fraction`` of it aside. ``limit`` keeps at most that many
    training samples.

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
        ds = split.dataset("digits (scikit-learn, 8x8)", *_digits())
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
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> Dataset:
        x, y = _pixels(x), _labels(y, len(x))
        if x_val is None:
            order = np.random.default_rng(self.seed).permutation(len(y))
            n_val = int(round(len(y) * self.fraction))
            if n_val == 0 or n_val == len(y):
                raise DataError(f"cannot split {len(y):,} samples with validation fraction {self.fraction}")
            val, train = order[:n_val], order[n_val:]
            x, y, x_val, y_val = x[train], y[train], x[val], y[val]
        else:
            x_val, y_val = _pixels(x_val), _labels(y_val, len(x_val))
        if x.shape[1] != x_val.shape[1]:
            raise DataError(f"training samples have {x.shape[1]} features but validation ones {x_val.shape[1]}")
        classes = int(max(y.max(), y_val.max())) + 1
        return Dataset(name, x, y, x_val, y_val, classes)

    def label(self) -> str:
        return f"{round((1 - self.fraction) * 100)}/{round(self.fraction * 100)}"


def _pixels(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"images must be an array of samples, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        return (x.reshape(len(x), -1) / 255.0).astype(np.float32)  # MNIST's uint8 scale
    x = x.reshape(len(x), -1).astype(np.float32)
    if x.min() < 0.0 or x.max() > 1.0:
        raise DataError("float images must already be scaled to [0, 1]; pass uint8 0..255 otherwise")
    return x


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"{n:,} images but labels of shape {y.shape}: they must match one to one")
    if not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise DataError("labels must be non-negative integers")
    return y.astype(np.int64)


def _find_idx(folder: Path, prefix: str, kind: str, dim: int) -> Path | None:
    for stem in (f"{prefix}-{kind}-idx{dim}-ubyte", f"{prefix}-{kind}.idx{dim}-ubyte"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
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
    return x, y


def _from_path(path: Path, split: _Splitter) -> Dataset:
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"{path} is neither a folder of MNIST IDX files nor an .npz file")
        if not zipfile.is_zipfile(path):  # else numpy blames pickles, which misleads
            raise DataError(f"{path} is not an .npz archive (not a zip file)")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
                if missing:
                    raise DataError(f"{path.name} lacks the keys {', '.join(sorted(missing))} "
                                    "(expected x_train, y_train, x_test, y_test)")
                arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except (OSError, ValueError, zipfile.BadZipFile) as err:  # damaged, or object arrays inside
            raise DataError(f"cannot read {path}: {err}") from None
        return split.dataset(path.stem, *arrays)
    train, test = _read_pair(path, "train"), _read_pair(path, "t10k")
    if train and test:
        return split.dataset("mnist", *train, *test)
    if not (train or test):
        raise DataError(f"no MNIST IDX files in {path} (expected train-images-idx3-ubyte[.gz] "
                        "and friends, or t10k-*)")
    which = "test" if test else "training"
    ds = split.dataset(f"mnist ({which} files split {split.label()})", *(test or train))
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
        ds = split.dataset("digits (scikit-learn, 8x8)", *_digits())
        total = len(ds.y_train) + len(ds.y_val)
        ds.notices.append(f"MNIST could not be loaded ({err}): using scikit-learn's bundled 8x8 "
                          f"digits instead ({total:,} images, {ds.input_dim} inputs). "
                          "Pass --data PATH to use MNIST files.")
        return ds
    return split.dataset("mnist", x, y, x_val, y_val)
