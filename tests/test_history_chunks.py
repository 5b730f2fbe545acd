"""A streamed history: rows written in chunks as they arrive, memory that stays flat, and the folder read back."""

import numpy as np
import pytest

from gradscope import GradientHistory, load_run
from gradscope.history import RunFolderError, load_overview
from gradscope.history_chunks import CHUNKS_DIR, ChunkStore, chunk_files


def _rows(rng, start, n, layers=3, variables=2):
    return (np.arange(start, start + n), {"grad_norm": rng.random((n, layers)), "dead": rng.random((n, layers))},
            {"loss": rng.random(n)}, {"weight_norm": rng.random((n, variables))})


def _streamed(folder, appends, per_append, chunk_rows, seed=0):
    rng = np.random.default_rng(seed)
    h = GradientHistory(["a", "b", "c"], variables=["a/kernel", "c/kernel"])
    h.stream_to(folder, chunk_rows=chunk_rows)
    plain = GradientHistory(["a", "b", "c"], variables=["a/kernel", "c/kernel"])
    for i in range(appends):
        rows = _rows(rng, i * per_append, per_append)
        h.append(*rows)
        plain.append(*rows)
    return h, plain


def _assert_same(a, b):
    np.testing.assert_array_equal(a.steps, b.steps)
    assert a.names == b.names
    for name in b.names:
        np.testing.assert_array_equal(a[name], b[name])
    for name, values in b.scalars.items():
        np.testing.assert_array_equal(a.scalars[name], values)
    for name, values in b.variable_series.items():
        np.testing.assert_array_equal(a.variable_series[name], values)


def test_rows_are_written_in_chunks_as_they_arrive(tmp_path):
    h, plain = _streamed(tmp_path / "run", appends=3, per_append=3, chunk_rows=4)
    # 3 rows: pending; 6: a chunk of 6 written; 9: 3 pending again.
    assert [(c.first, c.rows) for c in chunk_files(tmp_path / "run")] == [(0, 6)]
    assert len(h) == 9 and len(load_run(tmp_path / "run")) == 6  # the folder loads while the run goes on
    h.sync()
    assert [(c.first, c.rows) for c in chunk_files(tmp_path / "run")] == [(0, 6), (6, 3)]
    _assert_same(load_run(tmp_path / "run"), plain)
    # Reading the streamed history itself gives every row, from disk and memory.
    _assert_same(h, plain)
    _assert_same(h.since(4), plain.since(4))
    np.testing.assert_array_equal(h.rows("dead", 5), plain["dead"][5:])


def test_memory_stays_flat_however_many_rows(tmp_path):
    rng = np.random.default_rng(1)
    streamed = GradientHistory(["a", "b", "c"], variables=["a/kernel", "c/kernel"])
    streamed.stream_to(tmp_path / "run", chunk_rows=16)
    in_memory = GradientHistory(["a", "b", "c"], variables=["a/kernel", "c/kernel"])
    held = []
    for i in range(200):
        rows = _rows(rng, i * 16, 16)
        streamed.append(*rows)
        in_memory.append(*rows)
        held.append(streamed.nbytes)
    assert len(streamed) == 3200
    assert max(held[100:]) <= max(held[:10])  # rows 1,600 to 3,200 take no more than the first 160
    assert in_memory.nbytes > 20 * max(held)  # what it would have cost
    np.testing.assert_array_equal(streamed.rows("grad_norm", 3190), in_memory["grad_norm"][3190:])


def test_the_newest_rows_are_read_without_the_older_chunks(tmp_path):
    h, plain = _streamed(tmp_path / "run", appends=6, per_append=4, chunk_rows=4)
    for chunk in chunk_files(tmp_path / "run")[:3]:
        chunk.path.unlink()  # rows 0 to 11 gone: reading from row 12 on must not touch them
    np.testing.assert_array_equal(h.rows("grad_norm", 12), plain["grad_norm"][12:])
    _assert_same(h.since(14), plain.since(14))
    with pytest.raises(FileNotFoundError):
        h.rows("grad_norm", 11)


def test_a_series_that_starts_later_is_nan_before(tmp_path):
    h = GradientHistory(["a"])
    h.stream_to(tmp_path / "run", chunk_rows=2)
    h.append([0, 1], {"grad_norm": np.ones((2, 1))})
    h.append([2, 3], {"grad_norm": np.ones((2, 1)), "backprop": np.full((2, 1), 5.0)})
    h.sync()
    loaded = load_run(tmp_path / "run")
    np.testing.assert_array_equal(loaded["backprop"].ravel(), [np.nan, np.nan, 5.0, 5.0])
    np.testing.assert_array_equal(h["backprop"].ravel(), [np.nan, np.nan, 5.0, 5.0])


def test_save_elsewhere_copies_the_chunks_and_finishes_the_folder(tmp_path):
    h, plain = _streamed(tmp_path / "run", appends=5, per_append=3, chunk_rows=4)
    h.histograms["start"] = {"step": 0, "ranges": np.zeros((3, 2)), "counts": np.ones((3, 4))}
    h.save(tmp_path / "copy", summary={"ok": True})
    for folder in ("run", "copy"):
        loaded = load_run(tmp_path / folder)
        _assert_same(loaded, plain)
        np.testing.assert_array_equal(loaded.histograms["start"]["counts"], np.ones((3, 4)))
    names = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert names == sorted([CHUNKS_DIR, "histograms.npz", "run.json", "summary.json"])


def test_downsampled_load_is_the_bucket_min_median_and_max(tmp_path):
    h, plain = _streamed(tmp_path / "run", appends=10, per_append=10, chunk_rows=8, seed=3)
    h.sync()
    buckets = 7
    small = load_run(tmp_path / "run", buckets=buckets)
    edges = np.arange(buckets + 1) * 100 // buckets
    assert len(small) == buckets and small.spread.rows == 100
    np.testing.assert_array_equal(small.spread.sizes, np.diff(edges))
    np.testing.assert_array_equal(small.steps, plain.steps[edges[1:] - 1])
    for name in ("grad_norm", "dead"):
        full = plain[name]
        for b in range(buckets):
            rows = full[edges[b]:edges[b + 1]]
            np.testing.assert_allclose(small[name][b], np.median(rows, axis=0), rtol=0, atol=0)
            np.testing.assert_array_equal(small.spread.low[name][b], rows.min(axis=0))
            np.testing.assert_array_equal(small.spread.high[name][b], rows.max(axis=0))
    loss = plain.scalars["loss"]
    np.testing.assert_array_equal(small.scalars["loss"], [np.median(loss[edges[b]:edges[b + 1]]) for b in range(7)])
    # The same from the history itself, and from an in-memory save.
    _assert_same(h.overview(max_rows=50, buckets=buckets), small)
    plain.save(tmp_path / "npz")
    _assert_same(load_run(tmp_path / "npz", buckets=buckets), small)


def test_a_bucket_keeps_its_infinities_and_nonfinite_flags():
    h = GradientHistory(["a"])
    values = np.array([[1.0], [np.inf], [2.0], [3.0]])
    flags = np.array([[0.0], [1.0], [0.0], [0.0]])
    h.append(range(4), {"grad_norm": values, "nonfinite": flags})
    small = h.overview(max_rows=2, buckets=2)
    assert small["grad_norm"].ravel().tolist() == [np.inf, 2.5]
    assert small["nonfinite"].ravel().tolist() == [1.0, 0.0]


def test_load_overview_downsamples_only_a_long_run(tmp_path, monkeypatch):
    import gradscope.history as history_module

    h, plain = _streamed(tmp_path / "run", appends=6, per_append=10, chunk_rows=8)
    h.sync()
    _assert_same(load_overview(tmp_path / "run"), plain)
    monkeypatch.setattr(history_module, "OVERVIEW_ROWS", 50)
    monkeypatch.setattr(history_module, "OVERVIEW_BUCKETS", 6)
    assert len(load_overview(tmp_path / "run")) == 6


def test_a_damaged_or_missing_chunk_is_named(tmp_path):
    h, _ = _streamed(tmp_path / "run", appends=4, per_append=4, chunk_rows=4)
    chunks = chunk_files(tmp_path / "run")
    chunks[1].path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunFolderError, match=r"rows-000000000004-000000000008\.npz: not a readable numpy archive"):
        load_run(tmp_path / "run")
    chunks[1].path.unlink()
    with pytest.raises(RunFolderError, match="starts at row 8, but the chunks before end at row 4"):
        load_run(tmp_path / "run")


def test_a_chunk_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    store = ChunkStore(tmp_path, chunk_rows=2)
    store.write(0, {"steps": np.arange(2)})

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError):
        store.write(2, {"steps": np.arange(2, 4)})
    # No temporary file, no half chunk: the folder still loads what was written.
    assert [p.name for p in (tmp_path / CHUNKS_DIR).iterdir()] == ["rows-000000000000-000000000002.npz"]
    assert store.rows == 2
