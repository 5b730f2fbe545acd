"""gradscope.data: IDX/npz reading, splitting, the offline fallback.

The MNIST facts come from the README of ../shared/data/mnist (the real test set);
tests that need those files skip when the folder is absent.
"""

from __future__ import annotations

import gzip
import re
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


# --- Every bad input is a one-line DataError naming it (table-driven) ---------------------------

def _idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


_VALID_IDX = _idx_bytes(0x803, (3, 2, 2), bytes(range(12)))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is too short to be an IDX file (0 bytes); expected MNIST images (magic 0x00000803)"),
        (b"PK\x03\x04" + bytes(12), "magic number 0x504b0304 (an IDX file starts with two zero bytes)"),
        (_idx_bytes(0xD03, (3, 2, 2), bytes(48)),
         "magic number 0x00000d03 (data type code 0x0d, only 0x08 (unsigned byte) is read)"),
        (_idx_bytes(0x802, (3, 4), bytes(12)), "magic number 0x00000802 (2 dimensions, only 3 (images) or 1"),
        (_idx_bytes(0x803, (3,), b""), "is truncated: its header is incomplete (8 of 16 bytes)"),
        (_VALID_IDX[:-1], "holds 11 data bytes, but its header (3, 2, 2) says 12"),
        (_VALID_IDX + b"\0", "holds 13 data bytes, but its header (3, 2, 2) says 12"),
        (_idx_bytes(0x803, (65535, 65535, 65535), bytes(10)),
         "declares 281,462,092,005,375 data bytes, more than the 2,147,483,648 bytes accepted"),
        (gzip.compress(_idx_bytes(0x803, (1000, 1000, 1000), bytes(100))),
         "declares 1,000,000,000 data bytes, more than its"),
        (gzip.compress(_VALID_IDX)[:-12], "is a damaged or truncated gzip file"),
        (b"\x1f\x8b" + bytes(30), "is a damaged or truncated gzip file"),
        (gzip.compress(_VALID_IDX[:-1]), "holds 11 data bytes, but its header (3, 2, 2) says 12"),
        (gzip.compress(_VALID_IDX + b"\0"), "holds more than 12 data bytes, but its header (3, 2, 2) says 12"),
    ],
    ids=["empty", "not-idx", "float-dtype", "2-dims", "short-header", "short-data", "extra-data", "terabytes",
         "gzip-bomb-header", "gzip-truncated", "gzip-garbage", "gzip-short", "gzip-extra"],
)
def test_bad_idx_bytes_raise_one_line_data_error(tmp_path, content, message):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_idx(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_valid_idx_bytes_read_plain_and_gzipped(tmp_path):
    (tmp_path / "plain").write_bytes(_VALID_IDX)
    (tmp_path / "packed").write_bytes(gzip.compress(_VALID_IDX))
    for name in ("plain", "packed"):
        assert read_idx(tmp_path / name).tolist() == np.arange(12).reshape(3, 2, 2).tolist()


def test_unreadable_idx_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=f"cannot read {re.escape(str(tmp_path))}: .*directory"):
        read_idx(tmp_path)


def test_idx_labels_beyond_mnist_classes_are_refused(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", 0x803, np.zeros((10, 2, 2)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", 0x801, np.array([0, 1, 12, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(DataError, match=re.escape(
            "t10k-labels-idx1-ubyte holds 1 labels out of range, e.g. 12 at index 2: the data has 10 classes, "
            "so labels must be whole numbers 0..9, one per image")):
        load_dataset(path=tmp_path)


def _valid_npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": np.arange(20) % 10,
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": np.arange(5),
    }


def _nan_at(key: str, count: int, value: float = np.nan) -> np.ndarray:
    x = _valid_npz_arrays()[key] / 255.0
    x.reshape(-1)[:count] = value
    return x


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x_train": np.full((20, 2), "a")}, "small.npz: x_train has dtype <U1: images must be uint8 0..255"),
        ({"x_test": np.ones((5, 784), np.complex64)}, "small.npz: x_test has dtype complex64: images must be"),
        ({"x_train": np.array([[object()]] * 20)}, "small.npz: x_train holds Python objects (a pickled array)"),
        ({"x_train": np.zeros(20)}, "small.npz: x_train must hold one image per sample (2 or more dimensions), "
                                    "got shape (20,)"),
        ({"x_train": np.zeros((0, 28, 28)), "y_train": np.zeros(0, int)}, "small.npz: x_train holds no samples"),
        ({"x_test": np.zeros((5, 0))}, "small.npz: x_test holds no pixels (shape (5, 0))"),
        ({"x_train": _nan_at("x_train", 3)}, "small.npz: x_train holds 3 NaN and 0 infinite pixels: pixels must "
                                             "be finite"),
        ({"x_test": _nan_at("x_test", 2, np.inf)}, "small.npz: x_test holds 0 NaN and 2 infinite pixels"),
        ({"x_train": _nan_at("x_train", 1, 1.5)}, "small.npz: x_train holds pixels from 0 to 1.5: float images "
                                                  "must already be scaled to [0, 1]"),
        ({"x_train": np.full((20, 4), 300)}, "small.npz: x_train holds integer pixels from 300 to 300: integer "
                                             "images must be 0..255"),
        ({"x_test": np.zeros((5, 14, 56))}, "small.npz: x_train holds images of shape 28x28 but small.npz: x_test "
                                            "of shape 14x56"),
        ({"y_train": np.arange(19)}, "small.npz: x_train has 20 images but small.npz: y_train 19 labels"),
        ({"y_test": np.array([0, 1, 25, 3, 4])}, "small.npz: y_test holds label 25, implying 26 classes for "
                                                 "only 20 training samples"),
        ({"y_train": np.full(20, 5000)}, "small.npz: y_train holds 20 labels out of range, e.g. 5000 at index 0: "
                                         "at most 1,000 classes are accepted, so labels must be whole numbers 0..999"),
        ({"y_train": np.full(20, 2**63 + 5, np.uint64)}, "holds 20 labels out of range, e.g. 9223372036854775813"),
        ({"y_test": np.array([0, 1, 2, -1, 4])}, "small.npz: y_test holds 1 negative labels, e.g. -1 at index 3"),
        ({"y_train": np.arange(20) / 2}, "small.npz: y_train holds 10 labels that are not whole numbers, e.g. 0.5 "
                                         "at index 1"),
        ({"y_test": np.array([0.0, np.nan, 1, 2, 3])}, "small.npz: y_test holds 1 NaN or infinite labels, e.g. "
                                                       "nan at index 1"),
        ({"y_train": np.full(20, "3")}, "small.npz: y_train has dtype <U1: labels must be whole numbers"),
        ({"y_train": np.ones(20, bool)}, "small.npz: y_train has dtype bool"),
        ({"y_train": np.ones(20, complex)}, "small.npz: y_train has dtype complex128"),
        ({"y_train": np.eye(10, dtype=int)[np.arange(20) % 10]}, "small.npz: y_train has shape (20, 10), like "
                                                                 "one-hot rows"),
        ({"y_train": np.zeros((20, 1), int)}, "small.npz: y_train has shape (20, 1): labels must be whole numbers "
                                              "0..999, one per image (a 1-D array)"),
        ({"y_train": np.zeros(20, int), "y_test": np.zeros(5, int)}, "hold only class 0: labels must be 0..K-1 "
                                                                     "with at least 2 classes"),
    ],
    ids=["str-pixels", "complex-pixels", "object-pixels", "1d-pixels", "no-samples", "no-pixels", "nan-pixels",
         "inf-pixels", "float-range", "int-range", "shape-mismatch", "length-mismatch", "k-above-samples",
         "k-above-bound", "uint64-no-wrap", "negative-label", "fractional-label", "nan-label", "str-labels",
         "bool-labels", "complex-labels", "one-hot", "column-labels", "one-class"],
)
def test_bad_npz_arrays_raise_one_line_data_error(tmp_path, changes, message):
    np.savez(tmp_path / "small.npz", **{**_valid_npz_arrays(), **changes})
    with pytest.raises(DataError, match=re.escape(message)) as err:
        load_dataset(path=tmp_path / "small.npz")
    assert "\n" not in str(err.value)


def test_whole_float_labels_and_float_pixels_are_accepted(tmp_path):
    arrays = _valid_npz_arrays()
    arrays.update(x_train=arrays["x_train"] / 255.0, y_train=arrays["y_train"].astype(np.float32))
    np.savez(tmp_path / "small.npz", **arrays)
    ds = load_dataset(path=tmp_path / "small.npz")
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == (np.arange(20) % 10).tolist()
    assert ds.num_classes == 10 and ds.x_train.dtype == np.float32


def test_npz_label_twelve_is_refused_for_few_samples_but_not_for_many(tmp_path):
    # K = 13 is absurd for 10 training samples but may be real for 20.
    arrays = _valid_npz_arrays()
    np.savez(tmp_path / "few.npz", **{**arrays, "x_train": arrays["x_train"][:10],
                                     "y_train": np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12])})
    with pytest.raises(DataError, match="few.npz: y_train holds label 12, implying 13 classes for only 10"):
        load_dataset(path=tmp_path / "few.npz")
    np.savez(tmp_path / "many.npz", **{**arrays, "y_train": np.arange(20) % 13})
    assert load_dataset(path=tmp_path / "many.npz").num_classes == 13


def _npz_with_member(path: Path, member: str, content: bytes) -> None:
    import zipfile

    np.savez(path, **_valid_npz_arrays())
    with zipfile.ZipFile(path) as src:
        kept = {name: src.read(name) for name in src.namelist() if name != member}
    with zipfile.ZipFile(path, "w") as dst:
        for name, data_bytes in {**kept, member: content}.items():
            dst.writestr(name, data_bytes)


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize(
    "member, content, message",
    [
        ("x_train.npy", _npy_header((10**6, 10**6)) + bytes(64),
         "small.npz: x_train declares shape (1000000, 1000000) of float64 (8,000,000,000,000 bytes) but holds 64 "
         "bytes; the file is damaged"),
        ("y_test.npy", b"not an npy file at all", "cannot read"),
        ("y_test.npy", _npy_header((5,))[:20], "cannot read"),
        ("y_test.npy", _npy_header((5,), "|O"), "small.npz: y_test holds Python objects (a pickled array)"),
    ],
    ids=["huge-declared-shape", "not-npy", "cut-header", "object-header"],
)
def test_damaged_npz_members_raise_data_error(tmp_path, member, content, message):
    _npz_with_member(tmp_path / "small.npz", member, content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        load_dataset(path=tmp_path / "small.npz")
    assert "\n" not in str(err.value)


def test_npz_that_is_not_a_zip_is_a_data_error(tmp_path):
    (tmp_path / "fake.npz").write_bytes(b"\x93NUMPY not a zip")
    with pytest.raises(DataError, match=r"fake.npz is not an .npz archive \(not a zip file\)"):
        load_dataset(path=tmp_path / "fake.npz")


def test_load_xy_keeps_any_shape_and_dtype(tmp_path):
    x = np.arange(4 * 3 * 2, dtype=np.int32).reshape(4, 3, 2)  # token ids, say: not scaled, not flattened
    y = np.linspace(-5, 5, 4 * 7).reshape(4, 7)
    np.savez(tmp_path / "xy.npz", x=x, y=y, note=np.zeros(1))
    got_x, got_y = data.load_xy(tmp_path / "xy.npz")
    assert got_x.dtype == np.int32 and np.array_equal(got_x, x) and np.array_equal(got_y, y)
    assert data.npz_keys(tmp_path / "xy.npz") == {"x", "y", "note"}


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 2))}, "xy.npz lacks the keys y (expected x, y)"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "xy.npz: x has 4 samples but y 3: they must match one to one"),
    ({"x": np.full((4, 2), np.nan), "y": np.zeros(4)}, "xy.npz: x holds 8 NaN or infinite values"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, "xy.npz: x holds no samples (shape (0, 2))"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "xy.npz: x has dtype <U1; expected numbers"),
])
def test_load_xy_refuses_bad_arrays_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "xy.npz", **arrays)
    with pytest.raises(DataError) as err:
        data.load_xy(tmp_path / "xy.npz")
    assert message in str(err.value) and "\n" not in str(err.value)
