"""gradscope.data under arbitrary input: a valid result or a one-line DataError, never another exception.

Property-based (hypothesis): arbitrary and IDX-shaped bytes for `read_idx`, plain and
gzipped; arbitrary arrays of any dtype and shape, and damaged archives, for
`load_dataset(path=...)` on an .npz. Files go to a temporary folder, not the repository.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradscope.data import MAX_CLASSES, DataError, Dataset, load_dataset, read_idx

# FUZZ_N raises the examples for a longer hunt, e.g. FUZZ_N=3000.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_N", "100")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _assert_one_line_naming(err: DataError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message and path.name in message, message
    event("DataError")  # `pytest --hypothesis-show-statistics` shows how often each outcome came up


# --- IDX ---------------------------------------------------------------------------------------

_DIM = st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1))


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


# Headers near the valid ones reach deeper than random bytes, which rarely start 00 00 08.
_idx_like = st.builds(
    _idx,
    st.one_of(st.sampled_from([0x801, 0x803, 0x802, 0x804, 0x800, 0x903, 0xD03, 0x1000803]),
              st.integers(0, 2**32 - 1)),
    st.lists(_DIM, max_size=4),
    st.binary(max_size=80),
)


@st.composite
def _idx_valid(draw) -> bytes:
    """A well-formed labels or images file, which must read back exactly."""
    dims = draw(st.one_of(st.tuples(st.integers(0, 9)), st.tuples(*[st.integers(0, 4)] * 3)))
    magic = 0x801 if len(dims) == 1 else 0x803
    return _idx(magic, list(dims), draw(st.binary(min_size=int(np.prod(dims)), max_size=int(np.prod(dims)))))


@FUZZ
@given(content=st.one_of(st.binary(max_size=120), _idx_like, _idx_valid()), packed=st.booleans(),
       cut=st.one_of(st.none(), st.none(), st.integers(0, 200)))
def test_read_idx_gives_an_array_or_a_data_error(scratch, content, packed, cut):
    well_formed = _is_well_formed_idx(content)
    if packed:
        content = gzip.compress(content)
    if cut is not None:  # truncation, the commonest damage, of the compressed bytes too
        well_formed = well_formed and cut >= len(content)
        content = content[:cut]
    path = scratch / "t10k-images-idx3-ubyte"
    path.write_bytes(content)
    try:
        array = read_idx(path)
    except DataError as err:
        assert not well_formed, f"a well-formed IDX file was refused: {err}"
        _assert_one_line_naming(err, path)
        return
    event("array")
    assert well_formed
    assert array.dtype == np.uint8 and array.ndim in (1, 3)
    # What was read is exactly what the header declared after it.
    plain = gzip.decompress(content) if packed else content
    assert plain[:4] == (b"\0\0\x08\x03" if array.ndim == 3 else b"\0\0\x08\x01")
    assert plain[4 + 4 * array.ndim:] == array.tobytes()


def _is_well_formed_idx(content: bytes) -> bool:
    """The IDX format, restated independently: magic 0x801 or 0x803, then dims, then exactly their product."""
    if content[:4] not in (b"\0\0\x08\x01", b"\0\0\x08\x03"):
        return False
    ndim = content[3]
    if len(content) < 4 + 4 * ndim:
        return False
    dims = [int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = 1
    for d in dims:
        size *= d
    return len(content) - 4 - 4 * ndim == size


# --- .npz arrays -------------------------------------------------------------------------------

_DTYPES = st.sampled_from(["uint8", "int8", "int64", "uint64", "float16", "float32", "float64",
                           "bool", "complex128", "<U3", "S2", "datetime64[s]"])


@st.composite
def _any_array(draw, max_dims: int) -> np.ndarray:
    """Any dtype and shape, with extreme values, NaN and Inf; now and then an object array."""
    if draw(st.integers(0, 15)) == 0:
        return np.array([draw(st.integers(0, 3)), "x", None] * draw(st.integers(1, 3)), dtype=object)
    dtype = np.dtype(draw(_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


def _damage(arrays: dict[str, np.ndarray], kind: str) -> None:
    """One known defect, in place; each must be refused."""
    x, y = arrays["x_train"], arrays["y_train"]
    if kind == "nan pixel":
        arrays["x_train"] = x.astype(np.float64) / 255.0
        arrays["x_train"].flat[-1] = np.nan
    elif kind == "inf pixel":
        arrays["x_test"] = np.full(arrays["x_test"].shape, np.inf)
    elif kind == "pixel 256":
        arrays["x_train"] = x.astype(np.int64)  # uint8 cannot hold it, bool would make it True
        arrays["x_train"].flat[0] = 256
    elif kind == "float pixel 1.5":
        arrays["x_test"] = np.full(arrays["x_test"].shape, 1.5)
    elif kind == "negative label":
        y[-1] = -1
    elif kind == "fractional label":
        arrays["y_test"] = arrays["y_test"] + 0.5
    elif kind == "nan label":
        arrays["y_train"] = y.astype(np.float64)
        arrays["y_train"][0] = np.nan
    elif kind == "label beyond samples":
        y[0] = len(y)
    elif kind == "huge label":
        arrays["y_test"][0] = 10**15
    elif kind == "one label short":
        arrays["y_train"] = y[:-1]
    elif kind == "other test shape":
        arrays["x_test"] = arrays["x_test"].reshape(len(arrays["x_test"]), -1, 1)
    elif kind == "no test samples":
        arrays["x_test"], arrays["y_test"] = arrays["x_test"][:0], arrays["y_test"][:0]
    elif kind == "only class 0":
        arrays["y_train"][:], arrays["y_test"][:] = 0, 0
    elif kind == "class only in test":
        arrays["y_test"][0] = int(y.max()) + 1


_DAMAGES = ["class only in test", "nan pixel", "inf pixel", "pixel 256", "float pixel 1.5", "negative label",
            "fractional label", "nan label", "label beyond samples", "huge label", "one label short",
            "other test shape", "no test samples", "only class 0"]


@st.composite
def _plausible(draw) -> tuple[dict[str, np.ndarray], str | None]:
    """Valid data in a valid variant, with at most one known defect: (arrays, defect or None)."""
    n_train, n_test = draw(st.integers(4, 12)), draw(st.integers(1, 6))
    image = draw(st.sampled_from([(4,), (2, 3), (1, 1, 2)]))
    x_train = draw(hnp.arrays(np.uint8, (n_train, *image)))
    x_test = draw(hnp.arrays(np.uint8, (n_test, *image)))
    y_train = draw(hnp.arrays(np.int64, n_train, elements=st.integers(0, 3)))
    y_train[0] = 1  # at least 2 classes
    # Every class of the test data appears in training.
    y_test = draw(hnp.arrays(np.int64, n_test, elements=st.integers(0, int(y_train.max()))))
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    variant = draw(st.sampled_from(["uint8", "int64", "float32 pixels", "float64 labels", "bool pixels"]))
    if variant == "int64":
        arrays["x_train"] = x_train.astype(np.int64)
    elif variant == "float32 pixels":
        arrays["x_test"] = (x_test / 255.0).astype(np.float32)
    elif variant == "float64 labels":
        arrays["y_train"] = y_train.astype(np.float64)
    elif variant == "bool pixels":
        arrays["x_train"] = x_train > 127
    defect = draw(st.one_of(st.none(), st.sampled_from(_DAMAGES)))
    if defect is not None:
        _damage(arrays, defect)
    return arrays, defect


@FUZZ
@given(case=_plausible())
def test_npz_with_one_known_defect_is_refused_and_without_one_loads(scratch, case):
    arrays, defect = case
    path = scratch / "plausible.npz"
    np.savez(path, **arrays)
    try:
        ds = load_dataset(path=path)
    except DataError as err:
        assert defect is not None, f"valid data was refused: {err}"
        _assert_one_line_naming(err, path)
        return
    assert defect is None, f"{defect} was accepted"
    _assert_valid(ds)
    assert ds.y_val.tolist() == arrays["y_test"].tolist()
    assert ds.num_classes == 1 + int(arrays["y_train"].max())


_arrays = st.fixed_dictionaries({"x_train": _any_array(4), "y_train": _any_array(2),
                                 "x_test": _any_array(4), "y_test": _any_array(2)})


def _assert_valid(ds: Dataset) -> None:
    event("valid Dataset")
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        assert x.dtype == np.float32 and x.ndim == 2 and len(x) == len(y) >= 1
        assert x.shape[1] == ds.input_dim >= 1
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
        assert y.dtype == np.int64 and y.ndim == 1
        assert y.min() >= 0 and y.max() < ds.num_classes
    assert 2 <= ds.num_classes <= min(MAX_CLASSES, len(ds.y_train))
    assert max(ds.y_train.max(), ds.y_val.max()) == ds.num_classes - 1


@FUZZ
@given(arrays=_arrays)
def test_npz_of_any_arrays_gives_a_valid_dataset_or_a_data_error(scratch, arrays):
    path = scratch / "fuzz.npz"
    np.savez(path, **arrays)  # pickles object arrays, which loading must refuse
    try:
        ds = load_dataset(path=path)
    except DataError as err:
        _assert_one_line_naming(err, path)
        return
    _assert_valid(ds)
    # Nothing was invented: the labels are the file's, cast to integers.
    assert ds.y_val.tolist() == np.asarray(arrays["y_test"]).astype(np.int64).tolist()


def _small_npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.arange(24, dtype=np.uint8).reshape(6, 4), y_train=np.arange(6) % 3,
             x_test=np.ones((2, 4), np.float32), y_test=np.array([0, 2]))
    return buffer.getvalue()


_NPZ = _small_npz_bytes()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(_NPZ) - 1), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(_NPZ))))
def test_damaged_npz_bytes_give_a_valid_dataset_or_a_data_error(scratch, edits, cut):
    content = bytearray(_NPZ)
    for position, value in edits:
        content[position] = value
    path = scratch / "damaged.npz"
    path.write_bytes(bytes(content[:cut]))
    try:
        ds = load_dataset(path=path)
    except DataError as err:
        _assert_one_line_naming(err, path)
        return
    _assert_valid(ds)
