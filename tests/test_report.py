"""save_run and show_run: a run saved whole or kept elsewhere, never lost; a damaged run refused in one line."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import snapshot
from gradscope.history import GradientHistory, RunFolderError, load_run
from gradscope.report import redraw_plots, save_run, show_run, write_run
from gradscope.run_folder import SaveError


def make_history(histograms: bool = True, scale: float = 1.0) -> GradientHistory:
    h = GradientHistory(["dense", "dense_1"], layer_info=[{"activation": "tanh", "params": 12}, {"params": 3}])
    rows = np.array([[0.01, 1.0], [0.02, 0.9], [0.01, 1.1]]) * scale
    h.append([0, 1, 2], {"grad_norm": rows, "backprop": rows / 10}, {"loss": np.array([2.0, 1.5, 1.2])})
    if histograms:
        h.histograms["start"] = {"step": 0, "ranges": np.array([[-1.0, 1.0], [-2.0, 2.0]]), "counts": np.ones((2, 4))}
        h.histograms["end"] = {"step": 2, "ranges": np.array([[-1.0, 1.0], [-2.0, 2.0]]), "counts": np.ones((2, 4))}
    return h


@pytest.fixture
def quick_plots(monkeypatch):
    """save_run_plots replaced by a writer of tiny files with the real names (drawing takes a second a run)."""
    import gradscope.render.plots

    def draw(history, folder):
        plots = Path(folder) / "plots"
        plots.mkdir(exist_ok=True)
        names = ["grad_norms.png", "depth_profile.png"] + (["activation_histograms.png"] if history.histograms else [])
        for name in names:
            (plots / name).write_bytes(b"\x89PNG " + repr(history["grad_norm"][-1].tolist()).encode())
        return [plots / name for name in names]

    monkeypatch.setattr(gradscope.render.plots, "save_run_plots", draw)
    return draw


def _beside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_save_run_writes_the_record_the_summary_and_the_plots(tmp_path):
    folder = save_run(make_history(), tmp_path / "run")
    assert sorted(snapshot(folder)) == ["history.npz", "plots", "plots/activation_histograms.png",
                                        "plots/backprop_norms.png", "plots/depth_profile.png",
                                        "plots/grad_norms.png", "run.json", "summary.json"]
    assert load_run(folder)["grad_norm"].tolist() == make_history()["grad_norm"].tolist()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["measure"] == "backprop" and [v["name"] for v in summary["layers"]] == ["dense", "dense_1"]
    assert _beside(folder) == []


@pytest.mark.parametrize("mask, plots", [(0o022, False), (0o077, False),
                                         pytest.param(0o022, True, marks=pytest.mark.slow),
                                         pytest.param(0o077, True, marks=pytest.mark.slow)])
def test_every_saved_file_and_folder_follows_the_umask(tmp_path, umask, mask, plots):
    umask(mask)
    folder = save_run(make_history(), tmp_path / "runs" / "run", plots=plots)
    paths = [tmp_path / "runs", folder, *folder.rglob("*")]
    assert len(paths) == (10 if plots else 5)
    for path in paths:
        want = 0o777 & ~mask if path.is_dir() else 0o666 & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, (path, oct(path.stat().st_mode))


def _full_disk_after_half_a_plot(history, folder):
    """Stands in for save_run_plots: half a PNG is written, then the disk is full (for real: /dev/full)."""
    plots = Path(folder) / "plots"
    plots.mkdir()
    (plots / "grad_norms.png").write_bytes(b"\x89PNG\r\n half")
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            full.write(b"\x89PNG" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device", str(plots / "depth_profile.png"))


def test_a_full_disk_keeps_the_earlier_run_byte_identical_and_the_new_record_elsewhere(tmp_path, system_tmp,
                                                                                        monkeypatch, quick_plots):
    import gradscope.render.plots

    folder = save_run(make_history(), tmp_path / "run")
    assert (folder / "plots" / "activation_histograms.png").exists()
    before = snapshot(folder)
    monkeypatch.setattr(gradscope.render.plots, "save_run_plots", _full_disk_after_half_a_plot)
    newer = make_history(histograms=False, scale=2.0)
    with pytest.raises(SaveError) as info:
        save_run(newer, folder, overwrite=True)
    error = info.value
    text = str(error)
    assert "\n" not in text and text.startswith(f"saving to {folder} failed: the disk is full")
    assert error.rescued is not None and error.rescued.parent == system_tmp
    assert text.endswith(f"; the record was kept in {error.rescued}: gradscope report {error.rescued}")
    # The earlier run: every byte as it was, still loadable; nothing left beside it.
    assert snapshot(folder) == before and _beside(folder) == []
    assert load_run(folder)["grad_norm"].tolist() == make_history()["grad_norm"].tolist()
    # The new run: its record, whole, where the message says.
    assert load_run(error.rescued)["grad_norm"].tolist() == newer["grad_norm"].tolist()


def test_when_the_rescue_fails_too_the_message_says_so(tmp_path, system_tmp, monkeypatch, quick_plots):
    folder = save_run(make_history(), tmp_path / "run")
    before = snapshot(folder)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)  # history.npz fails in the run folder and in the rescue
    with pytest.raises(SaveError) as info:
        save_run(make_history(scale=3.0), folder, overwrite=True)
    assert str(info.value) == (f"saving to {folder} failed: the disk is full (at {folder / 'history.npz'}); "
                               f"keeping the record in {system_tmp} failed too: the disk is full")
    assert info.value.rescued is None and list(system_tmp.iterdir()) == []
    assert snapshot(folder) == before and _beside(folder) == []


def test_an_overwrite_leaves_no_stale_plot_of_the_old_run(tmp_path, quick_plots):
    folder = save_run(make_history(histograms=True), tmp_path / "run")
    assert (folder / "plots" / "activation_histograms.png").exists()
    save_run(make_history(histograms=False, scale=2.0), folder, overwrite=True)
    fresh = save_run(make_history(histograms=False, scale=2.0), tmp_path / "fresh")
    assert sorted(snapshot(folder)) == sorted(snapshot(fresh))
    assert not (folder / "plots" / "activation_histograms.png").exists()
    assert load_run(folder)["grad_norm"].tolist() == make_history(scale=2.0)["grad_norm"].tolist()
    assert _beside(folder) == []


def test_an_earlier_run_is_not_replaced_without_overwrite(tmp_path, system_tmp, quick_plots):
    folder = save_run(make_history(), tmp_path / "run")
    before = snapshot(folder)
    with pytest.raises(SaveError, match="the folder is not empty") as info:
        save_run(make_history(scale=2.0), folder)
    assert snapshot(folder) == before
    assert load_run(info.value.rescued)["grad_norm"].tolist() == make_history(scale=2.0)["grad_norm"].tolist()


def test_a_file_named_plots_does_not_stop_an_overwrite(tmp_path, quick_plots):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    (folder / "plots").write_text("not a folder")
    save_run(make_history(), folder, overwrite=True)
    assert (folder / "plots").is_dir() and (folder / "plots" / "grad_norms.png").is_file()


def test_an_existing_empty_folder_is_saved_into(tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        assert sorted(p.name for p in save_run(make_history(), folder, plots=False).iterdir()) == [
            "history.npz", "run.json", "summary.json"]


def test_a_bug_while_drawing_still_keeps_the_record(tmp_path, system_tmp, monkeypatch):
    import gradscope.render.plots

    def broken(history, folder):
        raise ValueError("bad axis limits")

    monkeypatch.setattr(gradscope.render.plots, "save_run_plots", broken)
    with pytest.raises(SaveError) as info:
        save_run(make_history(), tmp_path / "run")
    assert str(info.value).startswith(f"saving to {tmp_path / 'run'} failed: ValueError: bad axis limits; "
                                      "the record was kept in ")
    assert isinstance(info.value.__cause__, ValueError) and len(load_run(info.value.rescued)) == 3
    assert not (tmp_path / "run").exists() and _beside(tmp_path / "run") == []


def test_an_empty_history_is_refused_as_before_and_nothing_is_kept(tmp_path, system_tmp):
    with pytest.raises(ValueError, match="the history is empty"):
        save_run(GradientHistory(["dense"]), tmp_path / "run")
    assert list(system_tmp.iterdir()) == [] and not (tmp_path / "run").exists()


def test_write_run_fills_a_folder_in_place(tmp_path):
    write_run(make_history(histograms=False), tmp_path, plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.npz", "run.json", "summary.json"]


# -- show_run -------------------------------------------------------------------

def _console() -> Console:
    return Console(file=io.StringIO(), width=160, color_system=None)


def test_show_run_refuses_a_damaged_run_in_one_line(tmp_path):
    folder = save_run(make_history(), tmp_path / "run", plots=False)
    meta = json.loads((folder / "run.json").read_text())
    meta["layers"] = {"dense": 1}
    (folder / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunFolderError) as info:
        show_run(folder, console=_console(), plots=False)
    assert str(info.value) == f"{folder / 'run.json'}: 'layers' must be a list of strings, not dict"


@pytest.mark.slow
def test_show_run_when_the_plots_cannot_be_redrawn(tmp_path):
    folder = save_run(make_history(), tmp_path / "run", plots=False)
    (folder / "plots").write_text("a file in the way")  # a real OS error when the plots are moved in
    console = _console()
    diagnosis = show_run(folder, console=console)
    out = console.file.getvalue()
    assert "gradscope summary" in out and diagnosis.measure == "backprop"
    assert f"plots not redrawn: file exists ({folder / 'plots'})" in out
    assert (folder / "plots").read_text() == "a file in the way"
    assert sorted(p.name for p in folder.iterdir()) == ["history.npz", "plots", "run.json", "summary.json"]


@pytest.mark.slow
def test_redraw_plots_replaces_each_plot_whole(tmp_path):
    folder = save_run(make_history(), tmp_path / "run")
    (folder / "plots" / "grad_norms.png").write_bytes(b"truncated")
    (folder / "plots" / "notes.txt").write_text("mine")
    paths = redraw_plots(load_run(folder), folder)
    assert [p.name for p in paths] == ["grad_norms.png", "backprop_norms.png", "depth_profile.png",
                                       "activation_histograms.png"]
    assert (folder / "plots" / "grad_norms.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "plots" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["history.npz", "plots", "run.json", "summary.json"]
