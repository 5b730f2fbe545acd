"""GradientHistory and the run folder: exact round trips, chunked appends."""

import errno
import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradscope import GradientHistory, load_run
from gradscope.history import RunFolderError


def _history():
    rng = np.random.default_rng(0)
    h = GradientHistory(["a", "b"], variables=["a/kernel", "a/bias", "b/kernel"],
                        layer_info=[{"name": "a", "units": 4}, {"name": "b", "units": 2}], config={"lr": 1e-3})
    for start in (0, 3):
        h.append(np.arange(start, start + 3), {"grad_norm": rng.random((3, 2)), "backprop": rng.random((3, 2))},
                 {"loss": rng.random(3)}, {"grad_norm": rng.random((3, 3))})
    h.histograms["start"] = {"step": 0, "ranges": np.array([[-1.0, 1.0], [0, 2]]), "counts": rng.random((2, 5))}
    return h


def test_append_concatenates_chunks_in_order():
    h = _history()
    assert h.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert h["grad_norm"].shape == (6, 2) and h.names == ["backprop", "grad_norm"]
    assert h.scalars["loss"].shape == (6,)
    with pytest.raises(KeyError, match="available: backprop, grad_norm"):
        h["nope"]
    with pytest.raises(ValueError, match="expected"):
        h.append([6], {"grad_norm": np.ones((1, 3))})


def test_save_and_load_round_trip_exactly(tmp_path):
    h = _history()
    h.save(tmp_path / "run", summary={"ok": True})
    g = load_run(tmp_path / "run")
    assert g.layers == h.layers and g.variables == h.variables and g.config == h.config
    assert g.layer_info == h.layer_info
    np.testing.assert_array_equal(g.steps, h.steps)
    for name in h.names:
        np.testing.assert_array_equal(g[name], h[name])
    np.testing.assert_array_equal(g.scalars["loss"], h.scalars["loss"])
    np.testing.assert_array_equal(g.variable_series["grad_norm"], h.variable_series["grad_norm"])
    np.testing.assert_array_equal(g.histograms["start"]["counts"], h.histograms["start"]["counts"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"ok": True}
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["history.npz", "run.json", "summary.json"]


def test_format_is_readable_without_gradscope(tmp_path):
    h = _history()
    h.save(tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    with np.load(tmp_path / "history.npz") as data:
        grad = data["layer/grad_norm"]
        steps = data["steps"]
    assert meta["layers"] == ["a", "b"] and grad.shape == (len(steps), len(meta["layers"]))


def test_load_run_on_a_wrong_folder(tmp_path):
    with pytest.raises(RunFolderError, match="not a gradscope run folder"):
        load_run(tmp_path)
    with pytest.raises(RunFolderError, match="no such folder"):
        load_run(tmp_path / "missing")


def test_a_version_1_folder_reads_its_nan_norms_as_nonfinite(tmp_path):
    # Version 1 wrote NaN for a non-finite norm; version 2 keeps NaN for
    # "not measured" and reads those as inf. A column never measured stays NaN.
    h = GradientHistory(["a"], variables=["a/kernel", "a/bias"])
    g = np.array([[1.0, np.nan], [np.nan, np.nan], [2.0, np.nan]])
    h.append([0, 1, 2], {"grad_norm": np.ones((3, 1))}, {"loss": np.ones(3)}, {"grad_norm": g})
    h.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["version"] = 1
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    old = load_run(tmp_path / "run").variable_series["grad_norm"]
    assert old[1, 0] == np.inf and np.isnan(old[:, 1]).all() and old[0, 0] == 1.0
    h.save(tmp_path / "v2")  # the current version keeps NaN as "not measured"
    assert np.isnan(load_run(tmp_path / "v2").variable_series["grad_norm"][1, 0])


def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    from gradscope.history import atomic_write

    target = tmp_path / "summary.json"
    target.write_text("old")

    def half_then_fail(f):
        f.write("new, half written")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    atomic_write(target, lambda f: f.write("new"))
    assert target.read_text() == "new"


def test_since_views_the_newest_rows_without_copying_or_sharing_appends():
    h = GradientHistory(["a", "b"], variables=["a/kernel"])
    h.append([0, 1, 2], {"grad_norm": np.arange(6.0).reshape(3, 2)}, {"loss": [3.0, 2.0, 1.0]},
             {"grad_norm": np.ones((3, 1))})
    tail = h.since(1)
    assert tail.steps.tolist() == [1, 2] and tail["grad_norm"].tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert tail.scalars["loss"].tolist() == [2.0, 1.0] and tail.layers == h.layers
    assert np.shares_memory(tail["grad_norm"], h["grad_norm"])
    tail.append([3], {"grad_norm": np.zeros((1, 2))})
    assert len(h) == 3 and len(tail) == 3
    assert len(h.since(7)) == 0


# -- load_run on damaged folders: one RunFolderError naming the file ----------

def _saved(folder, histograms=True):
    h = _history()
    if not histograms:
        h.histograms.clear()
    h.save(folder)
    return folder


def _rewrite_meta(folder, change):
    meta = json.loads((folder / "run.json").read_text())
    change(meta)
    (folder / "run.json").write_text(json.dumps(meta))


def _set(key, value):
    return lambda meta: meta.__setitem__(key, value)


def _set_info(index, key, value):
    return lambda meta: meta["layer_info"][index].__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (_set("layers", 3), "'layers' must be a list of strings, not int"),
    (_set("layers", ["a", 2]), "'layers' must be a list of strings"),
    (lambda meta: meta.pop("layers"), "'layers' must be a list of strings, not null"),
    (_set("variables", "a/kernel"), "'variables' must be a list of strings, not str"),
    (_set("config", [1, 2]), "'config' must be an object, not list"),
    (_set("config", {"num_classes": "ten"}), "config.num_classes must be a non-negative integer or null, not str"),
    (_set("config", {"name": 3}), "config.name must be a string or null, not int"),
    (_set("layer_info", [{"name": "a"}]), "'layer_info' must be a list of 2 objects"),
    (_set("layer_info", "a"), "'layer_info' must be a list of 2 objects"),
    (_set("layer_info", [{}, 7]), "'layer_info[1]' must be an object, not int"),
    (_set_info(0, "params", None), "layer_info[0].params must be a non-negative integer, not null"),
    (_set_info(1, "fan_in", -4), "layer_info[1].fan_in must be a non-negative integer or null, not int"),
    (_set_info(1, "units", True), "layer_info[1].units must be a non-negative integer or null, not bool"),
    (_set_info(0, "activation", ["tanh"]), "layer_info[0].activation must be a string or null, not list"),
    (_set("version", "2"), "'version' must be a positive integer, not str"),
    (_set("version", True), "'version' must be a positive integer, not bool"),
    (_set("version", 0), "'version' must be a positive integer, not int"),
    (_set("version", 4), "written by a newer gradscope (format version 4; this one reads 1 to 3)"),
    (_set("histogram_steps", ["start"]), "'histogram_steps' must map each moment to an integer step"),
    (_set("histogram_steps", {"start": 1.5}), "'histogram_steps' must map each moment to an integer step"),
    (_set("histogram_steps", {"start": 0, "middle": 3}), "no array 'hist/middle/ranges'"),
    (_set("format", "gradscope-comparison"), "not a gradscope-run file (format 'gradscope-comparison')"),
])
def test_load_run_names_the_wrong_field_of_run_json(tmp_path, change, message):
    folder = _saved(tmp_path / "run")
    _rewrite_meta(folder, change)
    with pytest.raises(RunFolderError) as info:
        load_run(folder)
    text = str(info.value)
    assert message in text and "\n" not in text
    where = folder / ("history.npz" if "no array" in message else "run.json")
    assert text.startswith(f"{where}: ") and info.value.path == where


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    (b'{"layers": ["a", "b"]', "not valid JSON"),
    (b"\xff\xfe\x00\xd8", "not valid JSON"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "not valid JSON", id="too-deep-for-the-parser"),
    (b'["a", "b"]', "not a JSON object but list"),
    (b"null", "not a JSON object but null"),
])
def test_load_run_refuses_a_run_json_that_is_not_a_json_object(tmp_path, content, message):
    folder = _saved(tmp_path / "run")
    (folder / "run.json").write_bytes(content)
    with pytest.raises(RunFolderError, match=r"run\.json: ") as info:
        load_run(folder)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_load_run_on_a_run_json_that_cannot_be_read(tmp_path):
    folder = tmp_path / "run"
    (folder / "run.json").mkdir(parents=True)  # a real OS error: EISDIR
    with pytest.raises(RunFolderError, match=r"run\.json: cannot be read \(is a directory\)"):
        load_run(folder)


def _with_arrays(folder, **arrays):
    """Replaces arrays of a saved history.npz (None removes one)."""
    with np.load(folder / "history.npz") as data:
        current = {k: data[k] for k in data.files}
    for key, value in arrays.items():
        key = key.replace("__", "/")
        if value is None:
            current.pop(key)
        else:
            current[key] = value
    np.savez(folder / "history.npz", **current)


@pytest.mark.parametrize("arrays, message", [
    ({"steps": None}, "no array 'steps'"),
    ({"hist__start__counts": None}, "no array 'hist/start/counts'"),
    ({"steps": np.arange(6.0)}, "array 'steps' holds float64 values, not integers"),
    ({"steps": np.arange(6).reshape(2, 3)}, "array 'steps' has shape (2, 3), expected (any,) (steps)"),
    ({"layer__grad_norm": np.ones((6, 3))},
     "array 'layer/grad_norm' has shape (6, 3), expected (6, 2) (steps x layers)"),
    ({"layer__grad_norm": np.ones(6)}, "array 'layer/grad_norm' has shape (6,), expected (6, 2)"),
    ({"layer__grad_norm": np.full((6, 2), "x")}, "array 'layer/grad_norm' holds <U1 values, not numbers"),
    ({"scalar__loss": np.ones((6, 1))}, "array 'scalar/loss' has shape (6, 1), expected (6,) (steps)"),
    ({"scalar__loss": np.ones(6, complex)}, "array 'scalar/loss' holds complex128 values, not numbers"),
    ({"variable__grad_norm": np.ones((6, 2))}, "expected (6, 3) (steps x variables)"),
    ({"variable__grad_norm": np.array([None] * 18).reshape(6, 3)},
     "holds an array of Python objects (pickled), which is never loaded"),
    ({"hist__start__ranges": np.ones((2, 3))}, "array 'hist/start/ranges' has shape (2, 3), expected (2, 2)"),
    ({"hist__start__counts": np.ones(5)}, "array 'hist/start/counts' has shape (5,), expected (2, any)"),
    ({"hist__start__counts": np.zeros((2, 3), "datetime64[s]")}, "holds datetime64[s] values, not numbers"),
])
def test_load_run_names_the_wrong_array_of_history_npz(tmp_path, arrays, message):
    folder = _saved(tmp_path / "run")
    _with_arrays(folder, **arrays)
    with pytest.raises(RunFolderError) as info:
        load_run(folder)
    text = str(info.value)
    assert text.startswith(f"{folder / 'history.npz'}: ") and message in text and "\n" not in text


def test_load_run_accepts_any_real_number_type_and_skips_unknown_arrays(tmp_path):
    folder = _saved(tmp_path / "run")
    _with_arrays(folder, steps=np.arange(6, dtype=np.uint16), layer__grad_norm=np.ones((6, 2), np.float16),
                 scalar__loss=np.ones(6, bool), notes=np.array(["from another tool"]))
    h = load_run(folder)
    assert h.steps.dtype == np.int64 and h["grad_norm"].dtype == np.float64 and h.scalars["loss"].tolist() == [1.0] * 6


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "history.npz: missing"),
    (lambda p: p.write_bytes(b"not an archive"),
     "not a numpy archive (numpy would read it as pickled Python objects, which are never loaded)"),
    (lambda p: p.write_bytes(b""), "not a readable numpy archive (EOFError"),
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "not a readable numpy archive (BadZipFile"),
    (lambda p: np.save(p.open("wb"), np.arange(3)), "a single numpy array, not a .npz archive"),
    (lambda p: (p.unlink(), p.mkdir()), "not a readable numpy archive (IsADirectoryError"),
])
def test_load_run_refuses_a_damaged_or_missing_history_npz(tmp_path, damage, message):
    folder = _saved(tmp_path / "run")
    damage(folder / "history.npz")
    with pytest.raises(RunFolderError) as info:
        load_run(folder)
    assert message in str(info.value) and "\n" not in str(info.value)


# -- atomic_write and the umask -----------------------------------------------

@pytest.fixture
def umask():
    """Sets the process umask for one test, and restores it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_current_umask_reads_the_umask_without_changing_it(umask, mask):
    from gradscope.history import current_umask

    umask(mask)
    assert current_umask() == mask
    assert os.umask(mask) == mask  # still in force


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask, mask):
    from gradscope.history import atomic_write

    umask(mask)
    _history().save(tmp_path / "run", summary={"ok": True})
    atomic_write(tmp_path / "note.json", lambda f: f.write("{}"))
    files = [*sorted((tmp_path / "run").iterdir()), tmp_path / "note.json"]
    assert [p.name for p in files] == ["history.npz", "run.json", "summary.json", "note.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o777 & ~mask


def test_atomic_write_names_the_file_in_an_os_error(tmp_path):
    from gradscope.history import atomic_write

    def full_disk(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_write(tmp_path / "history.npz", full_disk, binary=True)
    assert info.value.filename == str(tmp_path / "history.npz") and list(tmp_path.iterdir()) == []


# -- comparison folders ---------------------------------------------------------

def _comparison(folder, runs, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps({"format": "gradscope-comparison", "runs": runs, **extra}))
    return folder


def test_comparison_runs_lists_each_label_and_folder(tmp_path):
    from gradscope.history import comparison_runs

    folder = _comparison(tmp_path / "cmp", [{"label": "tanh/glorot", "folder": "tanh-glorot", "config": {}},
                                            {"label": "relu/he", "folder": "nested/relu-he"}])
    assert comparison_runs(folder) == [("tanh/glorot", folder / "tanh-glorot"), ("relu/he", folder / "nested/relu-he")]


@pytest.mark.parametrize("name", ["/etc", "../outside", "a/../../outside", "", ".", "a/..", "bad\0name"])
def test_comparison_runs_refuses_a_folder_outside_the_comparison(tmp_path, name):
    from gradscope.history import comparison_runs

    folder = _comparison(tmp_path / "cmp", [{"label": "x", "folder": name}])
    with pytest.raises(RunFolderError, match="which is not inside") as info:
        comparison_runs(folder)
    assert str(info.value).startswith(f"{folder / 'comparison.json'}: run 'x' names the folder ")


def test_comparison_runs_refuses_a_symbolic_link_leading_out(tmp_path):
    from gradscope.history import comparison_runs

    _saved(tmp_path / "elsewhere")
    folder = _comparison(tmp_path / "cmp", [{"label": "x", "folder": "link"}])
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunFolderError, match="'link', which is not inside"):
        comparison_runs(folder)
    (folder / "link").unlink()
    (folder / "real").mkdir()
    (folder / "link").symlink_to(folder / "real")  # a link that stays inside is fine
    assert comparison_runs(folder) == [("x", folder / "link")]


@pytest.mark.parametrize("content, message", [
    ("{", "comparison.json: not valid JSON"),
    ('{"runs": {}}', "'runs' must be a list, not dict"),
    ('{"format": "gradscope-run", "runs": []}', "not a gradscope-comparison file (format 'gradscope-run')"),
    ('{"runs": [{"label": "x"}]}', "runs[0] must be an object with a string 'label' and 'folder'"),
    ('{"runs": [{"label": 1, "folder": "a"}]}', "runs[0] must be an object"),
    ('{"runs": ["a"]}', "runs[0] must be an object"),
    ('{"runs": [{"label": "x", "folder": "a"}, {"label": "x", "folder": "b"}]}', "the label 'x' appears twice"),
])
def test_comparison_runs_refuses_a_malformed_comparison_json(tmp_path, content, message):
    from gradscope.history import comparison_runs

    (tmp_path / "comparison.json").write_text(content)
    with pytest.raises(RunFolderError) as info:
        comparison_runs(tmp_path)
    assert message in str(info.value)


def test_comparison_runs_on_a_folder_without_comparison_json(tmp_path):
    from gradscope.history import comparison_runs

    with pytest.raises(RunFolderError, match="not a gradscope comparison folder"):
        comparison_runs(tmp_path)


# -- property tests: whatever a run folder holds, load_run loads it or refuses it cleanly

_FIELDS = ["format", "version", "layers", "variables", "layer_info", "config", "histogram_steps"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_LAYER_KEYS = ["name", "class", "activation", "units", "params", "fan_in", "fan_out", "output_shape", "num_classes",
               "other"]
_DTYPES = [np.int8, np.uint8, np.int64, np.uint64, np.float16, np.float32, np.float64, np.bool_, np.complex64,
           "U3", "S3", "datetime64[s]", "timedelta64[ms]"]
_SHAPES = {"steps": lambda n, ls, vs: (n,), "layer/grad_norm": lambda n, ls, vs: (n, ls),
           "layer/backprop": lambda n, ls, vs: (n, ls), "scalar/loss": lambda n, ls, vs: (n,),
           "variable/grad_norm": lambda n, ls, vs: (n, vs), "hist/start/ranges": lambda n, ls, vs: (ls, 2),
           "hist/start/counts": lambda n, ls, vs: (ls, 5)}
# No example database: nothing is written into the working tree.
_PROPERTY = settings(max_examples=100, deadline=None, database=None)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A valid run's run.json and history.npz bytes, and a folder each example overwrites them in."""
    folder = _saved(tmp_path_factory.mktemp("template") / "run")
    return (folder / "run.json").read_bytes(), (folder / "history.npz").read_bytes(), folder


def _load_or_refuse(saved_run, run_json: bytes | None = None, history_npz: bytes | None = None,
                    arrays: dict | None = None):
    """load_run on the run with these files: a consistent history, or a clean RunFolderError (else the test fails)."""
    folder = saved_run[2]
    (folder / "run.json").write_bytes(saved_run[0] if run_json is None else run_json)
    if arrays is not None:
        np.savez(folder / "history.npz", **arrays)
    else:
        (folder / "history.npz").write_bytes(saved_run[1] if history_npz is None else history_npz)
    try:
        h = load_run(folder)
    except RunFolderError as exc:
        text = str(exc)
        assert text.startswith(str(folder)) and "\n" not in text and exc.path.is_relative_to(folder)
        return None
    n, width = len(h), len(h.layers)
    assert all(isinstance(name, str) for name in h.layers + h.variables) and isinstance(h.config, dict)
    assert len(h.layer_info) == width and all(isinstance(info, dict) for info in h.layer_info)
    assert h.steps.dtype == np.int64 and h.steps.shape == (n,)
    for name in h.names:
        assert h[name].shape == (n, width) and h[name].dtype == np.float64
    assert all(v.shape == (n,) and v.dtype == np.float64 for v in h.scalars.values())
    assert all(v.shape == (n, len(h.variables)) for v in h.variable_series.values())
    for moment in h.histograms.values():
        assert isinstance(moment["step"], int) and moment["ranges"].shape == (width, 2)
        assert moment["counts"].ndim == 2 and moment["counts"].shape[0] == width
    return h


@_PROPERTY
@given(content=st.binary(max_size=600))
def test_any_bytes_as_run_json_load_or_are_refused(saved_run, content):
    _load_or_refuse(saved_run, run_json=content)


@pytest.mark.slow
@_PROPERTY
@given(field=st.sampled_from(_FIELDS), value=_JSON, extra=st.dictionaries(st.text(max_size=6), _JSON, max_size=2))
def test_any_json_value_in_a_run_json_field_loads_or_is_refused(saved_run, field, value, extra):
    meta = json.loads(saved_run[0])
    meta.update(extra)
    meta[field] = value
    _load_or_refuse(saved_run, run_json=json.dumps(meta).encode())


@_PROPERTY
@given(where=st.sampled_from(["config", "layer_info"]), key=st.sampled_from(_LAYER_KEYS), value=_JSON)
def test_any_json_value_in_a_layer_or_config_fact_loads_or_is_refused(saved_run, where, key, value):
    meta = json.loads(saved_run[0])
    (meta["config"] if where == "config" else meta["layer_info"][1])[key] = value
    h = _load_or_refuse(saved_run, run_json=json.dumps(meta).encode())
    checked = {"config": {"name", "num_classes"}, "layer_info": set(_LAYER_KEYS) - {"num_classes", "other"}}
    if h is not None and key in checked[where]:
        # What loads is what the renderers and the diagnosis can use.
        assert value is None or isinstance(value, str) or (type(value) is int and value >= 0)


@_PROPERTY
@given(content=st.binary(max_size=600))
def test_any_bytes_as_history_npz_load_or_are_refused(saved_run, content):
    _load_or_refuse(saved_run, history_npz=content)


@_PROPERTY
@given(data=st.data())
def test_a_damaged_history_npz_loads_or_is_refused(saved_run, data):
    content = bytearray(saved_run[1])
    cut = data.draw(st.integers(0, len(content)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 255)), max_size=4))
    for index, byte in flips:
        content[index] = byte
    _load_or_refuse(saved_run, history_npz=bytes(content[:cut] if data.draw(st.booleans()) else content))


@_PROPERTY
@given(data=st.data())
def test_arrays_of_any_shape_and_dtype_load_or_are_refused(saved_run, data):
    # Each array: left as saved, removed, or replaced by one of any dtype,
    # with the shape the record needs or any other.
    n = data.draw(st.integers(0, 4))
    arrays = {}
    for key, shape in _SHAPES.items():
        choice = data.draw(st.sampled_from(["right", "any", "missing"]))
        if choice == "missing":
            continue
        wanted = shape(n, 2, 3) if choice == "right" else data.draw(hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                       min_side=0, max_side=4))
        # The values do not matter to load_run, only shapes and types: ones
        # are quick to make in any dtype.
        arrays[key] = np.ones(wanted, data.draw(st.sampled_from(_DTYPES)))
    _load_or_refuse(saved_run, arrays=arrays)
