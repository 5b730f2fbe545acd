"""Bad inputs at the command line: one line naming the input, exit code 2, never a traceback.

The command runs in this process (``main``), so the table stays quick;
the subprocess tests in test_cli.py check the installed command as a whole.
"""

from __future__ import annotations

import pytest

from gradscope.cli import main

SMALL = ["--dataset", "digits", "--layers", "8", "--steps", "3", "--quiet"]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exit
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, words", [
    (["run", "--seed", "-1"], "argument --seed: expected a seed from 0 to 4,294,967,295, got -1"),
    (["run", "--seed", str(2**40)], "argument --seed: expected a seed from 0 to 4,294,967,295"),
    (["run", "--every", str(10**20)], "argument --every: expected a whole number from 1 to 2,147,483,647"),
    (["run", "--layers", "8,99999999999"], "argument --layers: expected positive layer widths"),
    (["run", "--lr", "inf"], "argument --lr: expected a finite number, got inf"),
    (["run", "--lr", "nan"], "argument --lr: expected a finite number, got nan"),
    (["derivatives", "--at", "nan"], "argument --at: expected a finite number, got nan"),
    (["derivatives", "--at", "1", "x"], "argument --at: expected a number, got 'x'"),
    (["run", *SMALL, "--init", "Initializer"], "the Keras initializer 'Initializer' cannot draw a kernel"),
    (["run", *SMALL, "--init", "Constant"], "the Keras initializer 'Constant' cannot draw a kernel"),
    (["run", *SMALL, "--optimizer", "Optimizer"], "the Keras optimizer 'Optimizer' cannot update a weight"),
    (["run", *SMALL, "--optimizer", "LossScaleOptimizer"], "the Keras optimizer 'LossScaleOptimizer' cannot update"),
    (["run", *SMALL, "--optimizer", "adamm"], "unknown Keras optimizer 'adamm'"),
    (["run", *SMALL, "--activation", "Layer"], "unknown Keras activation 'Layer'"),
    (["run", "--dataset", "digits", "--layers", "2000000000,2000000000", "--quiet"],
     "--layers 2000000000,2000000000: 4.0e+18 parameters need about"),
    (["reproduce", "glorot2011"], "unknown reproduction 'glorot2011': choose one of glorot2010, he2015, lecture"),
])
def test_a_bad_flag_is_one_line_naming_it(capsys, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)  # nothing may be written where the tests run
    code, out, err = run_main(capsys, *args)
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and words in errors[0], err
    assert "Traceback" not in err + out
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    import gradscope.cli as cli

    def broken(args, stop):
        raise RuntimeError("something\nbroke")

    monkeypatch.setitem(cli.COMMANDS, "derivatives", broken)
    code, out, err = run_main(capsys, "derivatives", "--no-float32")
    assert code == 1
    assert err == ("gradscope derivatives: internal error: RuntimeError: something broke "
                   "(run again with --debug for the full traceback)\n")
    with pytest.raises(RuntimeError, match="something"):
        main(["derivatives", "--no-float32", "--debug"])


def _bad_npz(path, **changes):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((40, 8, 8)).astype("float32"), "y_train": np.arange(40) % 10,
              "x_test": rng.random((10, 8, 8)).astype("float32"), "y_test": np.arange(10) % 10}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, words", [
    ("npz_strings", "x_train has dtype <U1: images must be uint8"),
    ("npz_label_12", "y_test holds label 12, but the training labels go up to 9"),
    ("npz_nan_pixels", "holds 1 NaN and 0 infinite pixels"),
    ("out_is_a_file", "out: "),
    ("out_holds_a_run", "a run is saved there; pass --overwrite to replace it"),
    ("report_wrong_types", "'layers' must be a list of strings"),
    ("comparison_outside", "names the folder '../elsewhere', which is not inside"),
])
def test_a_bad_file_or_folder_is_one_line_naming_it(capsys, tmp_path, monkeypatch, case, words):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    small = ["run", "--layers", "8", "--steps", "3", "--quiet"]
    if case == "npz_strings":
        args = [*small, "--data", str(_bad_npz(tmp_path / "d.npz", x_train=np.full((40, 8, 8), "a")))]
    elif case == "npz_label_12":
        args = [*small, "--data", str(_bad_npz(tmp_path / "d.npz", y_test=np.full(10, 12)))]
    elif case == "npz_nan_pixels":
        x = np.random.default_rng(0).random((40, 8, 8)).astype("float32")
        x[3, 2, 1] = np.nan
        args = [*small, "--data", str(_bad_npz(tmp_path / "d.npz", x_train=x))]
    elif case == "out_is_a_file":
        args = [*small, "--dataset", "digits", "--out", str(_write(tmp_path / "out", "not a folder"))]
    elif case == "out_holds_a_run":
        args = [*small, "--dataset", "digits", "--out", str(_write(tmp_path / "old" / "run.json", "{}").parent)]
    elif case == "report_wrong_types":
        folder = tmp_path / "run"
        _write(folder / "run.json", '{"format": "gradscope-run", "version": 2, "layers": 3}')
        np.savez(folder / "history.npz", steps=np.arange(2))
        args = ["report", str(folder)]
    else:
        folder = tmp_path / "cmp"
        _write(folder / "comparison.json",
               '{"format": "gradscope-comparison", "runs": [{"label": "x", "folder": "../elsewhere"}]}')
        args = ["report", str(folder)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_main(capsys, *args)
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and words in errors[0], err
    assert "Traceback" not in err + out and "training " not in out  # refused before any step
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # and nothing written


@pytest.mark.slow
def test_runs_are_never_replaced_silently_and_overwrite_leaves_nothing_stale(capsys, tmp_path, monkeypatch):
    from gradscope.history import load_run

    monkeypatch.chdir(tmp_path)
    small = ["run", "--dataset", "digits", "--layers", "8", "--quiet"]
    assert run_main(capsys, *small, "--steps", "3")[0] == 0
    assert run_main(capsys, *small, "--steps", "4")[0] == 0
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["tanh-random_uniform", "tanh-random_uniform-2"]
    assert len(load_run(runs / "tanh-random_uniform")) == 3 and len(load_run(runs / "tanh-random_uniform-2")) == 4
    # An explicit --out holding a run is replaced only when asked, and whole.
    first = runs / "tanh-random_uniform"
    (first / "plots" / "stale.png").write_bytes(b"old")
    code, out, err = run_main(capsys, *small, "--steps", "5", "--out", str(first), "--overwrite")
    assert code == 0, err
    assert len(load_run(first)) == 5 and not (first / "plots" / "stale.png").exists()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.slow
def test_a_path_with_brackets_is_printed_as_it_is_and_quoted_in_hints(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "runs [/] [bold]x[/bold]"
    code, out, err = run_main(capsys, "run", "--dataset", "digits", "--layers", "8", "--steps", "3", "--quiet",
                              "--out", str(out_dir))
    assert code == 0, err
    assert f"saved run to {out_dir}" in out
    assert f"gradscope report '{out_dir}'" in out  # a hint that pastes into a shell
    code, out, err = run_main(capsys, "report", str(out_dir), "--no-plots")
    assert code == 0, err and f"run {out_dir}:" in out


def test_reproduce_help_teaches_each_name_and_where_the_docs_are(capsys):
    code, out, _ = run_main(capsys, "reproduce", "--help")
    assert code == 0
    for words in ("glorot2010  Glorot & Bengio (2010)", "he2015      He et al. (2015)", "lecture     the lecture",
                  "docs/papers.md", "--full", "gradscope report runs/reproduce-lecture"):
        assert words in out, words
