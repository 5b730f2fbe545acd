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
