"""GradientHistory and the run folder: exact round trips, chunked appends."""

import json

import numpy as np
import pytest

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
