"""Run folders: claimed before training, written whole, the old run kept on failure, the umask followed."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import snapshot
from gradscope.history import GradientHistory, load_run
from gradscope.run_folder import (
    RunFolderError,
    SaveError,
    claim_run_folder,
    describe_os_error,
    release_run_folder,
    rescue_history,
    write_run_folder,
)


def old_run(folder: Path) -> Path:
    """A run folder as an earlier save left it, with a plot the new run will not write."""
    (folder / "plots").mkdir(parents=True)
    (folder / "run.json").write_text('{"layers": ["old"]}')
    (folder / "history.npz").write_bytes(b"old archive")
    (folder / "plots" / "activation_histograms.png").write_bytes(b"old png")
    return folder


def leftovers(parent: Path) -> list[str]:
    """Temporary or set-aside folders left beside the runs."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _history() -> GradientHistory:
    h = GradientHistory(["a", "b"])
    h.append([0, 1, 2], {"grad_norm": np.arange(6.0).reshape(3, 2)})
    return h


# -- claim_run_folder ---------------------------------------------------------

def test_a_default_name_that_is_taken_gets_a_numbered_suffix(tmp_path):
    default = tmp_path / "runs" / "tanh-random_uniform"
    first = claim_run_folder(None, default)
    assert first == default and first.is_dir() and list(first.iterdir()) == []  # made: the name is taken now
    old_run(first)
    assert claim_run_folder(None, default) == tmp_path / "runs" / "tanh-random_uniform-2"
    assert claim_run_folder(None, default) == tmp_path / "runs" / "tanh-random_uniform-3"
    (tmp_path / "runs" / "tanh-random_uniform-4").write_text("a file")  # any kind of entry takes the name
    assert claim_run_folder(None, default) == tmp_path / "runs" / "tanh-random_uniform-5"
    assert (first / "run.json").read_text() == '{"layers": ["old"]}'


def test_overwrite_without_out_reuses_the_default_name(tmp_path):
    default = old_run(tmp_path / "runs" / "tanh")
    assert claim_run_folder(None, default, overwrite=True) == default


@pytest.mark.parametrize("marker, kind", [("run.json", "run"), ("comparison.json", "comparison")])
def test_an_explicit_folder_holding_a_run_is_refused_without_overwrite(tmp_path, marker, kind):
    out = tmp_path / "mine"
    out.mkdir()
    (out / marker).write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderError) as info:
        claim_run_folder(out, tmp_path / "default")
    assert str(info.value) == (f"{out}: a {kind} is saved there; pass --overwrite to replace it, "
                               "or choose another --out")
    assert info.value.path == out and snapshot(tmp_path) == before  # nothing written, not even the default
    assert claim_run_folder(out, tmp_path / "default", overwrite=True) == out
    assert snapshot(tmp_path) == before  # the old run stays until the new one is written


def test_an_explicit_folder_holding_other_files_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("...")
    with pytest.raises(RunFolderError, match=r"thesis: the folder is not empty \(1 entries\) and holds no gradscope"):
        claim_run_folder(out, tmp_path / "default")
    assert claim_run_folder(out, tmp_path / "default", overwrite=True) == out
    assert (out / "chapter1.tex").read_text() == "..."


def test_an_explicit_empty_or_missing_folder_is_claimed(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_run_folder(empty, tmp_path / "default") == empty
    deep = tmp_path / "a" / "b" / "run"
    assert claim_run_folder(deep, tmp_path / "default") == deep and deep.is_dir()
    assert not (tmp_path / "default").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_explicit_file_is_refused(tmp_path, overwrite):
    out = tmp_path / "results.csv"
    out.write_text("1,2,3")
    with pytest.raises(RunFolderError) as info:
        claim_run_folder(out, tmp_path / "default", overwrite=overwrite)
    assert str(info.value) == f"{out}: a file, not a folder; --out names the folder a run is saved in"
    assert out.read_text() == "1,2,3"


@pytest.mark.parametrize("below", ["child", "child/run"])
def test_a_path_below_a_file_is_refused(tmp_path, below):
    # A real OS error (ENOTDIR or EEXIST) that stops root as well.
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / below
    with pytest.raises(RunFolderError) as info:
        claim_run_folder(out, tmp_path / "default")
    assert str(info.value) == f"{out}: cannot create its folder: {tmp_path / 'file'} is a file"
    assert "\n" not in str(info.value)


def test_a_read_only_parent_is_refused(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes")
        with pytest.raises(RunFolderError) as info:
            claim_run_folder(parent / "run", tmp_path / "default")
        assert str(info.value) == f"{parent / 'run'}: cannot create the folder (permission denied)"
        (tmp_path / "open").mkdir()
        old_run(tmp_path / "open" / "run")
        (tmp_path / "open").chmod(0o500)  # the run is there, but nothing can be built beside it
        with pytest.raises(RunFolderError, match=r"cannot write in .*open \(permission denied\)"):
            claim_run_folder(tmp_path / "open" / "run", tmp_path / "default", overwrite=True)
    finally:
        parent.chmod(0o700)
        if (tmp_path / "open").exists():
            (tmp_path / "open").chmod(0o700)


def test_the_current_folder_and_those_above_it_are_never_claimed(tmp_path, monkeypatch):
    here = old_run(tmp_path / "work" / "here")
    monkeypatch.chdir(here)
    for out in (Path("."), here, tmp_path / "work", Path("..")):
        with pytest.raises(RunFolderError, match="holds the current folder"):
            claim_run_folder(out, tmp_path / "default", overwrite=True)
    with pytest.raises(RunFolderError, match="the root folder cannot hold a run"):
        claim_run_folder(Path("/"), tmp_path / "default", overwrite=True)
    assert (here / "run.json").exists()


def test_a_link_is_followed_to_the_folder_it_points_at(tmp_path):
    target = tmp_path / "big-disk" / "run"
    target.mkdir(parents=True)
    (tmp_path / "link").symlink_to(target)
    assert claim_run_folder(tmp_path / "link", tmp_path / "default") == target


def test_claiming_leaves_no_probe_file(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    claim_run_folder(out, tmp_path / "default")
    claim_run_folder(None, tmp_path / "default")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "empty"]


def test_release_removes_only_an_empty_claimed_folder(tmp_path):
    empty = claim_run_folder(None, tmp_path / "run")
    release_run_folder(empty)
    assert not empty.exists()
    full = old_run(claim_run_folder(None, tmp_path / "run"))
    release_run_folder(full)
    release_run_folder(tmp_path / "never-made")
    assert (full / "run.json").exists()


# -- write_run_folder ---------------------------------------------------------

def _fill(names: dict[str, bytes]):
    def write(folder: Path) -> None:
        for name, content in names.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
    return write


def test_a_folder_is_written_whole_and_no_temporary_stays(tmp_path):
    seen = []

    def write(folder: Path) -> None:
        seen.append(folder)
        assert folder.parent == tmp_path and folder.name.startswith(".run.tmp-") and not (tmp_path / "run").exists()
        _fill({"run.json": b"{}", "plots/a.png": b"png"})(folder)

    assert write_run_folder(tmp_path / "run", write) == tmp_path / "run"
    assert snapshot(tmp_path / "run") == {"plots": None, "plots/a.png": b"png", "run.json": b"{}"}
    assert leftovers(tmp_path) == [] and not seen[0].exists()


def test_an_overwrite_leaves_exactly_the_new_files(tmp_path):
    run = old_run(tmp_path / "run")
    new = {"run.json": b'{"layers": ["new"]}', "history.npz": b"new archive", "plots/grad_norms.png": b"new png"}
    write_run_folder(run, _fill(new), overwrite=True)
    # No stale activation_histograms.png from the old run.
    assert snapshot(run) == {"history.npz": b"new archive", "plots": None, "plots/grad_norms.png": b"new png",
                             "run.json": b'{"layers": ["new"]}'}
    assert leftovers(tmp_path) == []


def test_an_empty_folder_is_replaced_without_overwrite(tmp_path):
    claimed = claim_run_folder(None, tmp_path / "run")
    write_run_folder(claimed, _fill({"run.json": b"{}"}))
    assert snapshot(claimed) == {"run.json": b"{}"}


def test_without_overwrite_an_existing_run_is_kept(tmp_path):
    run = old_run(tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(SaveError) as info:
        write_run_folder(run, _fill({"run.json": b"{}"}))
    assert str(info.value) == f"saving to {run} failed: the folder is not empty (pass overwrite=True to replace it)"
    assert snapshot(run) == before and leftovers(tmp_path) == []


def test_a_run_saved_there_meanwhile_is_never_replaced_without_overwrite(tmp_path):
    # Another process saves to the same folder while this one is writing:
    # the final rename fails instead of replacing its run.
    run = tmp_path / "run"

    def write(folder: Path) -> None:
        old_run(run)
        (folder / "run.json").write_bytes(b"{}")

    with pytest.raises(SaveError, match="the folder is not empty") as info:
        write_run_folder(run, write)
    assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    assert (run / "run.json").read_text() == '{"layers": ["old"]}' and leftovers(tmp_path) == []


@pytest.mark.parametrize("how", ["real /dev/full", "error naming a file"])
def test_a_full_disk_midway_keeps_the_old_run_byte_identical(tmp_path, how):
    run = old_run(tmp_path / "run")
    before = snapshot(run)

    def write(folder: Path) -> None:
        (folder / "run.json").write_bytes(b"{}")
        (folder / "plots").mkdir()
        (folder / "plots" / "grad_norms.png").write_bytes(b"\x89PNG half")
        if how == "real /dev/full":
            if not os.path.exists("/dev/full"):
                pytest.skip("no /dev/full here")
            with open("/dev/full", "wb") as full:  # the kernel answers ENOSPC
                full.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "plots" / "depth_profile.png"))

    with pytest.raises(SaveError) as info:
        write_run_folder(run, write, overwrite=True)
    text = str(info.value)
    assert text.startswith(f"saving to {run} failed: the disk is full") and "\n" not in text
    if how == "error naming a file":  # the temporary name is never shown
        assert text.endswith(f"(at {run / 'plots' / 'depth_profile.png'})")
    assert info.value.errno == errno.ENOSPC and info.value.folder == run
    assert snapshot(run) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("code, reason", [
    (errno.EACCES, "permission denied"),
    (errno.EPERM, "permission denied"),
    (errno.EROFS, "read-only file system"),
    (errno.EIO, "input/output error"),
])
def test_os_errors_are_named_in_plain_words(tmp_path, code, reason):
    run = old_run(tmp_path / "run")
    before = snapshot(run)

    def write(folder: Path) -> None:
        raise OSError(code, os.strerror(code))

    with pytest.raises(SaveError) as info:
        write_run_folder(run, write, overwrite=True)
    assert str(info.value) == f"saving to {run} failed: {reason}" and info.value.errno == code
    assert snapshot(run) == before and leftovers(tmp_path) == []
    assert describe_os_error(OSError(code, os.strerror(code))) == reason


def test_a_real_os_error_while_writing_is_a_save_error(tmp_path):
    def write(folder: Path) -> None:
        (folder / "plots").write_text("a file where the plot folder goes")
        (folder / "plots" / "grad_norms.png").write_bytes(b"png")  # ENOTDIR from the kernel

    with pytest.raises(SaveError) as info:
        write_run_folder(tmp_path / "run", write)
    assert str(info.value) == (f"saving to {tmp_path / 'run'} failed: not a directory "
                               f"(at {tmp_path / 'run' / 'plots' / 'grad_norms.png'})")
    assert not (tmp_path / "run").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyboardInterrupt()])
def test_other_exceptions_pass_through_after_the_clean_up(tmp_path, error):
    run = old_run(tmp_path / "run")
    before = snapshot(run)

    def write(folder: Path) -> None:
        (folder / "run.json").write_bytes(b"{}")
        raise error

    with pytest.raises(type(error)):
        write_run_folder(run, write, overwrite=True)
    assert snapshot(run) == before and leftovers(tmp_path) == []


def test_a_file_in_the_way_is_refused_before_writing(tmp_path):
    (tmp_path / "run").write_text("notes")
    called = []
    with pytest.raises(SaveError, match="failed: it is a file, not a folder") as info:
        write_run_folder(tmp_path / "run", called.append, overwrite=True)
    assert called == [] and info.value.errno == errno.ENOTDIR and (tmp_path / "run").read_text() == "notes"


def test_a_parent_below_a_file_is_a_save_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SaveError, match=r"failed: (file exists|not a directory)"):
        write_run_folder(tmp_path / "file" / "run", _fill({"run.json": b"{}"}))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    from gradscope.history import atomic_write

    umask(mask)

    def write(folder: Path) -> None:
        (folder / "plots").mkdir()
        (folder / "plots" / "a.png").write_bytes(b"png")
        atomic_write(folder / "run.json", lambda f: f.write("{}"))

    claimed = claim_run_folder(None, tmp_path / "runs" / "run")
    run = write_run_folder(claimed, write)
    paths = [tmp_path / "runs", run, *run.rglob("*")]
    assert len(paths) == 5
    for path in paths:
        want = 0o777 & ~mask if path.is_dir() else 0o666 & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, (path, oct(path.stat().st_mode))


# -- rescue_history -----------------------------------------------------------

def test_the_rescued_record_loads_and_follows_the_umask(system_tmp, umask):
    umask(0o027)
    folder = rescue_history(_history())
    assert folder.parent == system_tmp and folder.name.startswith("gradscope-rescued-")
    assert load_run(folder)["grad_norm"].tolist() == _history()["grad_norm"].tolist()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o640}


def test_a_rescue_that_fails_leaves_nothing(system_tmp, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match="No space left"):
        rescue_history(_history())
    assert list(system_tmp.iterdir()) == []


def test_a_save_error_reads_as_one_line():
    error = SaveError("runs/tanh", "the disk is full", errno.ENOSPC, "runs/tanh/history.npz")
    assert str(error) == "saving to runs/tanh failed: the disk is full (at runs/tanh/history.npz)"
    error.rescued = Path("/tmp/gradscope-rescued-ab12")
    assert str(error).endswith("; the record was kept in /tmp/gradscope-rescued-ab12: "
                               "gradscope report /tmp/gradscope-rescued-ab12")
    error.rescued, error.rescue_failure = None, "the disk is full"
    assert str(error).endswith(f"; keeping the record in {tempfile.gettempdir()} failed too: the disk is full")
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC


def test_both_errors_survive_pickling():
    # Errors cross process boundaries (multiprocessing, pytest-xdist) by pickle.
    import pickle

    error = SaveError("runs/tanh", "the disk is full", errno.ENOSPC, "runs/tanh/history.npz")
    error.rescued = Path("/tmp/gradscope-rescued-ab12")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.errno == errno.ENOSPC and again.rescued == error.rescued
    refused = pickle.loads(pickle.dumps(RunFolderError(Path("runs/x"), "a file, not a folder")))
    assert str(refused) == "runs/x: a file, not a folder" and refused.path == Path("runs/x")


def test_a_link_in_the_place_of_the_run_is_not_replaced(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "target")
    with pytest.raises(SaveError, match="it is a symbolic link; save to the folder it points to"):
        write_run_folder(tmp_path / "run", _fill({"run.json": b"{}"}), overwrite=True)
    assert (tmp_path / "run").is_symlink() and list((tmp_path / "target").iterdir()) == []
