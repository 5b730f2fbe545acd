"""gradscope.data: IDX/npz reading, splitting, the offline fallback.

The MNIST facts come from the README of ../shared/data/mnist (the real test set);
tests that need those files skip when the folder is absent.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import MNIST_DIR
from gradscope import data
from gradscope.data import DataError, Dataset, load_dataset, read_idx

IMAGES_GZ = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
LABELS_GZ = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

_mnist_missing = pytest.mark.skipif(
    not (IMAGES_GZ.is_file() and LABELS_GZ.is_file()), reason=f"MNIST test files not in {MNIST_DIR}"
)


def needs_mnist(test):
    """Reads the real MNIST files: skipped without them, and slow."""
    return pytest.mark.slow(_mnist_missing(test))


@pytest.fixture(scope="module")
def mnist_test_files() -> tuple[np.ndarray, np.ndarray]:
    if not (IMAGES_GZ.is_file() and LABELS_GZ.is_file()):
        pytest.skip(f"MNIST test files not in {MNIST_DIR}")
    return read_idx(IMAGES_GZ), read_idx(LABELS_GZ)


@pytest.mark.slow
def test_read_idx_matches_published_facts(mnist_test_files):
    images, labels = mnist_test_files
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,)
    assert labels[0] == 7
    assert np.bincount(labels).tolist() == LABEL_COUNTS
    assert images.mean() == pytest.approx(33.79, abs=0.01)


@needs_mnist
def test_test_files_only_are_split_with_a_notice(mnist_test_files):
    ds = load_dataset(path=MNIST_DIR, validation_fraction=0.2, seed=0)
    assert (len(ds.y_train), len(ds.y_val)) == (8_000, 2_000)
    assert ds.notices == [
        f"only the 10,000 test images were found in {MNIST_DIR}: using 8,000 to train and 2,000 to validate"
    ]
    assert ds.name == "mnist (test files split 80/20)"
    assert ds.input_dim == 784 and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # The split is a permutation: reassembled, it is the whole test set again.
    x = np.concatenate([ds.x_train, ds.x_val])
    y = np.concatenate([ds.y_train, ds.y_val])
    assert np.bincount(y).tolist() == LABEL_COUNTS
    assert x.mean() * 255 == pytest.approx(33.79, abs=0.01)
    # v / 255 in float32 rounds back to v exactly, so the original bytes can be compared.
    pixels = np.round(x * 255).astype(np.int64)
    original = mnist_test_files[0].reshape(10_000, -1).astype(np.int64)
    assert np.array_equal(np.sort(pixels.sum(axis=1)), np.sort(original.sum(axis=1)))


@needs_mnist
def test_split_is_seeded_and_limit_keeps_train_only():
    a = load_dataset(path=MNIST_DIR, seed=3, limit=500)
    b = load_dataset(path=MNIST_DIR, seed=3, limit=500)
    c = load_dataset(path=MNIST_DIR, seed=4, limit=500)
    assert np.array_equal(a.y_train, b.y_train) and not np.array_equal(a.y_train, c.y_train)
    assert (len(a.y_train), len(a.y_val)) == (500, 2_000)


@needs_mnist
def test_gzip_and_plain_idx_read_the_same(tmp_path, mnist_test_files):
    plain = tmp_path / "t10k-images.idx3-ubyte"  # the dotted variant of the name
    with gzip.open(LABELS_GZ) as src, open(tmp_path / "t10k-labels-idx1-ubyte", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with gzip.open(IMAGES_GZ) as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert np.array_equal(read_idx(plain), mnist_test_files[0])
    from_plain = load_dataset(path=tmp_path, seed=1)
    from_gz = load_dataset(path=MNIST_DIR, seed=1)
    assert np.array_equal(from_plain.x_train, from_gz.x_train)
    assert np.array_equal(from_plain.y_val, from_gz.y_val)


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_train_and_test_files_give_train_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", 0x803, rng.integers(0, 256, (n, 4, 4)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", 0x801, np.arange(n) % 3)
    ds = load_dataset(path=tmp_path)
    assert (ds.x_train.shape, ds.x_val.shape, ds.num_classes) == ((30, 16), (12, 16), 3)
    assert ds.name == "mnist" and ds.notices == []


def test_bad_magic_number_is_a_clear_error(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    _write_idx(bad, 0x804, np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"not an MNIST IDX file: magic number 0x00000804"):
        read_idx(bad)


def test_truncated_and_mismatched_idx_are_errors(tmp_path):
    images = tmp_path / "t10k-images-idx3-ubyte"
    _write_idx(images, 0x803, np.zeros((3, 2, 2)))
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(DataError, match="data bytes"):
        read_idx(images)
    _write_idx(images, 0x803, np.zeros((3, 2, 2)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", 0x801, np.zeros(4))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        load_dataset(path=tmp_path)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 20),
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": np.arange(5),
    }
    np.savez(tmp_path / "small.npz", **arrays)
    ds = load_dataset(path=tmp_path / "small.npz")
    assert ds.x_train.shape == (20, 784) and ds.x_val.shape == (5, 784)
    np.testing.assert_allclose(ds.x_train * 255, arrays["x_train"].reshape(20, -1), atol=1e-4)
    assert ds.y_val.tolist() == [0, 1, 2, 3, 4] and ds.notices == []

    np.savez(tmp_path / "wrong.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match="lacks the keys x_test, y_test"):
        load_dataset(path=tmp_path / "wrong.npz")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "/no/such/mnist"}, "does not exist"),
        ({"name": "cifar"}, "unknown data set 'cifar': choose one of mnist, digits"),
        ({"name": "digits", "validation_fraction": 1.0}, "between 0 and 1"),
        ({"name": "digits", "limit": 0}, "positive"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset(**kwargs)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_dataset(path=tmp_path)


def test_digits_loader():
    ds = load_dataset("digits", seed=0)
    assert ds.input_dim == 64 and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_val) == 1797
    for x in (ds.x_train, ds.x_val):
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert ds.notices == []


def test_one_hot():
    ds = Dataset("toy", np.zeros((3, 2), np.float32), np.array([0, 2, 1]),
                 np.zeros((1, 2), np.float32), np.array([1]), num_classes=3)
    encoded = ds.one_hot(ds.y_train)
    assert encoded.shape == (3, 3) and encoded.dtype == np.float32
    assert encoded.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_mnist_falls_back_to_digits_when_keras_cannot_load(monkeypatch):
    # Stands in for "offline, no cache" without touching the network or TensorFlow.
    def unavailable():
        raise OSError("no network and no cache at ~/.keras/datasets/mnist.npz")

    monkeypatch.setattr(data, "load_keras_mnist", unavailable)
    ds = load_dataset("mnist")
    assert ds.name == "digits (scikit-learn, 8x8)" and ds.input_dim == 64
    assert ds.notices == [
        "MNIST could not be loaded (no network and no cache at ~/.keras/datasets/mnist.npz): "
        "using scikit-learn's bundled 8x8 digits instead (1,797 images, 64 inputs). "
        "Pass --data PATH to use MNIST files."
    ]


def test_offline_without_cache_skips_keras(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "keras_mnist_cache", lambda: tmp_path / "datasets" / "mnist.npz")
    monkeypatch.setattr(data, "_host_resolves", lambda host, seconds=3.0: False)
    with pytest.raises(OSError, match="no network and no cache at"):
        data.load_keras_mnist()


def test_the_keras_cache_is_where_keras_would_look(monkeypatch, tmp_path):
    # A writable KERAS_HOME is used as is, even when /tmp/.keras holds a copy:
    # keras.utils.get_file only falls back to /tmp/.keras for a read-only home.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert data.keras_mnist_cache() == tmp_path / "home" / "datasets" / "mnist.npz"
    (tmp_path / "home").mkdir()
    assert data.keras_mnist_cache() == tmp_path / "home" / "datasets" / "mnist.npz"
    monkeypatch.delenv("KERAS_HOME")
    assert data.keras_mnist_cache() == Path("~/.keras/datasets/mnist.npz").expanduser()
